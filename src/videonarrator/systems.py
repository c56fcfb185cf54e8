"""The systems the evaluation compares, and how each differs from the full model.

Every trained system is VideoNarrator with one switch changed, trained by the
same code on the same data for the same number of steps.  Their configs are
built by :class:`videonarrator.config.Settings`.
"""
from __future__ import annotations

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


def _system(name: str) -> tuple[str, dict, float | None]:
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; systems: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]


def describe(name: str) -> str:
    """What ``name`` changes relative to the full model."""
    return _system(name)[0]


def system_changes(name: str) -> dict:
    """The VideoNarratorConfig fields ``name`` sets differently from the full model."""
    return dict(_system(name)[1])


def system_tau(name: str, tau: float) -> float:
    """The compression threshold ``name`` uses, given params' ``model.tau``."""
    override = _system(name)[2]
    return tau if override is None else override


def sees_video(name: str) -> bool:
    """Whether ``name`` reads frame features at all."""
    return system_changes(name).get("use_video", True)
