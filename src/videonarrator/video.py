"""The raw-video path: decode, detect shots, merge shots into clips, sample 1-fps frames.

Decoding uses PyAV; shot boundaries come from PySceneDetect's content detector
(HSV change between consecutive frames).  Every failure names the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(ValueError):
    """A video file cannot be used; the message names the file and what to do."""


@dataclass
class VideoInfo:
    path: Path
    fps: float
    n_frames: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video file {path} does not exist; check the path (or rerun the stage that writes it)")
    if path.stat().st_size == 0:
        raise VideoError(f"video file {path} is empty (0 bytes); replace it with a complete copy")


def read_frames(path: str | Path, size: int | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Decode every frame of the first video stream.

    Returns (frames (N, H, W, 3) uint8 RGB, info).  ``size`` resizes to a square
    frame of that side.  A truncated or corrupt file raises :class:`VideoError`.
    """
    import av

    path = Path(path)
    _check_exists(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream (audio only, or not a video); give a video file")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = []
            for frame in container.decode(stream):
                if size is not None:
                    frame = frame.reformat(width=size, height=size)
                frames.append(frame.to_ndarray(format="rgb24"))
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"cannot decode video {path}: {err}. The file is truncated or corrupt; "
                         "re-export or re-download it") from None
    if not frames:
        raise VideoError(f"video {path} has no decodable frames; the file is truncated or corrupt; "
                         "re-export or re-download it")
    if fps <= 0:
        raise VideoError(f"video {path} reports no frame rate; re-encode it with a constant frame rate")
    arr = np.stack(frames)
    return arr, VideoInfo(path, fps, len(arr), arr.shape[2], arr.shape[1])


def detect_shots(frames: np.ndarray, fps: float, threshold: float = 27.0,
                 min_shot_frames: int = 15) -> list[int]:
    """Frame indices where a new shot starts (excluding 0), by PySceneDetect's ContentDetector.

    ``threshold`` is the detector's HSV content-change threshold; a cut is
    only accepted ``min_shot_frames`` after the previous one.
    """
    from scenedetect import ContentDetector
    from scenedetect.common import FrameTimecode

    detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_frames)
    cuts: list[int] = []
    bgr = frames[..., ::-1]  # OpenCV order, which the detector expects
    for i in range(len(frames)):
        for tc in detector.process_frame(FrameTimecode(i, fps=fps), np.ascontiguousarray(bgr[i])):
            if tc.frame_num > 0:
                cuts.append(int(tc.frame_num))
    return sorted(set(cuts))


def cut_clips(frames: np.ndarray, fps: float, shot_threshold: float, min_shot_s: float) -> list[tuple[float, float]]:
    """(start, end) seconds of a video's clips: detected shots, none shorter than ``min_shot_s``
    (params' ``prepare.shot_threshold`` and ``prepare.min_shot_s``).  The one way the pipeline
    and ``videonarrator-narrate`` cut a video."""
    cuts = detect_shots(frames, fps, shot_threshold, max(1, round(min_shot_s * fps)))
    return merge_shots(shots_from_cuts(cuts, len(frames), fps), min_shot_s)


def shots_from_cuts(cuts: list[int], n_frames: int, fps: float) -> list[tuple[float, float]]:
    """(start, end) seconds of each shot given the frame indices where shots start."""
    edges = [0, *[c for c in cuts if 0 < c < n_frames], n_frames]
    return [(a / fps, b / fps) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def merge_shots(shots: list[tuple[float, float]], min_clip_s: float) -> list[tuple[float, float]]:
    """Merge shots shorter than ``min_clip_s`` into a neighbour so that every clip
    lasts at least that long (a clip needs at least one 1-fps frame and enough
    time for a narration).  Short shots join the previous clip; a short first
    shot joins the next one."""
    clips: list[list[float]] = []
    for start, end in shots:
        if clips and (end - start < min_clip_s or clips[-1][1] - clips[-1][0] < min_clip_s):
            clips[-1][1] = end
        else:
            clips.append([start, end])
    if len(clips) > 1 and clips[-1][1] - clips[-1][0] < min_clip_s:
        clips[-2][1] = clips.pop()[1]
    return [(a, b) for a, b in clips]


def split_long_shots(shots: list[tuple[float, float]], max_clip_s: float) -> list[tuple[float, float]]:
    """Split shots longer than ``max_clip_s`` into equal parts no longer than that
    (a single long take would otherwise get one narration for its whole length)."""
    clips = []
    for start, end in shots:
        parts = max(1, int(np.ceil((end - start) / max_clip_s - 1e-9)))
        step = (end - start) / parts
        clips += [(start + k * step, end if k == parts - 1 else start + (k + 1) * step) for k in range(parts)]
    return clips


def sample_times(start: float, end: float) -> list[float]:
    """1-fps sampling: the middle of each whole second of the clip (at least one frame).

    A clip of d seconds gives floor(d) frames, as the E-SyncVidStory frame lists do.
    """
    n = max(1, int(np.floor(end - start + 1e-6)))
    return [start + k + 0.5 if start + k + 0.5 < end else (start + end) / 2 for k in range(n)]


def frame_index(t: float, fps: float, n_frames: int) -> int:
    return min(n_frames - 1, max(0, int(round(t * fps - 0.5))))


def boundary_f1(detected: list[float], truth: list[float], tolerance: float) -> dict[str, float]:
    """Precision / recall / F1 of cut times, each true cut matched at most once within ``tolerance`` s."""
    unmatched = list(truth)
    hits = 0
    for t in detected:
        best = min(unmatched, key=lambda u: abs(u - t), default=None)
        if best is not None and abs(best - t) <= tolerance:
            unmatched.remove(best)
            hits += 1
    if not detected and not truth:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    p = hits / len(detected) if detected else 0.0
    r = hits / len(truth) if truth else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}
