"""The seed study: the same pipeline trained with several ``train.seed`` values on one dataset.

One run's table says little: two runs of the same settings differ by more than
the differences between systems (README, results).  The study keeps
``common.data_seed`` fixed (same videos, same split, same frozen tower) and
changes only ``train.seed`` (trained weights' initialisation, sample order,
decoding samples), then reports per system and rate:

* mean ± sd over the seeds (:func:`intervals.seed_summary`);
* a 95 % interval for the seed-mean that resamples test videos (each draw
  recomputes every seed's rate on the same resampled videos and averages them);
* the count behind the rate (facts, clips) on the test split;
* the paired difference of the seed-mean to ``text_only``, with its interval.

Each run's evaluation writes ``reports/video_counts.json`` (per system and rate,
the hits and counts of every test video); :func:`collect` files it with the
run's ``metrics.json`` and its training reports (precision, speed, memory: runs
on different CPUs of this machine kind may train in bf16 or fp32) under
``reports/study/seed_<n>/``.

One command runs the whole study (``dvc exp run dvc.yaml`` per seed, then the table)::

    python -m videonarrator.study run --seeds 0 1 2 3 4

``python -m videonarrator.study table`` rebuilds ``reports/study.md`` and
``reports/study.json`` from the collected runs.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from . import intervals as I
from .evaluate import OWN_YARDSTICKS
from .io import atomic_write_text, read_json, write_json

STUDY_DIR = Path("reports/study")
ABOVE_CHANCE = "visual_attr_above_chance"   # visual_attr_acc minus the row's own visual_attr_chance
GROUPS = {"Visible facts": ("visual_attr_acc", "visual_attr_acc_colour", "visual_attr_acc_setting",
                             "visual_attr_acc_shape", "visual_attr_acc_action"),
          "Visible facts against each row's own chance": ("visual_attr_acc", "visual_attr_stated",
                                                          "visual_attr_chance", ABOVE_CHANCE),
          "Storyline, knowledge, hallucinations, length": ("label_acc", "knowledge_recall", "hallucination_rate",
                                                           "sync_in_window", "sync_in_window_free")}
RATES = tuple(dict.fromkeys(r for rates in GROUPS.values() for r in rates))
CORPUS = ("CIDEr", "BLEU-4", "ROUGE-L")   # corpus metrics: one figure per run, no per-video count


def collect(seed: int, reports: str | Path = "reports", study_dir: str | Path = STUDY_DIR) -> Path:
    """Copy one finished run's metrics.json, video_counts.json and training reports to ``study_dir/seed_<seed>/``."""
    reports, dest = Path(reports), Path(study_dir) / f"seed_{seed}"
    files = [reports / "metrics.json", reports / "video_counts.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"seed {seed}: {', '.join(missing)} missing; run the evaluate stage "
                                f"(dvc repro) before collecting the run")
    dest.mkdir(parents=True, exist_ok=True)
    for f in files + sorted(reports.glob("train_*.json")):   # one training report per trained system
        shutil.copy2(f, dest / f.name)
    return dest


def load_runs(study_dir: str | Path = STUDY_DIR) -> dict[int, dict]:
    """seed -> {"metrics": ..., "counts": ..., "train": {system: report}} for every collected run,
    checked to share one test split (``train`` is empty for a run filed without its training reports)."""
    runs = {}
    for d in sorted(Path(study_dir).glob("seed_*")):
        seed = int(d.name.removeprefix("seed_"))
        fix = "collect the run again (python -m videonarrator.study collect --seed N)"
        runs[seed] = {"metrics": read_json(d / "metrics.json", fix), "counts": read_json(d / "video_counts.json", fix),
                      "train": {r["system"]: r for r in (read_json(f, fix) for f in sorted(d.glob("train_*.json")))}}
    if not runs:
        raise FileNotFoundError(f"no runs under {study_dir}; run `python -m videonarrator.study run --seeds 0 1 2 3 4`")
    splits = {tuple(r["counts"]["videos"]) for r in runs.values()}
    if len(splits) != 1:
        raise ValueError(f"the runs under {study_dir} were evaluated on different test videos; a seed study "
                         f"keeps common.data_seed and the dataset fixed: remove the runs of another dataset")
    return runs


def _seed_mean(per_seed: list[tuple[np.ndarray, np.ndarray]]):
    """Statistic over video indices: the mean over seeds of each seed's hits/counts ratio."""
    stats = [I.ratio(h, c) for h, c in per_seed]

    def stat(idx):
        values = [s(idx) for s in stats]
        return math.nan if any(math.isnan(v) for v in values) else float(np.mean(values))
    return stat


