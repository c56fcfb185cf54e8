"""The systems the evaluation compares, and how each differs from the full model.

Every trained system is VideoNarrator with one switch changed, trained by the
same code on the same data for the same number of steps.
"""
from __future__ import annotations

from dataclasses import replace

from .llm import LoraSettings
from .model import VideoNarratorConfig

NO_COMPRESSION_TAU = 2.0  # cosine similarity never reaches 2: every frame is kept

# name -> (what differs, config changes, tau override or None)
SYSTEMS: dict[str, tuple[str, dict, float | None]] = {
    "videonarrator": ("the full model", {}, None),
    "text_only": ("same LLM + LoRA trained without any visual input", {"use_video": False}, None),
    "no_position": ("no clip position at all: no position embedding, no 'Clip i/n' and no story numbering "
                    "in the prompt", {"use_position": False, "position_text": False}, None),
    "no_memory": ("no memory tokens of earlier clips", {"use_memory": False}, None),
    "no_compression": ("every 1-fps frame kept (no frame compression)", {}, NO_COMPRESSION_TAU),
}


def system_config(name: str, base: VideoNarratorConfig, tau: float) -> tuple[VideoNarratorConfig, float]:
    """The model config and compression threshold of system ``name``."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; systems: {', '.join(SYSTEMS)}")
    _, changes, tau_override = SYSTEMS[name]
    return replace(base, **changes), (tau if tau_override is None else tau_override)


def settings_from_params(model: dict) -> tuple[VideoNarratorConfig, LoraSettings, float]:
    """The ``model`` section of params.yaml -> (model config, LoRA settings, tau)."""
    cfg = VideoNarratorConfig(num_query_tokens=model["num_query_tokens"], qformer_hidden=model["qformer_hidden"],
                              qformer_layers=model["qformer_layers"], qformer_heads=model["qformer_heads"],
                              patch_pos_embed=model["patch_pos_embed"], memory_frames=model["memory_frames"],
                              story_clips=model["story_clips"])
    targets = model["lora_targets"]
    lora = LoraSettings(r=model["lora_r"], alpha=model["lora_alpha"], dropout=model["lora_dropout"],
                        target_modules=targets if isinstance(targets, str) else list(targets))
    return cfg, lora, model["tau"]
