"""An ipywidgets explorer of clip narrations, for people exploring them clip by clip.

Pick a video, step through its clips and see, per clip: the 1-fps frames (those
that frame compression drops at the current tau are dimmed and captioned), the
product knowledge, the label(s) and word window, the reference narration and
every evaluated system's narration (``reports/narrations.json``) with per-clip
checks -- length against the window, the predicted label (generated-storyline
mode) and, on synthetic data, whether the visible facts (colour, shape, action)
are stated correctly.  A button narrates the current video live with the
trained model (``models/videonarrator``) at the current mode and tau.

Usage in JupyterLab or Voila, from the project root::

    from videonarrator.widgets import NarrationExplorer
    NarrationExplorer.from_project(".")

Everything expensive is cached: frame bytes per file, pooled frame features per
video, kept-frame indices per (video, tau) and the model (loaded once, lazily).
A missing file never raises into the notebook: the warning box at the top
names the file and the command that makes it.
"""
from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets
import torch

from .compression import compress_frames
from .config import Settings
from .features import load_video_features
from .generate import ClipOutput, GenerationConfig
from .io import read_json
from .labels import LABEL_EN
from .metrics import mentions
from .schema import Clip, Video, load_dataset, text_length

DATASET = "data/processed/dataset.json"     # frames are relative to its folder
FEATURES = "data/features"
MODEL = "models/videonarrator"
NARRATIONS = "reports/narrations.json"
METRICS = "reports/metrics.json"
SUMMARY_METRICS = ("CIDEr", "ROUGE-L", "sync_in_window", "label_acc", "visual_attr_acc", "hallucination_rate")
SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}   # test videos first: those the systems narrated
VISIBLE = ("colour", "shape", "action", "setting")   # the synthetic visible facts (data.synthetic.VISUAL_ATTRS)
FRAME_WIDTH = "96px"
TAU_MIN, TAU_MAX = 0.5, 1.0
CODE_RE = re.compile(r"`([^`]+)`")

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


def length_cell(n: int, window: tuple[int, int], unit: str) -> str:
    lo, hi = window
    if lo <= n <= hi:
        return f"<span style='color:#1a7f37'>{n} {unit} ✓ in {lo}–{hi}</span>"
    off = n - hi if n > hi else n - lo
    return f"<span style='color:#b42318'>{n} {unit} ✗ out of {lo}–{hi} ({off:+d})</span>"


def narrate_live(model, video: Video, visual, cfg: GenerationConfig,
                 on_clip: Callable[[int, ClipOutput], None] | None = None) -> list[ClipOutput]:
    """Narrate one video clip by clip (:func:`generate.narrate_videos`), calling
    ``on_clip(i, output)`` after each clip so a progress bar can move."""
    from .generate import narrate_videos

    callback = (lambda _vid, i, out: on_clip(i, out)) if on_clip is not None else None
    return narrate_videos(model, [video], {video.id: visual}, replace(cfg, batch_size=1),
                          progress=False, on_clip=callback)[video.id]


@dataclass
class LiveResult:
    """A live narration of one video by the trained model."""
    mode: str
    tau: float
    outputs: list[ClipOutput]


def _close_tree(w: widgets.Widget) -> None:
    """Close a widget and its children (re-drawn frames must not pile up as live comms)."""
    for child in getattr(w, "children", ()):
        _close_tree(child)
    w.close()


def _warning_box(lines: list[str]) -> str:
    # `command` in a message becomes <code>command</code> (messages are HTML-escaped before they get here)
    items = "".join("<li>" + CODE_RE.sub(r"<code>\1</code>", line) + "</li>" for line in lines)
    return ("<div style='background:#fff4e5;border-left:4px solid #b54708;padding:6px 10px;margin:4px 0'>"
            f"<ul style='margin:0;padding-left:18px'>{items}</ul></div>")


# -- the explorer -----------------------------------------------------------------------------