def _per_seed(runs: dict[int, dict], system: str, rate: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each run's (hits, counts) per test video of ``system``'s ``rate``, for the runs that have it."""
    found = [r["counts"]["systems"][system][rate] for r in runs.values() if rate in r["counts"]["systems"].get(system, {})]
    return [(np.asarray(x["hits"], float), np.asarray(x["counts"], float)) for x in found]


def aggregate(runs: dict[int, dict], baseline: str = "text_only", n_boot: int = I.N_BOOT,
              seed: int = 0) -> dict[str, dict[str, dict]]:
    """system -> rate -> {mean, sd, seeds, lo, hi, n[, diff, diff_lo, diff_hi]} over the collected seeds.
    A row's own yardsticks (``evaluate.OWN_YARDSTICKS``) get no difference to ``baseline``; instead
    ``visual_attr_above_chance`` is the row's visible facts minus its own chance, paired on the same videos."""
    n_videos = len(next(iter(runs.values()))["counts"]["videos"])
    systems = sorted({s for r in runs.values() for s in r["counts"]["systems"]})
    table: dict[str, dict[str, dict]] = {}
    for system in systems:
        for rate in RATES:
            per_seed = _per_seed(runs, system, rate)
            if not per_seed or not per_seed[0][1].sum():
                continue
            values = [h.sum() / c.sum() for h, c in per_seed]
            row = I.seed_summary(values)
            row["lo"], row["hi"] = I.bootstrap_ci(n_videos, _seed_mean(per_seed), n_boot, seed)
            row["n"] = int(per_seed[0][1].sum())
            base = _per_seed(runs, baseline, rate)
            if system != baseline and rate not in OWN_YARDSTICKS and len(base) == len(runs):
                d = I.paired_difference_ci(_seed_mean(per_seed), _seed_mean(base), n_videos, n_boot, seed)
                row["diff"], row["diff_lo"], row["diff_hi"] = d["value"], d["lo"], d["hi"]
            table.setdefault(system, {})[rate] = row
        acc, chance = _per_seed(runs, system, "visual_attr_acc"), _per_seed(runs, system, "visual_attr_chance")
        if chance and len(chance) == len(acc):
            row = I.seed_summary([ha.sum() / ca.sum() - hc.sum() / cc.sum() for (ha, ca), (hc, cc) in zip(acc, chance)])
            d = I.paired_difference_ci(_seed_mean(acc), _seed_mean(chance), n_videos, n_boot, seed)
            row.update(lo=d["lo"], hi=d["hi"], n=int(acc[0][1].sum()))
            table[system][ABOVE_CHANCE] = row
    return table


def study_table(table: dict[str, dict[str, dict]], baseline: str = "text_only", rates=RATES) -> str:
    """Markdown: per system and rate ``mean ± sd [lo, hi] (n=…, k seeds)``; a second table of the
    paired differences to ``baseline``.  Systems without any of ``rates`` are left out."""
    rates = [r for r in rates if any(r in t for t in table.values())]
    table = {system: t for system, t in table.items() if any(r in t for r in rates)}
    lines = ["| system | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
    for system, t in table.items():
        cells = []
        for r in rates:
            x = t.get(r)
            sd = "" if x is None or math.isnan(x["sd"]) else f" ± {x['sd']:.3f}"
            cells.append("" if x is None else
                         f"{x['mean']:.3f}{sd} [{x['lo']:.3f}, {x['hi']:.3f}] (n={x['n']}, {x['seeds']} seeds)")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += ["", f"Seed-mean minus `{baseline}`'s seed-mean on the same test videos (95 % interval over video "
                  "resamples):", "", "| system | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
    for system, t in table.items():
        if any("diff" in t.get(r, {}) for r in rates):
            cells = [I.format_ci(t[r]["diff"], t[r]["diff_lo"], t[r]["diff_hi"], 3) if "diff" in t.get(r, {}) else ""
                     for r in rates]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def corpus_table(runs: dict[int, dict], metrics=CORPUS) -> str:
    """Markdown: per system, each corpus metric's value in every seed and its mean ± sd (no
    interval: these metrics have no per-video count to resample); '' when no run has any."""
    systems = sorted({s for r in runs.values() for s, m in r["metrics"].items() if any(k in m for k in metrics)})
    if not systems:
        return ""
    lines = ["| system | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for system in systems:
        cells = []
        for k in metrics:
            values = [r["metrics"].get(system, {}).get(k) for r in runs.values()]
            values = [v for v in values if v is not None]
            if not values:
                cells.append("")
                continue
            x = I.seed_summary(values)
            sd = "" if math.isnan(x["sd"]) else f" ± {x['sd']:.3f}"
            cells.append(f"{x['mean']:.3f}{sd} (" + ", ".join(f"{v:.3f}" for v in values) + ")")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def runs_table(runs: dict[int, dict]) -> str:
    """Markdown: per seed and trained system, how it trained (precision, speed, memory), so that a
    reader sees when the seeds ran on different CPUs; a seed filed without training reports says so."""
    lines = ["| seed | system | precision | bf16 matmul speedup | clips/s | training s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for seed, run in runs.items():
        if not run["train"]:
            lines.append(f"| {seed} | (training reports not collected) | | | | | |")
        for system, r in run["train"].items():
            speedup = r.get("cpu_bf16_speedup")   # 0: the CPU has no native bf16 (train.cpu_bf16_speedup)
            speedup = "" if speedup is None else "no native bf16" if speedup == 0 else speedup
            lines.append(f"| {seed} | {system} | {r.get('precision', '')} | {speedup} | "
                         f"{r.get('clips_per_s', math.nan):.2f} | {r.get('wall_s', math.nan):.0f} | "
                         f"{r.get('peak_rss_mb', math.nan):.0f} |")
    return "\n".join(lines) + "\n"


def write_study(study_dir: str | Path = STUDY_DIR, reports: str | Path = "reports") -> str:
    runs = load_runs(study_dir)
    table = aggregate(runs)
    seeds = ", ".join(str(s) for s in runs)
    text = (f"# Seed study: train.seed in {{{seeds}}} on one dataset\n\n"
            "mean ± sd over seeds, [95 % interval of the seed-mean over test-video resamples], "
            "(n = facts or clips of the test split, seeds)\n\n"
            + "\n".join(f"## {name}\n\n" + study_table(table, rates=rates) for name, rates in GROUPS.items()))
    corpus = corpus_table(runs)
    if corpus:
        text += ("\n## Corpus metrics\n\nmean ± sd over seeds (each seed's value, in seed order); no "
                 "interval: a corpus metric has no per-video count to resample\n\n" + corpus)
    text += "\n## Runs\n\nhow each seed's trained systems trained (from their training reports)\n\n" + runs_table(runs)
    write_json(Path(reports) / "study.json", table)
    atomic_write_text(Path(reports) / "study.md", text)
    return text


def run_order(seeds: list[int], current: int | None) -> list[int]:
    """The seeds in the order they run: each once, the workspace's own ``train.seed`` last, so the
    study ends on the run it started from."""
    unique = list(dict.fromkeys(seeds))
    return [s for s in unique if s != current] + [s for s in unique if s == current]


def run_study(seeds: list[int], root: str | Path = ".") -> str:
    """``dvc exp run dvc.yaml -S train.seed=<seed>`` for each seed (prepare and features stay cached:
    the dataset does not change), collecting each run, then the table.  The target keeps the
    real-data pipeline (esyncvidstory/dvc.yaml) out of the study.

    ``-S`` rewrites params.yaml (another seed, and its own YAML formatting).  When the workspace's
    seed is among ``seeds`` it runs last (DVC's run cache restores it without training if it ran
    here before) and params.yaml gets its original text back, so the workspace ends as it began;
    otherwise it ends on the last seed's run and the message says how to return."""
    root = Path(root)
    params_text = (root / "params.yaml").read_text(encoding="utf-8")
    current = (yaml.safe_load(params_text).get("train") or {}).get("seed")
    order = run_order(seeds, current)
    for s in order:
        cmd = ["dvc", "exp", "run", "dvc.yaml", "-S", f"train.seed={s}"]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=root).returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed; fix it, then rerun the study for the remaining seeds")
        collect(s, root / "reports", root / STUDY_DIR)
    if order[-1] == current:
        atomic_write_text(root / "params.yaml", params_text)
    else:
        print(f"the workspace holds seed {order[-1]}'s run; `git checkout params.yaml dvc.lock reports && "
              "dvc checkout` returns to the committed one", flush=True)
    return write_study(root / STUDY_DIR, root / "reports")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m videonarrator.study", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate once per seed (dvc exp run), then write the table")
    r.add_argument("--seeds", type=int, nargs="+", required=True)
    c = sub.add_parser("collect", help="file the current reports/ as the run of one seed")
    c.add_argument("--seed", type=int, required=True)
    sub.add_parser("table", help="write reports/study.md and reports/study.json from the collected runs")
    args = ap.parse_args(argv)
    try:
        if args.command == "run":
            print(run_study(args.seeds))
        elif args.command == "collect":
            print(collect(args.seed))
        else:
            print(write_study())
    except (FileNotFoundError, ValueError, RuntimeError) as err:   # the message says what to do
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
