"""Where the free-running narrations of trial runs land against their windows, by window size.

    python reports/trial_stop_weight/lengths.py --dataset <clone>/data/processed/dataset.json RUN_DIR...

RUN_DIR holds a trial's narrations.json (reports/trial_fact_weight/trial.py). Windows are grouped by
their midpoint: short (<= 6 words), long (>= 17) and the rest.
"""
import argparse, json
from pathlib import Path

from videonarrator.schema import load_dataset

ap = argparse.ArgumentParser()
ap.add_argument("--dataset", required=True)
ap.add_argument("runs", nargs="+")
a = ap.parse_args()
videos, _ = load_dataset(a.dataset)
windows = {(v.id, c.index): c.window for v in videos for c in v.clips}
for run in a.runs:
    free = json.loads((Path(run) / "narrations.json").read_text())["free"]
    groups = {"short": [], "middle": [], "long": []}
    for vid, clips in free.items():
        for i, n in enumerate(clips):
            lo, hi = windows[(vid, i)]
            mid = (lo + hi) / 2
            groups["short" if mid <= 6 else "long" if mid >= 17 else "middle"].append((n["length"], lo, hi))
    parts = []
    for name, rows in groups.items():
        k = len(rows)
        inside = sum(lo <= n <= hi for n, lo, hi in rows)
        over = sum(n > hi for n, lo, hi in rows)
        under = sum(n < lo for n, lo, hi in rows)
        parts.append(f"{name} {k} clips: asked {sum(lo for _, lo, _ in rows) / k:.1f}-{sum(hi for *_, hi in rows) / k:.1f}, "
                     f"wrote {sum(n for n, *_ in rows) / k:.1f}; in {inside}, too long {over}, too short {under}")
    print(Path(run).name, "|", " | ".join(parts))