class NarrationExplorer:
    """Browse videos clip by clip; see frames, knowledge, references, system narrations and checks.

    State for code and tests: :attr:`video_id`, :attr:`clip_index`, :attr:`mode`,
    :attr:`tau`, :meth:`next`, :meth:`previous`, :meth:`set_video`, :meth:`set_tau`,
    :meth:`set_mode`, :meth:`regenerate`; what is shown: ``clip_html``, ``frames_box``,
    ``knowledge_html``, ``narration_html``, ``summary_html``, ``message`` (warnings),
    ``progress`` and ``progress_label``.  Display the explorer itself (or ``.widget``).
    """

    def __init__(self, videos: list[Video], frames_root: str | Path, features_dir: str | Path,
                 narrations: StoredNarrations | None = None, metrics: dict[str, dict[str, float]] | None = None,
                 model_dir: str | Path = MODEL, settings: Settings | None = None,
                 llm_path: str | Path | None = None, tau: float | None = None,
                 notes: dict[str, str] | None = None):
        # settings (params.yaml) give the LLM, decoding and tau; without them live narration is off
        # and the slider starts at TAU_MAX (every frame kept)
        self.videos = ordered_videos(videos)
        self._by_id = {v.id: v for v in self.videos}
        self.frames_root, self.features_dir = Path(frames_root), Path(features_dir)
        self.narrations = narrations or {}
        self.metrics = metrics
        self.model_dir, self.settings = Path(model_dir), settings
        self.llm_path = llm_path if llm_path is not None else (settings["llm"]["path"] if settings else None)
        self.gen = settings.generation() if settings else None
        if tau is None:
            tau = settings.tau() if settings else TAU_MAX
        self._notes: dict[str, str] = dict(notes or {})   # topic -> warning (HTML-safe)
        # caches: nothing expensive is recomputed on a redraw
        self._image_cache: dict[tuple[Path, bool], tuple[bytes, str]] = {}
        self._pooled: dict[str, list[torch.Tensor] | None] = {}        # video id -> per clip (F, D), None: missing
        self._features_error: dict[str, str] = {}                        # video id -> why its features are missing
        self._kept: dict[tuple[str, float], list[list[int]]] = {}
        self._model = None
        self._live: dict[tuple[str, str], LiveResult] = {}
        # the vocabulary of stated facts: visible phrases plus every knowledge item (they claim their
        # spans, so "green tea extract" is an ingredient, not the colour green), as the evaluation does
        from .data.synthetic import VISUAL_VOCAB
        items = sorted({it for v in self.videos for its in v.product.knowledge.values() for it in its})
        self._vocab = {**VISUAL_VOCAB, "knowledge": items}
        self._building = True
        self._build_widgets(tau)
        self._building = False
        if self.videos:
            self._on_video()
        else:
            self._show_notes()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_project(cls, root: str | Path = ".", llm_path: str | Path | None = None,
                     tau: float | None = None) -> "NarrationExplorer":
        """The explorer on a project folder laid out as the DVC pipeline writes it.

        ``params.yaml`` gives the LLM path, tau and decoding settings; the
        arguments override it.  Missing outputs and an invalid params.yaml (which
        turns live narration off) become warnings in the UI.
        """
        root = Path(root)
        notes: dict[str, str] = {}
        settings = None
        if (root / "params.yaml").is_file():   # without one, live narration says why when asked
            try:
                settings = Settings.load(root / "params.yaml")
            except ValueError as err:
                notes["params"] = html.escape(f"{err}; live narration is off until params.yaml is valid")
        if llm_path is None and settings is not None:   # params.yaml paths are relative to the project root
            llm = Path(settings["llm"]["path"])
            llm_path = llm if llm.is_absolute() else root / llm
        try:
            videos, _ = load_dataset(root / DATASET)
        except (FileNotFoundError, ValueError) as err:
            videos = []
            notes["dataset"] = html.escape(str(err))
        narrations = metrics = None
        try:
            narrations = read_narrations(root / NARRATIONS)
        except (FileNotFoundError, ValueError) as err:
            notes["narrations"] = html.escape(str(err))
        try:
            metrics = read_metrics(root / METRICS)
        except (FileNotFoundError, ValueError):
            metrics = None                       # the summary says so; narrations.json's note covers the cause
        return cls(videos, (root / DATASET).parent, root / FEATURES, narrations, metrics,
                   model_dir=root / MODEL, settings=settings, llm_path=llm_path,
                   tau=None if tau is None else min(max(tau, TAU_MIN), TAU_MAX), notes=notes)

    def _build_widgets(self, tau: float) -> None:
        W = widgets
        self.title = W.HTML("<h3 style='margin:4px 0'>VideoNarrator · clip narrations</h3>")
        self.video_dropdown = W.Dropdown(options=[(video_label(v), v.id) for v in self.videos],
                                         description="video", layout=W.Layout(width="460px"))
        self.mode_buttons = W.ToggleButtons(options=[("given", "given"), ("generated", "generated")],
                                            value="given", tooltips=["labels from the data",
                                                                     "the model predicts each clip's label"],
                                            style={"button_width": "150px"})
        self.prev_button = W.Button(description="Previous", icon="arrow-left", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="Next", icon="arrow-right", layout=W.Layout(width="110px"))
        self.clip_slider = W.IntSlider(value=1, min=1, max=1, description="clip", continuous_update=False)
        self.tau_slider = W.FloatSlider(value=tau, min=TAU_MIN, max=TAU_MAX, step=0.01, description="τ",
                                        readout_format=".2f", continuous_update=False)
        self.regen_button = W.Button(description="Regenerate with the trained model", icon="play",
                                     button_style="primary", layout=W.Layout(width="300px"))
        self.progress = W.IntProgress(value=0, min=0, max=1, description="live", layout=W.Layout(width="300px"))
        self.progress_label = W.Label("")
        self.message = W.HTML("")
        self.clip_html = W.HTML("")
        self.frames_box = W.HBox([], layout=W.Layout(flex_flow="row wrap"))
        self.knowledge_html = W.HTML("")
        self.narration_html = W.HTML("")
        self.summary_html = W.HTML("")
        for w, cls in ((self.narration_html, "vn-narration"), (self.next_button, "vn-next"),
                       (self.prev_button, "vn-previous"), (self.message, "vn-message"),
                       (self.clip_html, "vn-clip"), (self.regen_button, "vn-regenerate")):
            w.add_class(cls)                     # stable hooks for the browser test and user CSS

        self.video_dropdown.observe(lambda _: self._on_video(), names="value")
        self.clip_slider.observe(lambda _: self._on_clip(), names="value")
        self.mode_buttons.observe(lambda _: self._render_narrations(), names="value")
        self.tau_slider.observe(lambda _: self._render_frames(), names="value")
        self.prev_button.on_click(lambda _: self.previous())
        self.next_button.on_click(lambda _: self.next())
        self.regen_button.on_click(lambda _: self.regenerate())

        self.widget = W.VBox([
            self.title,
            W.HBox([self.video_dropdown, W.Label("storyline mode", layout=W.Layout(margin="0 8px 0 24px")),
                    self.mode_buttons], layout=W.Layout(align_items="center")),
            W.HBox([self.prev_button, self.clip_slider, self.next_button, self.tau_slider],
                   layout=W.Layout(align_items="center")),
            self.message,
            self.clip_html,
            self.frames_box,
            W.HBox([self.knowledge_html], layout=W.Layout(margin="4px 0")),
            self.narration_html,
            W.HBox([self.regen_button, self.progress, self.progress_label]),
            self.summary_html,
        ])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- state -------------------------------------------------------------------------------

    @property
    def video(self) -> Video:
        return self._by_id[self.video_dropdown.value]

    @property
    def video_id(self) -> str:
        return self.video_dropdown.value

    @property
    def clip_index(self) -> int:
        """0-based index of the shown clip (the slider shows it 1-based)."""
        return self.clip_slider.value - 1

    @property
    def clip(self) -> Clip:
        return self.video.clips[self.clip_index]

    @property
    def mode(self) -> str:
        return self.mode_buttons.value

    @property
    def tau(self) -> float:
        return round(float(self.tau_slider.value), 4)

    def set_video(self, video_id: str) -> None:
        if video_id not in self._by_id:
            raise ValueError(f"unknown video id {video_id!r}; known: {', '.join(self._by_id)}")
        self.video_dropdown.value = video_id

    def set_clip(self, index: int) -> None:
        """Show clip ``index`` (0-based)."""
        self.clip_slider.value = index + 1

    def next(self) -> None:
        if self.clip_slider.value < self.clip_slider.max:
            self.clip_slider.value += 1

    def previous(self) -> None:
        if self.clip_slider.value > self.clip_slider.min:
            self.clip_slider.value -= 1

    def set_tau(self, tau: float) -> None:
        self.tau_slider.value = tau

    def set_mode(self, mode: str) -> None:
        self.mode_buttons.value = mode

    # -- events ------------------------------------------------------------------------------

    def _on_video(self) -> None:
        if self._building or not self.videos:
            return
        self._building = True                  # one redraw, not one per slider change
        try:
            n = len(self.video.clips)
            self.clip_slider.value = 1
            self.clip_slider.max = n
            self.clip_slider.disabled = n == 1
        finally:
            self._building = False
        live = [k for k in self._live if k[0] == self.video_id]
        self.progress.value = 0
        self.progress_label.value = "live narration shown below" if live else ""
        self._render()

    def _on_clip(self) -> None:
        if not self._building:
            self._render()

    def _render(self) -> None:
        self._render_nav()
        self._render_clip_info()
        self._render_knowledge()
        self._render_frames()
        self._render_narrations()
        self._render_summary()

    def _set_note(self, topic: str, text: str | None) -> None:
        if text is None:
            self._notes.pop(topic, None)
        else:
            self._notes[topic] = text
        self._show_notes()

    def _show_notes(self) -> None:
        self.message.value = _warning_box(list(self._notes.values())) if self._notes else ""

    # -- drawing -------------------------------------------------------------------------------

    def _render_nav(self) -> None:
        self.prev_button.disabled = self.clip_slider.value <= self.clip_slider.min
        self.next_button.disabled = self.clip_slider.value >= self.clip_slider.max

    def _render_clip_info(self) -> None:
        v, c = self.video, self.clip
        unit = "words" if v.language == "en" else "characters"
        labels = " + ".join(LABEL_EN[k] for k in c.labels)
        lines = [f"<b>clip {c.index + 1} / {len(v.clips)}</b> · {c.start:.1f}–{c.end:.1f} s "
                 f"({c.duration:.1f} s) · label: <b>{html.escape(labels)}</b> · "
                 f"word window: <b>{c.window[0]}–{c.window[1]} {unit}</b>"]
        facts = [a for a in VISIBLE if a in c.truth]
        if facts:
            shown = ", ".join(f"{a} <b>{html.escape(str(c.truth[a]))}</b>" for a in facts)
            stated = ", ".join(c.truth.get("stated", [])) or "none"
            lines.append(f"visible in the frames (not in the text inputs): {shown} · "
                         f"the reference states: {html.escape(stated)}")
        self.clip_html.value = "<br>".join(lines)

    def _render_knowledge(self) -> None:
        v = self.video
        rows = "".join(f"<tr><td style='padding-right:8px'><i>{html.escape(f)}</i></td>"
                       f"<td>{html.escape('; '.join(items))}</td></tr>" for f, items in v.product.knowledge.items())
        self.knowledge_html.value = (f"<b>{html.escape(v.product.name)}</b> — product knowledge"
                                     f"<table style='font-size:90%'>{rows}</table>")

    def _frame_image(self, path: Path, dimmed: bool) -> tuple[bytes, str]:
        key = (path, dimmed)
        if key not in self._image_cache:
            if dimmed:
                data, _ = self._frame_image(path, False)
                self._image_cache[key] = (dim_image(data), "png")
            else:
                fmt = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else path.suffix.lower().lstrip(".")
                self._image_cache[key] = (path.read_bytes(), fmt)
        return self._image_cache[key]

    def _pooled_features(self, video: Video) -> list[torch.Tensor] | None:
        """Per clip (F, D) pooled embeddings, read once per video (tokens are not kept: they are large).

        None when the features cannot be read; the warning box then says why."""
        if video.id not in self._pooled:
            try:
                per_clip = load_video_features(self.features_dir, video, dtype=None)
                self._pooled[video.id] = [c["pooled"] for c in per_clip]
            except (FileNotFoundError, ValueError, OSError) as err:
                self._pooled[video.id] = None
                self._features_error[video.id] = "frame compression not shown: " + html.escape(str(err))
        self._set_note("features", self._features_error.get(video.id))
        return self._pooled[video.id]

    def kept_frames(self, video: Video | None = None, tau: float | None = None) -> list[list[int]] | None:
        """Per clip, the frames compression keeps at ``tau`` (None: features missing); cached."""
        video, tau = video or self.video, self.tau if tau is None else tau
        key = (video.id, round(tau, 4))
        if key not in self._kept:
            pooled = self._pooled_features(video)
            if pooled is None:
                return None
            self._kept[key] = [compress_frames(p, tau) for p in pooled]
        return self._kept[key]

    def _render_frames(self) -> None:
        if self._building:
            return
        v, c = self.video, self.clip
        kept_all = self.kept_frames(v)
        kept = set(kept_all[c.index]) if kept_all is not None else set(range(len(c.frames)))
        missing = []
        children = []
        for k, rel in enumerate(c.frames):
            path = self.frames_root / rel
            dropped = kept_all is not None and k not in kept
            when = f"{c.start + k + 0.5:.1f} s"
            caption = (f"<span style='color:#b42318'>{when} · dropped at τ={self.tau:.2f}</span>" if dropped
                       else f"<span style='color:#1a7f37'>{when} · kept</span>" if kept_all is not None
                       else when)
            try:
                data, fmt = self._frame_image(path, dropped)
                picture = widgets.Image(value=data, format=fmt, layout=widgets.Layout(width=FRAME_WIDTH))
            except (OSError, ValueError):
                missing.append(path)
                picture = widgets.HTML(f"<div style='width:{FRAME_WIDTH};height:{FRAME_WIDTH};background:#eee;"
                                       f"font-size:80%;text-align:center'>missing frame</div>")
            border = "2px dashed #b42318" if dropped else "2px solid #1a7f37" if kept_all is not None else "none"
            children.append(widgets.VBox([picture, widgets.HTML(f"<small>{caption}</small>")],
                                         layout=widgets.Layout(border=border, margin="2px", padding="2px")))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            self._set_note("frames", html.escape(f"frame file {missing[0]} does not exist{more}; make the "
                                                 f"frames with `dvc repro prepare`"))
        else:
            self._set_note("frames", None)
        old = self.frames_box.children
        header = widgets.HTML(f"<small>{len(kept)} of {len(c.frames)} frames kept at τ={self.tau:.2f}</small>"
                              if kept_all is not None else "<small>1-fps frames</small>",
                              layout=widgets.Layout(width="100%"))
        self.frames_box.children = [header, *children]
        for w in old:
            _close_tree(w)

    def frame_captions(self) -> list[str]:
        """The caption shown under each frame of the current clip (tests read these)."""
        return [box.children[1].value for box in self.frames_box.children[1:]]

    def _system_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(system name, clip dict) of every system that narrated the current clip in the current mode."""
        rows = []
        for system, modes in self.narrations.items():
            clips = modes.get(self.mode, {}).get(self.video_id) if isinstance(modes, dict) else None
            if isinstance(clips, list) and self.clip_index < len(clips):
                rows.append((system, clips[self.clip_index]))
        live = self._live.get((self.video_id, self.mode))
        if live is not None:
            o = live.outputs[self.clip_index]
            rows.append((f"live (trained model, τ={live.tau:.2f})", {"text": o.text, "labels": o.labels}))
        return rows

    def _render_narrations(self) -> None:
        if self._building or not self.videos:
            return
        v, c = self.video, self.clip
        unit = "words" if v.language == "en" else "chars"
        generated = self.mode == "generated"
        facts = any(a in c.truth for a in VISIBLE)
        head = ["system"] + (["label"] if generated else []) + ["narration", "length vs window"]
        head += ["visible facts"] if facts else []
        rows = [("reference", {"text": c.narration, "labels": c.labels})] + self._system_rows()
        body = []
        for name, d in rows:
            text = str(d.get("text") or "")
            cells = [f"<b>{html.escape(name)}</b>"]
            if generated:
                pred = d.get("labels")
                if name == "reference":
                    cells.append(html.escape(" + ".join(LABEL_EN.get(k, k) for k in c.labels)))
                elif not pred:
                    cells.append("<span style='color:#b42318'>✗ no label parsed</span>")
                else:
                    ok = set(pred) == set(c.labels)
                    names = html.escape(" + ".join(LABEL_EN.get(k, k) for k in pred))
                    cells.append(f"<span style='color:{'#1a7f37' if ok else '#b42318'}'>"
                                 f"{'✓' if ok else '✗'} {names}</span>")
            cells.append(html.escape(text) if text else "<i style='color:#888'>(empty)</i>")
            cells.append(length_cell(text_length(text, v.language), c.window, unit))
            if facts:
                status = fact_status(text, c.truth, self._vocab)
                marks = {"ok": ("✓", "#1a7f37"), "wrong": ("✗", "#b42318"), "absent": ("–", "#888")}
                parts = []
                for attr, s in status.items():
                    sign, colour = marks[s]
                    parts.append(f"<span style='color:{colour}' title='{attr}: {s}'>{sign} {attr}</span>")
                cells.append(" ".join(parts))
            body.append("<tr>" + "".join(f"<td style='padding:2px 8px;vertical-align:top'>{x}</td>"
                                         for x in cells) + "</tr>")
        th = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in head)
        legend = ("<small>visible facts: ✓ stated correctly · ✗ states another value · – not stated</small>"
                  if facts else "")
        self.narration_html.value = (f"<table style='border-collapse:collapse'><tr>{th}</tr>{''.join(body)}"
                                     f"</table>{legend}")

    def _render_summary(self) -> None:
        if not self.metrics:
            self.summary_html.value = "<small>reports/metrics.json not found: no test-split summary.</small>"
            return
        names = [m for m in SUMMARY_METRICS if any(m in s for s in self.metrics.values())]
        th = "".join(f"<th style='padding:2px 8px'>{html.escape(m)}</th>" for m in names)
        rows = "".join(
            f"<tr><td style='padding:2px 8px'>{html.escape(s)}</td>"
            + "".join(f"<td style='padding:2px 8px'>{m[n]:.3f}</td>" if isinstance(m.get(n), (int, float))
                      else "<td></td>" for n in names) + "</tr>"
            for s, m in self.metrics.items() if isinstance(m, dict))
        self.summary_html.value = (f"<details><summary>test-split metrics per system</summary>"
                                   f"<table><tr><th></th>{th}</tr>{rows}</table></details>")

    # -- live generation ------------------------------------------------------------------

    def _load_model(self):
        """The trained narrator, loaded once; a clear FileNotFoundError when something is missing."""
        if self._model is None:
            from .model import VideoNarrator

            if not (self.model_dir / "config.json").is_file():
                raise FileNotFoundError(f"no trained model at {self.model_dir} (config.json missing); "
                                        f"train it with `dvc repro train`")
            if self.settings is None:
                raise FileNotFoundError("no valid params.yaml: live narration needs its llm and evaluate settings")
            if not Path(self.llm_path).is_dir():
                raise FileNotFoundError(f"base LLM folder {self.llm_path} does not exist (params.yaml llm.path); "
                                        f"make it with `dvc repro base_llm`")
            self.progress_label.value = "loading the trained model…"
            self._model = VideoNarrator.from_pretrained(self.model_dir, self.llm_path,
                                                        trust_remote_code=self.settings["llm"]["trust_remote_code"])
        return self._model

    def regenerate(self) -> LiveResult | None:
        """Narrate the current video with the trained model at the current mode and tau.

        Returns the result (also shown as a "live" row), or None after showing why it failed.
        """
        from .dataset import visual_inputs

        if not self.videos:
            return None                          # the warning box already says the dataset is missing
        video, mode, tau = self.video, self.mode, self.tau
        self.progress.max, self.progress.value = len(video.clips), 0
        self.regen_button.disabled = True

        def on_clip(i: int, _: ClipOutput) -> None:
            self.progress.value = i + 1
            self.progress_label.value = f"narrated clip {i + 1} of {len(video.clips)}"

        try:
            model = self._load_model()
            self.progress_label.value = f"narrating {len(video.clips)} clips ({mode} storyline, τ={tau:.2f})…"
            visual = visual_inputs(video, self.features_dir, tau) if model.visual is not None else None
            outputs = narrate_live(model, video, visual, replace(self.gen, mode=mode), on_clip)
        except Exception as err:  # a UI callback: show every failure in the page, never a traceback
            self.progress_label.value = "not regenerated (see the message above)"
            why = str(err) if isinstance(err, FileNotFoundError) else f"{type(err).__name__}: {err}"
            self._set_note("live", html.escape(f"Regenerate with the trained model: {why}"))
            return None
        finally:
            self.regen_button.disabled = False
        result = LiveResult(mode, tau, outputs)
        self._live[(video.id, mode)] = result
        self._set_note("live", None)
        self.progress_label.value = f"done: {len(outputs)} clips narrated live ({mode} storyline, τ={tau:.2f})"
        self._render_narrations()
        return result
