"""params.yaml -> every configuration object of the package, built in one place.

params.yaml (or a profile under ``profiles/``, which is a params file too) is
the one source of every setting.  :class:`Settings` validates the sections it
is given once (:mod:`videonarrator.params`) and builds from them the config of
each step: the vision tower, clip cutting, the model and its LoRA adapter,
training and decoding.  Notebooks, ``videonarrator-narrate``, the widgets and
the benchmarks all go through it, so no step assembles a config by hand and no
default lives in two places.

The two sizes no params key holds, the vision tower's patch count and width,
are read from the feature files the model will be trained on
(:func:`features.stored_shape`) and recorded in the saved model's config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .params import ParamsError, config_from, load_params, validate_section


@dataclass(frozen=True)
class Settings:
    """Validated params sections (all of params.yaml, or the ones a stage was given)."""
    sections: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> "Settings":
        return cls(load_params(path))

    @classmethod
    def of(cls, **sections: dict[str, Any]) -> "Settings":
        """From the sections a notebook's parameters cell holds (``Settings.of(common=common, model=model)``)."""
        for name, values in sections.items():
            validate_section(name, values)
        return cls(dict(sections))

    def __getitem__(self, section: str) -> dict[str, Any]:
        if section not in self.sections:
            raise ParamsError(f"params section {section!r} was not given here (given: {', '.join(self.sections)}); "
                              f"add it to the stage's params in dvc.yaml")
        return self.sections[section]

    @property
    def data_seed(self) -> int:
        """The dataset's seed: synthetic videos, the split by video, the frozen tower's random init."""
        return self["common"]["data_seed"]

    @property
    def train_seed(self) -> int:
        """The training's seed: trained weights' init, sample order, decoding samples."""
        return self["train"]["seed"]

    # -- data ---------------------------------------------------------------------

    # Each builder takes keyword overrides of the config's fields (a test's sizes, a mode).

    def synthetic(self, **overrides: Any):
        from .data.synthetic import SyntheticConfig
        return config_from(SyntheticConfig, self["prepare"], **{"seed": self.data_seed, **overrides})

    def prepare(self, **overrides: Any):
        from .prepare import PrepareConfig
        return config_from(PrepareConfig, self["prepare"], **overrides)

    def tower(self, **overrides: Any):
        from .features import TowerConfig
        f = self["features"]
        return TowerConfig(**{"name": f["tower"], "pretrained": f["pretrained"], "image_size": f["image_size"],
                              "seed": self.data_seed, **overrides})

    # -- model ----------------------------------------------------------------------

    def model(self, system: str = "videonarrator", vision_shape: tuple[int, int] | None = None):
        """The model config of ``system`` (systems.SYSTEMS).

        ``vision_shape`` = (patch tokens per frame, width) of the features the
        model will read (:func:`features.stored_shape`); required when the
        system sees video, since no params key holds the tower's output shape.
        """
        from .model import VideoNarratorConfig
        from .systems import system_changes

        changes = system_changes(system)
        patches, width = 0, 0                      # 0: no visual side (VisualEncoder refuses it)
        if changes.get("use_video", True):
            if vision_shape is None:
                raise ValueError(f"system {system!r} sees video: pass vision_shape=(patches, width) of its "
                                 f"feature files (features.stored_shape); run the features stage first")
            patches, width = (int(x) for x in vision_shape)
        m = self["model"]
        return VideoNarratorConfig(vision_width=width, num_patches=patches, num_query_tokens=m["num_query_tokens"],
                                   qformer_hidden=m["qformer_hidden"], qformer_layers=m["qformer_layers"],
                                   qformer_heads=m["qformer_heads"], patch_pos_embed=m["patch_pos_embed"],
                                   memory_frames=m["memory_frames"], story_clips=m["story_clips"],
                                   label_head=m["label_head"], **changes)

    def tau(self, system: str = "videonarrator") -> float:
        """The frame-compression threshold ``system`` trains and narrates with."""
        from .systems import system_tau
        return system_tau(system, self["model"]["tau"])

    def lora(self, **overrides: Any):
        from .llm import LoraSettings
        m = self["model"]
        targets = m["lora_targets"]
        return LoraSettings(**{"r": m["lora_r"], "alpha": m["lora_alpha"], "dropout": m["lora_dropout"],
                               "target_modules": targets if isinstance(targets, str) else list(targets),
                               **overrides})

    def llm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of VideoNarrator.from_llm / from_pretrained for params' LLM."""
        return {"trust_remote_code": self["llm"]["trust_remote_code"],
                "attn_implementation": self["llm"]["attn_implementation"]}

    # -- training and decoding ----------------------------------------------------------

    def train(self, **overrides: Any):
        from .train import TrainConfig
        return config_from(TrainConfig, self["train"], **overrides)

    def narrating_dtype(self, device=None):
        """The dtype of the narrating LLM's weights (``evaluate.precision``; ``auto`` as ``train.precision``:
        bf16 on GPUs that have it and on CPUs where bf16 matrix products are timed faster, else fp32).
        Decoding a few tokens at a time reads every weight per token, so half the bytes is most of the gain."""
        import torch

        from .model import default_device
        from .train import resolve_precision
        precision = resolve_precision(self["evaluate"]["precision"], torch.device(device or default_device()))
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def narrator(self, model_dir, device=None, llm_path: str | Path | None = None):
        """A trained narrator from ``model_dir``, loaded for narrating: on ``device`` (None: the GPU when
        there is one), its base LLM (``llm_path``, default ``llm.path``) in :meth:`narrating_dtype`; the
        visual side stays fp32; its LoRA adapter merged into the LLM's weights (the bare LLM's cost)."""
        from .model import VideoNarrator
        llm = self["llm"]
        return VideoNarrator.from_pretrained(model_dir, llm_path or llm["path"], dtype=self.narrating_dtype(device),
                                             trust_remote_code=llm["trust_remote_code"], device=device, merge=True)

    def generation(self, **overrides: Any):
        from .generate import GenerationConfig
        return config_from(GenerationConfig, self["evaluate"], **{"seed": self.train_seed, **overrides}).check()
