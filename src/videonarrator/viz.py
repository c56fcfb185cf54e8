"""Figures for the notebooks and reports (matplotlib, headless-safe)."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .io import atomic_path
from .labels import LABEL_EN, LABELS
from .schema import Video, text_length


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save atomically (no truncated PNG if interrupted)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def markdown_table(rows: list[dict], digits: int = 2) -> str:
    """Rows of dicts as a markdown table (numbers rounded; None shown as blank) for notebooks."""
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(v) -> str:
        if v is None:
            return ""
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def frame_strip(video: Video, root: str | Path, max_frames: int = 4, width: float = 15.0,
                narrations: dict[str, list[str]] | None = None):
    """One row per clip: its 1-fps frames, then label, window and narration(s).

    ``narrations`` maps a system name to one narration per clip, shown under
    the reference.
    """
    root = Path(root)
    n = len(video.clips)
    fig, axes = plt.subplots(n, max_frames + 1, figsize=(width, 1.9 * n),
                             gridspec_kw={"width_ratios": [1] * max_frames + [3.2]}, squeeze=False)
    for row, clip in zip(axes, video.clips):
        for k, ax in enumerate(row[:max_frames]):
            ax.axis("off")
            if k < len(clip.frames):
                ax.imshow(load_image(root / clip.frames[k]))
                ax.set_title(f"{clip.start + k + 0.5:.1f}s", fontsize=8)
        ax = row[-1]
        ax.axis("off")
        unit = "words" if video.language == "en" else "chars"
        lines = [f"clip {clip.index + 1}/{n}  {clip.duration:.1f}s  window {clip.window[0]}-{clip.window[1]} {unit}",
                 "label: " + " + ".join(LABEL_EN[k] for k in clip.labels),
                 "reference: " + clip.narration]
        for system, texts in (narrations or {}).items():
            lines.append(f"{system}: {texts[clip.index]}")
        wrapped = "\n".join(textwrap.fill(line, 70, subsequent_indent="   ") for line in lines)
        ax.text(0, 0.5, wrapped, va="center", ha="left", fontsize=8, family="monospace",
                transform=ax.transAxes)
    fig.suptitle(f"{video.id}: {video.product.name} ({video.split})", fontsize=11)
    fig.tight_layout()
    return fig


def dataset_overview(videos: list[Video]):
    """Four panels: clips per video, clip durations, narration length vs duration, label counts."""
    clips = [(v, c) for v in videos for c in v.clips]
    unit = "words" if videos[0].language == "en" else "characters"
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))

    per_video = Counter(len(v.clips) for v in videos)
    xs = sorted(per_video)
    ax[0, 0].bar(xs, [per_video[x] for x in xs], color="tab:blue")
    ax[0, 0].set(xlabel="clips per video", ylabel="videos", title="Clips per video")

    durations = [c.duration for _, c in clips]
    ax[0, 1].hist(durations, bins=np.arange(int(min(durations)), max(durations) + 2) - 0.5, color="tab:orange", rwidth=0.9)
    ax[0, 1].set(xlabel="clip duration (s)", ylabel="clips", title="Clip durations")

    lengths = [text_length(c.narration, v.language) for v, c in clips]
    ax[1, 0].scatter(durations, lengths, s=12, alpha=0.5, color="tab:green", label="reference narration")
    rate = sum(lengths) / sum(durations)
    grid = np.linspace(0, max(durations), 10)
    ax[1, 0].plot(grid, rate * grid, color="black", lw=1, label=f"{rate:.2f} {unit}/s")
    ax[1, 0].set(xlabel="clip duration (s)", ylabel=f"narration length ({unit})",
                 title=f"Narration length vs duration ({unit} per second)")
    ax[1, 0].legend(loc="upper left")

    labels = Counter(k for _, c in clips for k in c.labels)
    keys = [k for k in LABELS if labels[k]]
    ax[1, 1].barh([LABEL_EN[k] for k in keys], [labels[k] for k in keys], color="tab:purple")
    ax[1, 1].invert_yaxis()
    ax[1, 1].set(xlabel="clips", title="Script labels")
    fig.tight_layout()
    return fig


def loss_curves(logs: dict[str, list[dict]]):
    """Training (and validation, dashed) loss per step for one or more systems."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, (name, log) in enumerate(logs.items()):
        colour = f"C{k}"
        steps = [e["step"] for e in log]
        ax.plot(steps, [e["loss"] for e in log], color=colour, alpha=0.35, lw=1)
        if len(log) >= 5:  # a running mean shows the trend through batch noise
            smooth = np.convolve([e["loss"] for e in log], np.ones(5) / 5, mode="valid")
            ax.plot(steps[4:], smooth, color=colour, lw=2, label=f"{name}: train (5-step mean)")
        val = [(e["step"], e["val_loss"]) for e in log if "val_loss" in e]
        if val:
            ax.plot(*zip(*val), color=colour, ls="--", marker="o", label=f"{name}: validation")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy on target tokens", title="Training loss")
    ax.legend()
    fig.tight_layout()
    return fig


