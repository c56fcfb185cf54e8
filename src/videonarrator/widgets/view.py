"""The ipywidgets face of the explorer: the layout, the HTML it draws and the events it wires.

Everything it shows comes from an :class:`~.state.ExplorerState`; a widget event updates the
state first, then redraws what depends on it.  The public methods (``next``, ``set_tau``, ...)
move the widgets as a user would, so code, tests and clicks take one path.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import ipywidgets as widgets

from ..config import Settings
from ..labels import LABEL_EN
from ..schema import Clip, Video
from .state import (MODEL, TAU_MAX, TAU_MIN, ExplorerState, LiveResult, NarrationRow, StoredNarrations,
                    video_label)

FRAME_WIDTH = "96px"
CODE_RE = re.compile(r"`([^`]+)`")
OK, BAD, GREY = "#1a7f37", "#b42318", "#888"
FACT_MARKS = {"ok": ("✓", OK), "wrong": ("✗", BAD), "absent": ("–", GREY)}


# -- HTML pieces ----------------------------------------------------------------------------

def length_cell(n: int, window: tuple[int, int], unit: str) -> str:
    lo, hi = window
    if lo <= n <= hi:
        return f"<span style='color:{OK}'>{n} {unit} ✓ in {lo}–{hi}</span>"
    off = n - hi if n > hi else n - lo
    return f"<span style='color:{BAD}'>{n} {unit} ✗ out of {lo}–{hi} ({off:+d})</span>"


def warning_box(lines: list[str]) -> str:
    """The notes as an HTML list; `command` in a note becomes <code>command</code>."""
    items = "".join("<li>" + CODE_RE.sub(r"<code>\1</code>", html.escape(line)) + "</li>" for line in lines)
    return ("<div style='background:#fff4e5;border-left:4px solid #b54708;padding:6px 10px;margin:4px 0'>"
            f"<ul style='margin:0;padding-left:18px'>{items}</ul></div>")


def clip_info_html(video: Video, clip: Clip, facts: list[str]) -> str:
    unit = "words" if video.language == "en" else "characters"
    labels = " + ".join(LABEL_EN[k] for k in clip.labels)
    lines = [f"<b>clip {clip.index + 1} / {len(video.clips)}</b> · {clip.start:.1f}–{clip.end:.1f} s "
             f"({clip.duration:.1f} s) · label: <b>{html.escape(labels)}</b> · "
             f"word window: <b>{clip.window[0]}–{clip.window[1]} {unit}</b>"]
    if facts:
        shown = ", ".join(f"{a} <b>{html.escape(str(clip.truth[a]))}</b>" for a in facts)
        stated = ", ".join(clip.truth.get("stated", [])) or "none"
        lines.append(f"visible in the frames (not in the text inputs): {shown} · "
                     f"the reference states: {html.escape(stated)}")
    return "<br>".join(lines)


def knowledge_html(video: Video) -> str:
    rows = "".join(f"<tr><td style='padding-right:8px'><i>{html.escape(f)}</i></td>"
                   f"<td>{html.escape('; '.join(items))}</td></tr>" for f, items in video.product.knowledge.items())
    return (f"<b>{html.escape(video.product.name)}</b> — product knowledge"
            f"<table style='font-size:90%'>{rows}</table>")


def _label_cell(row: NarrationRow) -> str:
    if row.label_ok is None:                              # the reference: its own labels
        return html.escape(" + ".join(LABEL_EN.get(k, k) for k in row.labels))
    if not row.labels:
        return f"<span style='color:{BAD}'>✗ no label parsed</span>"
    names = html.escape(" + ".join(LABEL_EN.get(k, k) for k in row.labels))
    return f"<span style='color:{OK if row.label_ok else BAD}'>{'✓' if row.label_ok else '✗'} {names}</span>"


def narrations_html(rows: list[NarrationRow], window: tuple[int, int], unit: str, generated: bool,
                    facts: bool) -> str:
    """The table of narrations of one clip with their checks (the label column in generated mode)."""
    head = ["system"] + (["label"] if generated else []) + ["narration", "length vs window"]
    head += ["visible facts"] if facts else []
    body = []
    for row in rows:
        cells = [f"<b>{html.escape(row.name)}</b>"]
        if generated:
            cells.append(_label_cell(row))
        cells.append(html.escape(row.text) if row.text else f"<i style='color:{GREY}'>(empty)</i>")
        cells.append(length_cell(row.length, window, unit))
        if facts:
            cells.append(" ".join(f"<span style='color:{FACT_MARKS[s][1]}' title='{attr}: {s}'>"
                                  f"{FACT_MARKS[s][0]} {attr}</span>" for attr, s in row.facts.items()))
        body.append("<tr>" + "".join(f"<td style='padding:2px 8px;vertical-align:top'>{x}</td>"
                                     for x in cells) + "</tr>")
    th = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in head)
    legend = ("<small>visible facts: ✓ stated correctly · ✗ states another value · – not stated</small>"
              if facts else "")
    return f"<table style='border-collapse:collapse'><tr>{th}</tr>{''.join(body)}</table>{legend}"


def summary_html(metrics: dict[str, dict[str, float]] | None, names: list[str]) -> str:
    if not metrics:
        return "<small>reports/metrics.json not found: no test-split summary.</small>"
    th = "".join(f"<th style='padding:2px 8px'>{html.escape(m)}</th>" for m in names)
    rows = "".join(
        f"<tr><td style='padding:2px 8px'>{html.escape(s)}</td>"
        + "".join(f"<td style='padding:2px 8px'>{m[n]:.3f}</td>" if isinstance(m.get(n), (int, float))
                  else "<td></td>" for n in names) + "</tr>"
        for s, m in metrics.items() if isinstance(m, dict))
    return (f"<details><summary>test-split metrics per system</summary>"
            f"<table><tr><th></th>{th}</tr>{rows}</table></details>")


def _close_tree(w: widgets.Widget) -> None:
    """Close a widget and its children (re-drawn frames must not pile up as live comms)."""
    for child in getattr(w, "children", ()):
        _close_tree(child)
    w.close()


# -- the explorer -----------------------------------------------------------------------------

class NarrationExplorer:
    """Browse videos clip by clip; see frames, knowledge, references, system narrations and checks.

    State for code and tests: :attr:`state` (an :class:`ExplorerState`) and, read through it,
    :attr:`video_id`, :attr:`clip_index`, :attr:`mode`, :attr:`tau`; actions :meth:`next`,
    :meth:`previous`, :meth:`set_video`, :meth:`set_clip`, :meth:`set_tau`, :meth:`set_mode`,
    :meth:`regenerate`; what is shown: ``clip_html``, ``frames_box``, ``knowledge_html``,
    ``narration_html``, ``summary_html``, ``message`` (warnings), ``progress`` and
    ``progress_label``.  Display the explorer itself (or ``.widget``).
    """

    def __init__(self, videos: list[Video], frames_root: str | Path, features_dir: str | Path,
                 narrations: StoredNarrations | None = None, metrics: dict[str, dict[str, float]] | None = None,
                 model_dir: str | Path = MODEL, settings: Settings | None = None,
                 llm_path: str | Path | None = None, tau: float | None = None,
                 notes: dict[str, str] | None = None, *, state: ExplorerState | None = None):
        # the arguments build the state, or a ready ``state`` is shown as it is
        self.state = state or ExplorerState(videos, frames_root, features_dir, narrations, metrics, model_dir,
                                            settings, llm_path, tau, notes)
        self._building = True
        self._build_widgets()
        self._building = False
        if self.state.videos:
            self._on_video()
        else:
            self._show_notes()

    @classmethod
    def from_project(cls, root: str | Path = ".", llm_path: str | Path | None = None,
                     tau: float | None = None) -> "NarrationExplorer":
        """The explorer on a project folder laid out as the DVC pipeline writes it.

        ``params.yaml`` gives the LLM path, tau and decoding settings; the
        arguments override it.  Missing outputs and an invalid params.yaml (which
        turns live narration off) become warnings in the UI.
        """
        return cls([], "", "", state=ExplorerState.from_project(root, llm_path, tau))   # the state holds the rest

    def _build_widgets(self) -> None:
        W, s = widgets, self.state
        self.title = W.HTML("<h3 style='margin:4px 0'>VideoNarrator · clip narrations</h3>")
        self.video_dropdown = W.Dropdown(options=[(video_label(v), v.id) for v in s.videos],
                                         description="video", layout=W.Layout(width="460px"))
        self.mode_buttons = W.ToggleButtons(options=[("given", "given"), ("generated", "generated")],
                                            value=s.mode, tooltips=["labels from the data",
                                                                    "the model predicts each clip's label"],
                                            style={"button_width": "150px"})
        self.prev_button = W.Button(description="Previous", icon="arrow-left", layout=W.Layout(width="110px"))
        self.next_button = W.Button(description="Next", icon="arrow-right", layout=W.Layout(width="110px"))
        self.clip_slider = W.IntSlider(value=1, min=1, max=1, description="clip", continuous_update=False)
        self.tau_slider = W.FloatSlider(value=s.tau, min=TAU_MIN, max=TAU_MAX, step=0.01, description="τ",
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
        self.mode_buttons.observe(lambda _: self._on_mode(), names="value")
        self.tau_slider.observe(lambda _: self._on_tau(), names="value")
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

    # -- the state, read through ----------------------------------------------------------------

    videos = property(lambda self: self.state.videos)
    video = property(lambda self: self.state.video)
    video_id = property(lambda self: self.state.video_id)
    clip = property(lambda self: self.state.clip)
    clip_index = property(lambda self: self.state.clip_index, doc="0-based index of the shown clip "
                                                                   "(the slider shows it 1-based).")
    mode = property(lambda self: self.state.mode)
    tau = property(lambda self: self.state.tau)
    narrations = property(lambda self: self.state.narrations)
    metrics = property(lambda self: self.state.metrics)
    settings = property(lambda self: self.state.settings)
    gen = property(lambda self: self.state.gen)
    llm_path = property(lambda self: self.state.llm_path)

    # -- actions: they move the widgets, whose events update the state and redraw ----------------

    def set_video(self, video_id: str) -> None:
        self.state.set_video(video_id)           # validates: a clear error for an unknown id
        self.video_dropdown.value = video_id

    def set_clip(self, index: int) -> None:
        """Show clip ``index`` (0-based)."""
        self.clip_slider.value = index + 1

    def next(self) -> None:
        if self.state.videos and self.state.next():
            self.clip_slider.value = self.state.clip_index + 1

    def previous(self) -> None:
        if self.state.videos and self.state.previous():
            self.clip_slider.value = self.state.clip_index + 1

    def set_tau(self, tau: float) -> None:
        self.tau_slider.value = tau

    def set_mode(self, mode: str) -> None:
        self.mode_buttons.value = mode

    def kept_frames(self, video: Video | None = None, tau: float | None = None) -> list[list[int]] | None:
        """Per clip, the frames compression keeps at ``tau`` (None: features missing; the message says why)."""
        kept = self.state.kept_frames(video, tau)
        self._show_notes()
        return kept

    def frame_captions(self) -> list[str]:
        """The caption shown under each frame of the current clip (tests read these)."""
        return [box.children[1].value for box in self.frames_box.children[1:]]

    # -- events ------------------------------------------------------------------------------

    def _on_video(self) -> None:
        if self._building or not self.state.videos:
            return
        self.state.set_video(self.video_dropdown.value)
        self._building = True                  # one redraw, not one per slider change
        try:
            n = self.state.n_clips
            self.clip_slider.value = self.state.clip_index + 1
            self.clip_slider.max = n
            self.clip_slider.disabled = n == 1
        finally:
            self._building = False
        live = [k for k in self.state.live if k[0] == self.state.video_id]
        self.progress.value = 0
        self.progress_label.value = "live narration shown below" if live else ""
        self._render()

    def _on_clip(self) -> None:
        if not self._building:
            self.state.set_clip(self.clip_slider.value - 1)
            self._render()

    def _on_mode(self) -> None:
        self.state.set_mode(self.mode_buttons.value)
        self._render_narrations()

    def _on_tau(self) -> None:
        self.state.set_tau(self.tau_slider.value)
        self._render_frames()

    # -- drawing -------------------------------------------------------------------------------

    def _render(self) -> None:
        s = self.state
        self.prev_button.disabled = self.clip_slider.value <= self.clip_slider.min
        self.next_button.disabled = self.clip_slider.value >= self.clip_slider.max
        self.clip_html.value = clip_info_html(s.video, s.clip, s.visible_facts())
        self.knowledge_html.value = knowledge_html(s.video)
        self._render_frames()
        self._render_narrations()
        self.summary_html.value = summary_html(s.metrics, s.summary_metrics())

    def _show_notes(self) -> None:
        notes = list(self.state.notes.values())
        self.message.value = warning_box(notes) if notes else ""

    def _render_frames(self) -> None:
        if self._building or not self.state.videos:
            return
        s = self.state
        known = s.kept_frames() is not None          # features read: each frame is marked kept or dropped
        frames = s.frames()
        missing, children = [], []
        for f in frames:
            when = f"{f.time:.1f} s"
            caption = (f"<span style='color:{BAD}'>{when} · dropped at τ={s.tau:.2f}</span>" if f.dropped
                       else f"<span style='color:{OK}'>{when} · kept</span>" if known else when)
            try:
                data, fmt = s.frame_image(f.path, bool(f.dropped))
                picture = widgets.Image(value=data, format=fmt, layout=widgets.Layout(width=FRAME_WIDTH))
            except (OSError, ValueError):
                missing.append(f.path)
                picture = widgets.HTML(f"<div style='width:{FRAME_WIDTH};height:{FRAME_WIDTH};background:#eee;"
                                       f"font-size:80%;text-align:center'>missing frame</div>")
            border = f"2px dashed {BAD}" if f.dropped else f"2px solid {OK}" if known else "none"
            children.append(widgets.VBox([picture, widgets.HTML(f"<small>{caption}</small>")],
                                         layout=widgets.Layout(border=border, margin="2px", padding="2px")))
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        s.set_note("frames", f"frame file {missing[0]} does not exist{more}; make the frames with "
                             f"`dvc repro prepare`" if missing else None)
        self._show_notes()
        n_kept = sum(not f.dropped for f in frames)
        header = widgets.HTML(f"<small>{n_kept} of {len(frames)} frames kept at τ={s.tau:.2f}</small>"
                              if known else "<small>1-fps frames</small>", layout=widgets.Layout(width="100%"))
        old = self.frames_box.children
        self.frames_box.children = [header, *children]
        for w in old:
            _close_tree(w)

    def _render_narrations(self) -> None:
        if self._building or not self.state.videos:
            return
        s = self.state
        unit = "words" if s.video.language == "en" else "chars"
        self.narration_html.value = narrations_html(s.narration_rows(), s.clip.window, unit,
                                                    s.mode == "generated", bool(s.visible_facts()))

    # -- live generation ------------------------------------------------------------------

    def regenerate(self) -> LiveResult | None:
        """Narrate the current video with the trained model at the current mode and tau.

        Returns the result (also shown as a "live" row), or None after showing why it failed.
        """
        s = self.state
        if not s.videos:
            return None                          # the warning box already says the dataset is missing
        n = len(s.video.clips)
        self.progress.max, self.progress.value = n, 0
        self.regen_button.disabled = True

        def on_clip(i: int, _) -> None:
            self.progress.value = i + 1
            self.progress_label.value = f"narrated clip {i + 1} of {n}"

        def on_status(text: str) -> None:
            self.progress_label.value = text

        try:
            result = s.regenerate(on_clip, on_status)
        except Exception as err:  # a UI callback: show every failure in the page, never a traceback
            self.progress_label.value = "not regenerated (see the message above)"
            why = str(err) if isinstance(err, FileNotFoundError) else f"{type(err).__name__}: {err}"
            s.set_note("live", f"Regenerate with the trained model: {why}")
            self._show_notes()
            return None
        finally:
            self.regen_button.disabled = False
        s.set_note("live", None)
        self._show_notes()
        self.progress_label.value = (f"done: {len(result.outputs)} clips narrated live "
                                     f"({result.mode} storyline, τ={result.tau:.2f})")
        self._render_narrations()
        return result
