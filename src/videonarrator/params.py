"""``params.yaml``: loading and validation.

Every key a stage reads is declared here once, with its type and allowed
range, so that a wrong value fails before any long work starts, with a
message that names the key (``prepare.n_videos``) and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import yaml


class ParamsError(ValueError):
    """params.yaml holds a missing, unknown or invalid value; the message names the key."""


@dataclass(frozen=True)
class Spec:
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    allowed: str = ""                      # words for the error message
    optional: bool = False                 # None allowed


def positive_int() -> Spec:
    return Spec(int, lambda v: v >= 1, "an integer >= 1")


def choice(*options: str) -> Spec:
    return Spec(str, lambda v: v in options, "one of " + ", ".join(repr(o) for o in options))


def fraction() -> Spec:
    return Spec((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)")


def positive_number() -> Spec:
    return Spec((int, float), lambda v: v > 0, "a number > 0")


def boolean() -> Spec:
    return Spec(bool, allowed="true or false")


def str_list(*options: str) -> Spec:
    def ok(v):
        return isinstance(v, list) and all(isinstance(x, str) and (not options or x in options) for x in v)
    words = f"a list of {', '.join(repr(o) for o in options)}" if options else "a list of strings"
    return Spec(list, ok, words)


def optional_str() -> Spec:
    return Spec(str, lambda v: bool(v), "a non-empty string or null", optional=True)


# section -> key -> spec.  Sections are the DVC stages plus shared ones.
SCHEMA: dict[str, dict[str, Spec]] = {
    "common": {
        "data_seed": Spec(int, lambda v: v >= 0, "an integer >= 0 (the dataset; train.seed is the training's)"),
        "dataset": choice("synthetic", "esyncvidstory"),
    },
    "prepare": {
        "n_videos": Spec(int, lambda v: v >= 3, "an integer >= 3 (one video each for train, val, test)"),
        "min_clips": Spec(int, lambda v: v >= 2, "an integer >= 2"),
        "max_clips": Spec(int, lambda v: v >= 2, "an integer >= 2"),
        "min_clip_s": Spec(int, lambda v: v >= 1, "an integer >= 1 (seconds)"),
        "max_clip_s": Spec(int, lambda v: v >= 1, "an integer >= 1 (seconds)"),
        "fps": Spec(int, lambda v: 5 <= v <= 60, "an integer in [5, 60]"),
        "frame_size": Spec(int, lambda v: 32 <= v <= 1024, "an integer in [32, 1024] (pixels)"),
        "val_fraction": fraction(),
        "test_fraction": fraction(),
        "shot_threshold": positive_number(),
        "min_shot_s": positive_number(),
        "boundary_tolerance_s": positive_number(),
        "skip_bad": boolean(),
    },
    "features": {
        "tower": Spec(str, bool, "an open_clip model name or local-dir:/path"),
        "pretrained": optional_str(),
        "image_size": Spec(int, lambda v: v >= 16, "an integer >= 16 or null", optional=True),
        "batch_size": positive_int(),
    },
    "llm": {
        "path": Spec(str, bool, "a local model folder"),
        "trust_remote_code": boolean(),
        "attn_implementation": Spec(str, lambda v: v in ("eager", "sdpa", "flash_attention_2"),
                                    "'eager', 'sdpa', 'flash_attention_2' or null", optional=True),
    },
    "model": {
        "num_query_tokens": positive_int(),
        "qformer_hidden": positive_int(),
        "qformer_layers": positive_int(),
        "qformer_heads": positive_int(),
        "patch_pos_embed": boolean(),
        "memory_frames": positive_int(),
        "story_clips": Spec(int, lambda v: v >= 1, "an integer >= 1 or null (all earlier narrations)", optional=True),
        "qformer_weights": optional_str(),
        "tau": positive_number(),
        "lora_r": positive_int(),
        "lora_alpha": positive_number(),
        "lora_dropout": fraction(),
        "lora_targets": Spec((list, str), lambda v: v == "all-linear" or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)),
                             "a list of module names or 'all-linear'"),
        "label_head": boolean(),
    },
    "train": {
        "seed": Spec(int, lambda v: v >= 0, "an integer >= 0 (the training; common.data_seed is the dataset's)"),
        "steps": positive_int(),
        "batch_size": positive_int(),
        "grad_accum": positive_int(),
        "lr_lora": positive_number(),
        "lr_visual": positive_number(),
        "warmup_steps": Spec(int, lambda v: v >= 0, "an integer >= 0"),
        "weight_decay": Spec((int, float), lambda v: v >= 0, "a number >= 0"),
        "max_grad_norm": positive_number(),
        "checkpoint_every": Spec(int, lambda v: v >= 0, "an integer >= 0 (0: no checkpoints)"),
        "eval_every": positive_int(),
        "eval_clips": positive_int(),
        "length_grouping": boolean(),
        "precision": choice("auto", "fp32", "bf16", "fp16"),
        "modes": str_list("given", "generated"),
        "label_weight": positive_number(),
        "fact_weight": positive_number(),
        "stop_weight": positive_number(),
        "caption_steps": Spec(int, lambda v: v >= 0, "an integer >= 0 (0: no caption warm-up)"),
        "qformer_steps": Spec(int, lambda v: v >= 0, "an integer >= 0 (0: no stage-1 Q-Former training)"),
        "qformer_lr": positive_number(),
        "qformer_batch_size": positive_int(),
    },
    "evaluate": {
        "temperature": Spec((int, float), lambda v: v >= 0, "a number >= 0 (0: greedy)"),
        "repetition_penalty": positive_number(),
        "max_new_tokens": positive_int(),
        "num_candidates": positive_int(),
        "batch_size": positive_int(),
        "precision": choice("auto", "fp32", "bf16", "fp16"),
        "meteor": boolean(),
    },
    "visualize": {
        "videos": positive_int(),
        "queries": positive_int(),
    },
    "systems": {
        "trained": str_list("videonarrator", "text_only", "no_position", "no_memory", "no_compression"),
    },
    "esyncvidstory": {   # the real-data text-side experiment (esyncvidstory/dvc.yaml)
        "annotations": Spec(str, bool, "the path of an E-SyncVidStory annotation JSON file"),
        "frames_root": optional_str(),
        "val_fraction": fraction(),
        "test_fraction": fraction(),
        "max_knowledge_chars": Spec(int, lambda v: v >= 1, "an integer >= 1 or null (no limit)", optional=True),
        "attn_implementation": Spec(str, lambda v: v in ("eager", "sdpa", "flash_attention_2"),
                                    "'eager', 'sdpa', 'flash_attention_2' or null", optional=True),
        "steps": positive_int(),
        "batch_size": positive_int(),
        "checkpoint_every": Spec(int, lambda v: v >= 0, "an integer >= 0 (0: no checkpoints)"),
        "eval_every": positive_int(),
        "label_weight": positive_number(),
        "n_boot": positive_int(),
    },
}

# Cross-key rules: (keys involved, check on the section, message).
RULES: list[tuple[str, Callable[[dict], bool], str]] = [
    ("prepare", lambda p: p["min_clips"] <= p["max_clips"], "prepare.min_clips must be <= prepare.max_clips"),
    ("prepare", lambda p: p["min_clip_s"] <= p["max_clip_s"], "prepare.min_clip_s must be <= prepare.max_clip_s"),
    ("prepare", lambda p: p["val_fraction"] + p["test_fraction"] < 1,
     "prepare.val_fraction + prepare.test_fraction must be < 1 (something must be left to train on)"),
    ("prepare", lambda p: p["min_shot_s"] <= p["min_clip_s"],
     "prepare.min_shot_s must be <= prepare.min_clip_s, or real cuts between short clips are missed"),
    ("model", lambda p: p["qformer_hidden"] % p["qformer_heads"] == 0,
     "model.qformer_hidden must be divisible by model.qformer_heads"),
    ("evaluate", lambda p: p["num_candidates"] == 1 or p["temperature"] > 0,
     "evaluate.num_candidates > 1 needs evaluate.temperature > 0 (greedy candidates are all the same)"),
    ("esyncvidstory", lambda p: p["val_fraction"] + p["test_fraction"] < 1,
     "esyncvidstory.val_fraction + esyncvidstory.test_fraction must be < 1 (something must be left to train on)"),
    ("systems", lambda p: "videonarrator" in p["trained"] and len(set(p["trained"])) == len(p["trained"]),
     "systems.trained must list 'videonarrator' (the full model the evaluation and the figures read), each once"),
    ("train", lambda p: len(p["modes"]) > 0, "train.modes must list at least one of 'given', 'generated'"),
    ("train", lambda p: p["batch_size"] % p["grad_accum"] == 0,
     "train.batch_size must be divisible by train.grad_accum"),
]


def _type_name(v: Any) -> str:
    return type(v).__name__


def validate_section(section: str, values: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Check one section against :data:`SCHEMA`; return it unchanged or raise :class:`ParamsError`."""
    if section not in SCHEMA:
        raise ParamsError(f"{source}: unknown section {section!r}; known sections: {', '.join(SCHEMA)}")
    if not isinstance(values, dict):
        raise ParamsError(f"{source}: section {section!r} must be a mapping of keys to values")
    specs = SCHEMA[section]
    for key in values:
        if key not in specs:
            raise ParamsError(f"{source}: unknown key {section}.{key}; known keys: {', '.join(specs)}")
    for key, spec in specs.items():
        if key not in values:
            raise ParamsError(f"{source}: missing key {section}.{key} ({spec.allowed})")
        v = values[key]
        if v is None and spec.optional:
            continue
        # bool is an int subclass in Python: `n_videos: true` must not pass as 1
        if isinstance(v, bool) and bool not in (spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)):
            ok = False
        else:
            ok = isinstance(v, spec.kind) and spec.check(v)
        if not ok:
            raise ParamsError(f"{source}: {section}.{key} must be {spec.allowed}, got {v!r} ({_type_name(v)})")
    for sec, rule, message in RULES:
        if sec == section and not rule(values):
            raise ParamsError(f"{source}: {message}")
    return values


def load_params(path: str | Path = "params.yaml") -> dict[str, dict[str, Any]]:
    """Read and validate every section of ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} does not exist; run from the project root")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    for section in SCHEMA:
        if section not in doc:
            raise ParamsError(f"{path}: missing section {section!r}")
    for section, values in doc.items():
        validate_section(section, values, str(path))
    return doc


def config_from(cls, section: dict[str, Any], **overrides: Any):
    """Build the dataclass ``cls`` from the keys of a params section that it declares, plus ``overrides``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:   # a misspelt override would otherwise be dropped without a word
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
    return cls(**{k: v for k, v in {**section, **overrides}.items() if k in names})
