"""What the narration explorer shows, without any widget: the state behind :mod:`.view`.

Loaded once: the videos (test split first), the stored system narrations and metrics.  Current:
the video, clip, storyline mode and tau.  Derived per clip, and cached so a redraw recomputes
nothing: frame bytes, pooled frame features, the frames compression keeps at tau, and the rows
of narrations with their checks (length against the window, predicted label, visible facts).
The trained model is loaded once, lazily, for live regeneration.

Missing files never raise out of :meth:`ExplorerState.from_project`: they become notes (plain
text, topic -> message) that the view shows in its warning box.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..compression import compress_frames
from ..config import Settings
from ..features import load_video_features
from ..generate import ClipOutput, GenerationConfig
from ..io import read_json
from ..metrics import mentions
from ..schema import Clip, Video, load_dataset, text_length

DATASET = "data/processed/dataset.json"     # frames are relative to its folder
FEATURES = "data/features"
MODEL = "models/videonarrator"
NARRATIONS = "reports/narrations.json"
METRICS = "reports/metrics.json"
SUMMARY_METRICS = ("CIDEr", "ROUGE-L", "sync_in_window", "label_acc", "visual_attr_acc", "hallucination_rate")
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}   # test videos first: those the systems narrated
VISIBLE = ("colour", "shape", "action", "setting")   # the synthetic visible facts (data.synthetic.VISUAL_ATTRS)
MODES = ("given", "generated")
TAU_MIN, TAU_MAX = 0.5, 1.0

StoredNarrations = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]  # narrations.json: system, mode, video, clips


# -- small pure helpers (tested directly) ----------------------------------------------------

def video_label(video: Video) -> str:
    return f"{video.id} · {video.product.name} ({video.split})"


def ordered_videos(videos: list[Video]) -> list[Video]:
    """Test videos first, then val, then train; dataset order inside a split."""
    return sorted(videos, key=lambda v: SPLIT_ORDER.get(v.split, len(SPLIT_ORDER)))


def read_narrations(path: Path) -> StoredNarrations:
    """``reports/narrations.json``: {system: {"given"|"generated": {video id: [clip dict]}}}."""
    doc = read_json(path, fix="no system narrations to show (references only); make it with `dvc repro evaluate`")
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"{path} is not a narrations file ({{system: {{mode: {{video id: [clips]}}}}}} "
                         f"expected); rerun `dvc repro evaluate`")
    return doc


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    return read_json(path, fix="make it with `dvc repro evaluate`")


def dim_image(data: bytes) -> bytes:
    """A washed-out PNG copy of an image (how a dropped frame is shown)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    faded = Image.blend(rgb, Image.new("RGB", rgb.size, (255, 255, 255)), 0.65)
    out = io.BytesIO()
    faded.save(out, format="PNG")
    return out.getvalue()


def fact_status(text: str, truth: dict[str, Any], vocab: dict[str, list[str]]) -> dict[str, str]:
    """Per visible fact: "ok" (the narration states the true value and no other), "wrong" (it states
    another value of that attribute), or "absent" -- as metrics.visual_attr_acc counts it."""
    said = mentions(text, vocab)
    out = {}
    for attr in VISIBLE:
        if attr in truth:
            phrases = said.get(attr, set())
            true = " ".join(str(truth[attr]).lower().split())      # normalised as mentions() returns phrases
            out[attr] = "absent" if not phrases else "ok" if phrases == {true} else "wrong"
    return out


def narrate_live(model, video: Video, visual, cfg: GenerationConfig,
                 on_clip: Callable[[int, ClipOutput], None] | None = None) -> list[ClipOutput]:
    """Narrate one video clip by clip (:func:`generate.narrate_videos`), calling
    ``on_clip(i, output)`` after each clip so a progress bar can move."""
    from ..generate import narrate_videos

    callback = (lambda _vid, i, out: on_clip(i, out)) if on_clip is not None else None
    return narrate_videos(model, [video], {video.id: visual}, replace(cfg, batch_size=1),
                          progress=False, on_clip=callback)[video.id]


