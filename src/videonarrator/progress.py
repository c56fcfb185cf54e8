"""Progress bars that show wherever the work runs.

In JupyterLab a bar is a widget (``tqdm.auto``).  A DVC stage executes its
notebook in a papermill kernel whose widgets nobody sees, so
:func:`videonarrator.stage.run_stage` sets ``VN_PROGRESS=text``: bars are then
plain text on stderr, which papermill passes on to the ``dvc repro`` log as it
comes, one update at most every ``VN_PROGRESS_INTERVAL`` seconds (default 30,
so a long stage's log and its executed notebook stay short).
"""
from __future__ import annotations

import os


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)``: a widget in Jupyter, text lines in a stage run (``VN_PROGRESS=text``)."""
    if os.environ.get("VN_PROGRESS") == "text":
        from tqdm.std import tqdm
        kwargs.setdefault("mininterval", float(os.environ.get("VN_PROGRESS_INTERVAL", "30")))
        kwargs.setdefault("ncols", 100)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm
    return tqdm(iterable, **kwargs)