def stage1_curve(stage1: dict):
    """Stage 1's loss (every 10th step, as the training report keeps it), with the validation
    clips' accuracy per value kind in the title."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([1 + 10 * k for k in range(len(stage1["loss"]))], stage1["loss"], lw=1.5)
    ax.set_yscale("log")
    accuracy = ", ".join(f"{kind} {acc:.2f}" for kind, acc in (stage1["val_acc"] or {}).items())
    ax.set(xlabel="stage-1 step", ylabel="cross-entropy, summed over kinds",
           title="Stage 1: the Q-Former alone" + (f" (validation: {accuracy})" if accuracy else ""))
    fig.tight_layout()
    return fig


def metric_bars(metrics: dict[str, dict[str, float]], names: list[str]):
    """One panel per metric, one bar per system that has it."""
    names = [n for n in names if any(n in m for m in metrics.values())]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        systems = [s for s, m in metrics.items() if name in m]
        values = [metrics[s][name] for s in systems]
        ax.bar(range(len(systems)), values, color=[f"C{list(metrics).index(s)}" for s in systems])
        ax.set_xticks(range(len(systems)), systems, rotation=45, ha="right", fontsize=8)
        ax.set_title(name)
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    fig.suptitle("Test-split metrics per system")
    fig.tight_layout()
    return fig


def length_vs_window(rows: list[dict], system: str, unit: str = "words"):
    """Each clip's narration length (dot) against its window (bar), in order."""
    fig, ax = plt.subplots(figsize=(12, 4))
    x = np.arange(len(rows))
    lo = np.array([r["lo"] for r in rows])
    hi = np.array([r["hi"] for r in rows])
    n = np.array([r["length"] for r in rows])
    inside = (lo <= n) & (n <= hi)
    ax.bar(x, hi - lo, bottom=lo, color="lightgrey", label=f"window ({unit})")
    ax.scatter(x[inside], n[inside], s=14, color="tab:green", label="narration inside", zorder=3)
    ax.scatter(x[~inside], n[~inside], s=18, color="tab:red", marker="x", label="narration outside", zorder=3)
    ax.set(xlabel="test clip", ylabel=f"length ({unit})",
           title=f"{system}: narration length vs window ({inside.mean():.0%} inside)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def kept_frames_strip(video: Video, root: str | Path, kept: list[list[int]], tau: float, max_frames: int = 8):
    """Every clip's frames in a row; frames that compression drops at ``tau`` are greyed and crossed."""
    n = len(video.clips)
    width = min(max_frames, max(len(c.frames) for c in video.clips))
    fig, axes = plt.subplots(n, width, figsize=(1.6 * width, 1.7 * n), squeeze=False)
    for row, clip, keep in zip(axes, video.clips, kept):
        for k, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(clip.frames):
                ax.axis("off")
                continue
            img = load_image(Path(root) / clip.frames[k])
            if k in keep:
                ax.imshow(img)
            else:
                ax.imshow(img, alpha=0.3)
                ax.plot([0, img.shape[1] - 1], [0, img.shape[0] - 1], color="red", lw=1)
            ax.set_title("kept" if k in keep else "dropped", fontsize=7, color="black" if k in keep else "red")
        row[0].set_ylabel(f"clip {clip.index + 1}", fontsize=8)
    fig.suptitle(f"{video.id}: frames kept by compression at tau = {tau}")
    fig.tight_layout()
    return fig


def attention_overlays(image: np.ndarray, maps: np.ndarray, title: str):
    """One panel per query: its attention over the patch grid (P = g*g) on top of the frame."""
    q = len(maps)
    g = int(round(np.sqrt(maps.shape[-1])))
    fig, axes = plt.subplots(1, q + 1, figsize=(2.2 * (q + 1), 2.6))
    axes[0].imshow(image)
    axes[0].set_title("frame", fontsize=9)
    for k, ax in enumerate(axes[1:]):
        ax.imshow(image)
        ax.imshow(maps[k].reshape(g, g), cmap="inferno", alpha=0.6, interpolation="nearest",
                  extent=(0, image.shape[1], image.shape[0], 0))
        ax.set_title(f"query {k}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