@dataclass
class LiveResult:
    """A live narration of one video by the trained model."""
    mode: str
    tau: float
    outputs: list[ClipOutput]


@dataclass
class Frame:
    """One 1-fps frame of the current clip; ``dropped`` is None when the features are missing
    (compression cannot be shown)."""
    path: Path
    time: float           # seconds into the video (the middle of its 1-s slot)
    dropped: bool | None


@dataclass
class NarrationRow:
    """One narration of the current clip with its checks.  ``labels``: the reference's labels or
    a system's predicted ones; ``label_ok`` is None for the reference; ``facts`` is
    :func:`fact_status` (empty when the clip has no visible facts)."""
    name: str
    text: str
    labels: list[str] | None
    length: int
    label_ok: bool | None
    facts: dict[str, str]


# -- the state --------------------------------------------------------------------------------

class ExplorerState:
    """The loaded project and the current video / clip / mode / tau, with the per-clip checks.

    ``settings`` (params.yaml) give the LLM, decoding and tau; without them live narration is
    off and tau starts at TAU_MAX (every frame kept).
    """

    def __init__(self, videos: list[Video], frames_root: str | Path, features_dir: str | Path,
                 narrations: StoredNarrations | None = None, metrics: dict[str, dict[str, float]] | None = None,
                 model_dir: str | Path = MODEL, settings: Settings | None = None,
                 llm_path: str | Path | None = None, tau: float | None = None,
                 notes: dict[str, str] | None = None):
        self.videos = ordered_videos(videos)
        self._by_id = {v.id: v for v in self.videos}
        self.frames_root, self.features_dir = Path(frames_root), Path(features_dir)
        self.narrations = narrations or {}
        self.metrics = metrics
        self.model_dir, self.settings = Path(model_dir), settings
        self.llm_path = llm_path if llm_path is not None else (settings["llm"]["path"] if settings else None)
        self.gen = settings.generation() if settings else None
        self.notes: dict[str, str] = dict(notes or {})   # topic -> warning (plain text; `cmd` marks a command)
        self.video_id: str | None = self.videos[0].id if self.videos else None
        self.clip_index = 0
        self.mode = MODES[0]
        self.set_tau(tau if tau is not None else settings.tau() if settings else TAU_MAX)
        # caches: nothing expensive is recomputed on a redraw
        self._image_cache: dict[tuple[Path, bool], tuple[bytes, str]] = {}
        self._pooled: dict[str, list[torch.Tensor] | None] = {}        # video id -> per clip (F, D), None: missing
        self._features_error: dict[str, str] = {}                        # video id -> why its features are missing
        self._kept: dict[tuple[str, float], list[list[int]]] = {}
        self.model = None                                                # the trained narrator, once loaded
        self.live: dict[tuple[str, str], LiveResult] = {}                # (video id, mode) -> last live narration
        # the vocabulary of stated facts: visible phrases plus every knowledge item (they claim their
        # spans, so "green tea extract" is an ingredient, not the colour green), as the evaluation does
        from ..data.synthetic import VISUAL_VOCAB
        items = sorted({it for v in self.videos for its in v.product.knowledge.values() for it in its})
        self.vocab = {**VISUAL_VOCAB, "knowledge": items}

    @classmethod
    def from_project(cls, root: str | Path = ".", llm_path: str | Path | None = None,
                     tau: float | None = None) -> "ExplorerState":
        """The state of a project folder laid out as the DVC pipeline writes it.

        ``params.yaml`` gives the LLM path, tau and decoding settings; the arguments override
        it.  Missing outputs and an invalid params.yaml (which turns live narration off)
        become notes.
        """
        root = Path(root)
        notes: dict[str, str] = {}
        settings = None
        if (root / "params.yaml").is_file():   # without one, live narration says why when asked
            try:
                settings = Settings.load(root / "params.yaml")
            except ValueError as err:
                notes["params"] = f"{err}; live narration is off until params.yaml is valid"
        if llm_path is None and settings is not None:   # params.yaml paths are relative to the project root
            llm = Path(settings["llm"]["path"])
            llm_path = llm if llm.is_absolute() else root / llm
        try:
            videos, _ = load_dataset(root / DATASET)
        except (FileNotFoundError, ValueError) as err:
            videos = []
            notes["dataset"] = str(err)
        narrations = metrics = None
        try:
            narrations = read_narrations(root / NARRATIONS)
        except (FileNotFoundError, ValueError) as err:
            notes["narrations"] = str(err)
        try:
            metrics = read_metrics(root / METRICS)
        except (FileNotFoundError, ValueError):
            metrics = None                       # the summary says so; narrations.json's note covers the cause
        return cls(videos, (root / DATASET).parent, root / FEATURES, narrations, metrics,
                   model_dir=root / MODEL, settings=settings, llm_path=llm_path, tau=tau, notes=notes)

    # -- the current clip ------------------------------------------------------------------

    @property
    def video(self) -> Video:
        return self._by_id[self.video_id]

    @property
    def clip(self) -> Clip:
        return self.video.clips[self.clip_index]

    @property
    def n_clips(self) -> int:
        return len(self.video.clips) if self.videos else 1

    def set_video(self, video_id: str) -> None:
        """Show ``video_id`` from its first clip (choosing the shown video again changes nothing)."""
        if video_id not in self._by_id:
            raise ValueError(f"unknown video id {video_id!r}; known: {', '.join(self._by_id)}")
        if video_id != self.video_id:
            self.video_id, self.clip_index = video_id, 0

    def set_clip(self, index: int) -> None:
        """Show clip ``index`` (0-based)."""
        if not 0 <= index < self.n_clips:
            raise ValueError(f"clip index {index} out of range: the video has {self.n_clips} clips (0-based)")
        self.clip_index = index

    def next(self) -> bool:
        """One clip on, not past the last; True when it moved."""
        if self.clip_index + 1 < self.n_clips:
            self.clip_index += 1
            return True
        return False

    def previous(self) -> bool:
        """One clip back, not before the first; True when it moved."""
        if self.clip_index > 0:
            self.clip_index -= 1
            return True
        return False

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown storyline mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode

    def set_tau(self, tau: float) -> None:
        """Clamped to [TAU_MIN, TAU_MAX] as the slider is; rounded so cache keys match."""
        self.tau = round(min(max(float(tau), TAU_MIN), TAU_MAX), 4)

    # -- notes (what the warning box says) -------------------------------------------------

    def set_note(self, topic: str, text: str | None) -> None:
        if text is None:
            self.notes.pop(topic, None)
        else:
            self.notes[topic] = text

    # -- frames and compression ------------------------------------------------------------

    def frame_image(self, path: Path, dimmed: bool) -> tuple[bytes, str]:
        """(bytes, format) of a frame file, dimmed for a dropped frame; OSError when unreadable."""
        key = (path, dimmed)
        if key not in self._image_cache:
            if dimmed:
                data, _ = self.frame_image(path, False)
                self._image_cache[key] = (dim_image(data), "png")
            else:
                fmt = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix.lower().lstrip(".")
                self._image_cache[key] = (path.read_bytes(), fmt)
        return self._image_cache[key]

    def pooled_features(self, video: Video) -> list[torch.Tensor] | None:
        """Per clip (F, D) pooled embeddings, read once per video (tokens are not kept: they are large).

        None when the features cannot be read; the "features" note then says why."""
        if video.id not in self._pooled:
            try:
                per_clip = load_video_features(self.features_dir, video, dtype=None)
                self._pooled[video.id] = [c["pooled"] for c in per_clip]
            except (FileNotFoundError, ValueError, OSError) as err:
                self._pooled[video.id] = None
                self._features_error[video.id] = f"frame compression not shown: {err}"
        self.set_note("features", self._features_error.get(video.id))
        return self._pooled[video.id]

    def kept_frames(self, video: Video | None = None, tau: float | None = None) -> list[list[int]] | None:
        """Per clip, the frames compression keeps at ``tau`` (None: features missing); cached."""
        video, tau = video or self.video, self.tau if tau is None else tau
        pooled = self.pooled_features(video)     # cached too; asked every time so the note is about this video
        if pooled is None:
            return None
        key = (video.id, round(tau, 4))
        if key not in self._kept:
            self._kept[key] = [compress_frames(p, tau) for p in pooled]
        return self._kept[key]

    def frames(self) -> list[Frame]:
        """The current clip's frames, each marked kept or dropped at the current tau."""
        c = self.clip
        kept_all = self.kept_frames()
        kept = set(kept_all[c.index]) if kept_all is not None else None
        return [Frame(self.frames_root / rel, c.start + k + 0.5, None if kept is None else k not in kept)
                for k, rel in enumerate(c.frames)]

    # -- narrations and their checks -------------------------------------------------------

    def visible_facts(self) -> list[str]:
        """The synthetic visible facts the current clip's frames show (none on real data)."""
        return [a for a in VISIBLE if a in self.clip.truth]

    def narration_rows(self) -> list[NarrationRow]:
        """The reference, then every system that narrated the current clip in the current mode,
        then the live narration (when there is one for this video and mode)."""
        c = self.clip
        sources: list[tuple[str, dict[str, Any]]] = [("reference", {"text": c.narration, "labels": c.labels})]
        for system, modes in self.narrations.items():
            clips = modes.get(self.mode, {}).get(self.video_id) if isinstance(modes, dict) else None
            if isinstance(clips, list) and self.clip_index < len(clips):
                sources.append((system, clips[self.clip_index]))
        live = self.live.get((self.video_id, self.mode))
        if live is not None:
            o = live.outputs[self.clip_index]
            sources.append((f"live (trained model, τ={live.tau:.2f})", {"text": o.text, "labels": o.labels}))
        facts = bool(self.visible_facts())
        rows = []
        for k, (name, d) in enumerate(sources):
            text, labels = str(d.get("text") or ""), d.get("labels")
            rows.append(NarrationRow(name, text, labels, text_length(text, self.video.language),
                                     None if k == 0 else bool(labels) and set(labels) == set(c.labels),
                                     fact_status(text, c.truth, self.vocab) if facts else {}))
        return rows

    def summary_metrics(self) -> list[str]:
        """The summary metrics that some system in metrics.json has, in SUMMARY_METRICS order."""
        return [m for m in SUMMARY_METRICS if any(m in s for s in (self.metrics or {}).values())]

    # -- live generation -------------------------------------------------------------------

    def load_model(self, on_status: Callable[[str], None] | None = None):
        """The trained narrator, loaded once; a clear FileNotFoundError when something is missing."""
        if self.model is None:
            if not (self.model_dir / "config.json").is_file():
                raise FileNotFoundError(f"no trained model at {self.model_dir} (config.json missing); "
                                        f"train it with `dvc repro train`")
            if self.settings is None:
                raise FileNotFoundError("no valid params.yaml: live narration needs its llm and evaluate settings")
            if not Path(self.llm_path).is_dir():
                raise FileNotFoundError(f"base LLM folder {self.llm_path} does not exist (params.yaml llm.path); "
                                        f"make it with `dvc repro base_llm`")
            if on_status is not None:
                on_status("loading the trained model…")
            self.model = self.settings.narrator(self.model_dir, llm_path=self.llm_path)
        return self.model

    def regenerate(self, on_clip: Callable[[int, ClipOutput], None] | None = None,
                   on_status: Callable[[str], None] | None = None) -> LiveResult:
        """Narrate the current video with the trained model at the current mode and tau; the
        result is kept (a "live" narration row).  Raises what went wrong."""
        from ..dataset import visual_inputs

        video, mode, tau = self.video, self.mode, self.tau
        model = self.load_model(on_status)
        if on_status is not None:
            on_status(f"narrating {len(video.clips)} clips ({mode} storyline, τ={tau:.2f})…")
        visual = visual_inputs(video, self.features_dir, tau) if model.visual is not None else None
        result = LiveResult(mode, tau, narrate_live(model, video, visual, replace(self.gen, mode=mode), on_clip))
        self.live[(video.id, mode)] = result
        return result
