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

Two modules: :mod:`.state` holds what is shown and computes the checks (no
widgets: testable and reusable on its own); :mod:`.view` draws it with
ipywidgets and wires the events.  A missing file never raises into the
notebook: the warning box at the top names the file and the command that makes it.
"""
from .state import (DATASET, FEATURES, METRICS, MODEL, NARRATIONS, SUMMARY_METRICS, TAU_MAX, TAU_MIN, VISIBLE,
                    ExplorerState, Frame, LiveResult, NarrationRow, dim_image, fact_status, narrate_live,
                    ordered_videos, read_metrics, read_narrations, video_label)
from .view import NarrationExplorer, length_cell

__all__ = ["DATASET", "FEATURES", "METRICS", "MODEL", "NARRATIONS", "SUMMARY_METRICS", "TAU_MAX", "TAU_MIN",
           "VISIBLE", "ExplorerState", "Frame", "LiveResult", "NarrationExplorer", "NarrationRow", "dim_image",
           "fact_status", "length_cell", "narrate_live", "ordered_videos", "read_metrics", "read_narrations",
           "video_label"]
