"""The prepare stage: raw ad videos -> clips with 1-fps frames, in the internal schema.

For each annotated video: decode the mp4, detect shot boundaries, merge shots
into clips, sample one frame per second of each clip, and attach the
annotation (labels, narration, window) of the true clip each detected clip
overlaps most.  Detected boundaries are scored against the annotation's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_path
from .progress import progress_bar
from .schema import Clip, Video, save_dataset
from .stats import dataset_statistics
from .video import VideoError, boundary_f1, cut_clips, frame_index, read_frames, sample_times


@dataclass
class PrepareConfig:
    """Built from params' ``prepare`` section by :class:`config.Settings` (the one source of its values)."""
    shot_threshold: float            # ContentDetector threshold (HSV change per frame)
    min_shot_s: float                # no cut closer than this; shorter shots merge into a neighbour
    boundary_tolerance_s: float
    jpeg_quality: int = 95


def align_clips(spans: list[tuple[float, float]], truth: list[Clip]) -> list[int] | None:
    """Index of the true clip each detected span overlaps most, or None when the
    detection does not map one-to-one onto the annotation."""
    matches = []
    for start, end in spans:
        overlaps = [max(0.0, min(end, c.end) - max(start, c.start)) for c in truth]
        matches.append(int(np.argmax(overlaps)))
    return matches if matches == list(range(len(truth))) else None


def save_frame(img: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=quality)


def prepare_video(video: Video, raw_root: Path, out_root: Path, cfg: PrepareConfig) -> tuple[Video, dict]:
    """Detect clips in one annotated video and write its frames under ``out_root/frames``.

    Returns the prepared record (clip spans from detection, or from the
    annotation when detection does not align) and its boundary counts.
    """
    if not video.video_path:
        raise ValueError(f"video {video.id!r} has no video_path in its annotation")
    frames, info = read_frames(raw_root / video.video_path)
    spans = cut_clips(frames, info.fps, cfg.shot_threshold, cfg.min_shot_s)
    detected = [s for s, _ in spans[1:]]
    true_cuts = [c.start for c in video.clips[1:]]
    score = boundary_f1(detected, true_cuts, cfg.boundary_tolerance_s)
    hits = round(score["recall"] * len(true_cuts))
    aligned = align_clips(spans, video.clips) is not None
    if not aligned:  # keep the annotation's spans so narrations stay with their frames
        spans = [(c.start, c.end) for c in video.clips]

    clips = []
    for c, (start, end) in zip(video.clips, spans):
        files = []
        for k, t in enumerate(sample_times(start, end)):
            rel = f"frames/{video.id}/{c.index:03d}_{k:03d}.jpg"
            save_frame(frames[frame_index(t, info.fps, info.n_frames)], out_root / rel, cfg.jpeg_quality)
            files.append(rel)
        clips.append(Clip(index=c.index, start=round(start, 3), end=round(end, 3), window=c.window,
                          labels=list(c.labels), narration=c.narration, frames=files,
                          truth=dict(c.truth), meta=dict(c.meta)))
    prepared = Video(id=video.id, product=video.product, clips=clips, language=video.language,
                     split=video.split, video_path=video.video_path, truth=dict(video.truth),
                     meta={**video.meta, "fps": info.fps, "n_frames": info.n_frames,
                           "detected_cuts": detected, "aligned": aligned})
    counts = {"detected": len(detected), "true": len(true_cuts), "hits": hits, "aligned": aligned}
    return prepared, counts


def prepare_dataset(videos: list[Video], raw_root: str | Path, out_dir: str | Path,
                    cfg: PrepareConfig, progress: bool = True, skip_bad: bool = False
                    ) -> tuple[list[Video], dict[str, Any]]:
    """Prepare every video into ``out_dir`` (dataset.json + frames/), atomically.

    The whole folder is built under a temporary name and renamed at the end, so
    a failure leaves no half-prepared dataset behind.  A video that cannot be
    read stops the run with an error naming its file, unless ``skip_bad``: then
    it is left out and listed in ``metrics["skipped_videos"]`` with the reason.
    """
    import shutil

    raw_root = Path(raw_root)
    prepared, counts, skipped = [], [], []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for video in progress_bar(videos, desc="detect clips, sample frames", disable=not progress):
            try:
                v, n = prepare_video(video, raw_root, tmp, cfg)
            except (VideoError, ValueError) as err:
                if not skip_bad:
                    raise
                shutil.rmtree(tmp / "frames" / video.id, ignore_errors=True)
                skipped.append({"id": video.id, "reason": str(err)})
                continue
            prepared.append(v)
            counts.append(n)
        if not prepared:
            raise ValueError(f"no video could be prepared ({len(skipped)} skipped); see the reasons: {skipped[:3]}")
        save_dataset(prepared, tmp / "dataset.json", meta={"source_annotations": str(raw_root),
                                                           "skipped_videos": skipped})
    detected = sum(n["detected"] for n in counts)
    true = sum(n["true"] for n in counts)
    hits = sum(n["hits"] for n in counts)
    p = hits / detected if detected else float(true == 0)
    r = hits / true if true else float(detected == 0)
    metrics = {
        "shot_boundary_precision": p, "shot_boundary_recall": r,
        "shot_boundary_f1": 2 * p * r / (p + r) if p + r else 0.0,
        "boundary_fallback_videos": sum(not n["aligned"] for n in counts),
        "skipped_videos": skipped,
        **dataset_statistics(prepared),
    }
    return prepared, metrics
