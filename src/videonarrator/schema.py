"""The one internal dataset schema that every stage reads and writes.

A dataset is a list of :class:`Video` records.  A video has a product (name and
knowledge fields with items) and ordered :class:`Clip` records, each with its
time span, 1-fps frame files, word window, script labels and reference
narration.  The synthetic generator, the raw-video preparation and the
E-SyncVidStory loader all produce this schema; the model, generation and
evaluation stages consume it.  It is stored as JSON (never pickle).

Lengths are counted in *units*: words for English, characters for Chinese
(:func:`text_length`).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io import atomic_write_text
from .labels import check_label

SCHEMA_VERSION = 1
LANGUAGES = ("en", "zh")
SPLITS = ("train", "val", "test")

WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")


# A clip's allowed narration length without a reference: about 2.5 English words or 6 Chinese
# characters per second of video, +-3 units (E-SyncVidStory's rule).
UNITS_PER_SECOND = {"en": 2.5, "zh": 6.0}
WINDOW_SLACK = 3


def window_around(n: int) -> tuple[int, int]:
    """The word window around a target length of ``n`` units."""
    return max(1, n - WINDOW_SLACK), n + WINDOW_SLACK


def text_length(text: str, language: str) -> int:
    """Length of a narration in the dataset's unit.

    English: words (letters/digits with inner apostrophes or hyphens).
    Chinese: every character, punctuation included: the E-SyncVidStory windows
    are exactly ``len(narration) ± 3`` in all 832 shared clips, as in the
    reference code (``t_length = len(t_text)``).
    """
    if language == "en":
        return len(WORD_RE.findall(text))
    if language == "zh":
        return len(text)
    raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")


class SchemaError(ValueError):
    """A dataset record does not follow the schema; the message names it."""


@dataclass
class Product:
    name: str
    # field name -> items, in the order the source gives them
    knowledge: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Clip:
    index: int                    # 0-based position in the video
    start: float                  # seconds from the video start
    end: float                    # seconds; end > start
    window: tuple[int, int]       # allowed narration length (lo, hi) in units
    labels: list[str]             # script label keys (labels.LABELS)
    narration: str = ""           # reference narration ("" when unknown)
    frames: list[str] = field(default_factory=list)  # 1-fps frame files, relative to the dataset root
    # Ground truth a generator knows (synthetic data): visible facts such as
    # colour, shape and action, and which of them the narration states.
    truth: dict[str, Any] = field(default_factory=dict)
    # Source-specific fields kept only so a loader can write its format back.
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Video:
    id: str
    product: Product
    clips: list[Clip]
    language: str = "en"
    split: str = "train"
    video_path: str | None = None  # the source video file, relative to the dataset root
    truth: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.clips[-1].end if self.clips else 0.0


def validate_video(video: Video) -> Video:
    """Check the invariants a stage relies on; raise :class:`SchemaError` naming the record."""
    where = f"video {video.id!r}"
    if not video.id:
        raise SchemaError("a video record has an empty id")
    if video.language not in LANGUAGES:
        raise SchemaError(f"{where}: language {video.language!r} is not one of {LANGUAGES}")
    if video.split not in SPLITS:
        raise SchemaError(f"{where}: split {video.split!r} is not one of {SPLITS}")
    if not video.product.name:
        raise SchemaError(f"{where}: the product has no name")
    if not video.clips:
        raise SchemaError(f"{where}: no clips")
    last_end = 0.0
    for i, clip in enumerate(video.clips):
        cw = f"{where} clip {i}"
        if clip.index != i:
            raise SchemaError(f"{cw}: index is {clip.index}, expected {i} (clips must be in order)")
        if not clip.end > clip.start:
            raise SchemaError(f"{cw}: zero or negative length (start {clip.start}, end {clip.end})")
        if clip.start < last_end - 1e-6:
            raise SchemaError(f"{cw}: starts at {clip.start} before the previous clip ends at {last_end}")
        last_end = clip.end
        lo, hi = clip.window
        if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 0 or lo > hi:
            raise SchemaError(f"{cw}: word window {clip.window} must be integers with 0 <= lo <= hi")
        if not clip.labels:
            raise SchemaError(f"{cw}: no script label")
        for key in clip.labels:
            try:
                check_label(key, cw)
            except ValueError as err:
                raise SchemaError(str(err)) from None
    return video


# -- JSON round trip ---------------------------------------------------------

def video_to_dict(video: Video) -> dict[str, Any]:
    d = asdict(video)
    for c in d["clips"]:
        c["window"] = list(c["window"])
    return d


def video_from_dict(d: dict[str, Any], where: str = "") -> Video:
    """Build a validated :class:`Video` from its JSON form; errors name the record."""
    vid = d.get("id", "?") if isinstance(d, dict) else "?"
    at = f"{where}: video {vid!r}" if where else f"video {vid!r}"
    try:
        product = Product(name=d["product"]["name"],
                          knowledge={str(k): [str(x) for x in v]
                                     for k, v in d["product"].get("knowledge", {}).items()})
        clips = [
            Clip(index=int(c["index"]), start=float(c["start"]), end=float(c["end"]),
                 window=(int(c["window"][0]), int(c["window"][1])),
                 labels=[str(x) for x in c["labels"]], narration=str(c.get("narration", "")),
                 frames=[str(x) for x in c.get("frames", [])], truth=dict(c.get("truth", {})),
                 meta=dict(c.get("meta", {})))
            for c in d["clips"]
        ]
        video = Video(id=str(d["id"]), product=product, clips=clips,
                      language=d.get("language", "en"), split=d.get("split", "train"),
                      video_path=d.get("video_path"), truth=dict(d.get("truth", {})),
                      meta=dict(d.get("meta", {})))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise SchemaError(f"{at}: malformed record ({type(err).__name__}: {err})") from None
    try:
        return validate_video(video)
    except SchemaError as err:
        raise SchemaError(f"{where}: {err}" if where else str(err)) from None


def save_dataset(videos: list[Video], path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write videos as one JSON file, atomically (no half-written file on failure)."""
    for v in videos:
        validate_video(v)
    doc = {"schema_version": SCHEMA_VERSION, "meta": meta or {},
           "videos": [video_to_dict(v) for v in videos]}
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=1))


def load_dataset(path: str | Path) -> tuple[list[Video], dict[str, Any]]:
    """Read a dataset written by :func:`save_dataset`; return (videos, meta)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist; run the prepare stage first (dvc repro prepare)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SchemaError(f"{path}: not valid UTF-8 JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(f"{path}: not a VideoNarrator dataset (schema_version {SCHEMA_VERSION} expected)")
    videos = [video_from_dict(d, where=str(path)) for d in doc["videos"]]
    return videos, doc.get("meta", {})


PLACES = ("first", "middle", "last")


def clip_place(video: Video, i: int) -> str:
    """Where clip ``i`` sits in its video: the first clip, the last, or one in the middle."""
    return "first" if i == 0 else "last" if i == len(video.clips) - 1 else "middle"


def split_videos(videos: list[Video], split: str) -> list[Video]:
    return [v for v in videos if v.split == split]


def split_by_rank(order, val_fraction: float, test_fraction: float) -> dict[int, str]:
    """Split by video: item index -> "train" / "val" / "test" for the indices in ``order`` (a seeded
    permutation).  The first ``test_fraction`` of the order is test, the next ``val_fraction`` val, the
    rest train; val and test get at least one video each.  The one rule the synthetic generator and
    the official data share."""
    n = len(order)
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    if n_test + n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} leave no training "
                         f"video out of {n}")
    return {int(i): "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for rank, i in enumerate(order)}
