"""Training: one sample per clip, loss on the label line and narration only.

Seeded, AdamW with linear warmup and cosine decay, gradient accumulation,
checkpoints that resume to exactly the same result, bf16 autocast where the
hardware has it, and data-parallel training on several processes or GPUs
through ``accelerate`` with no code change::

    accelerate launch --num_processes 2 --cpu -m videonarrator.train ...   # 2 CPU processes (gloo)
    accelerate launch --num_processes 4 -m videonarrator.train ...         # 4 GPUs (DDP)
    accelerate launch --use_deepspeed --zero_stage 2 ...                   # ZeRO-2 where deepspeed is installed

Every process sees the same seeded plan of global batches and takes its own
share of each, so the result does not depend on where a run was resumed.
"""
from __future__ import annotations

import csv
from contextlib import nullcontext
import hashlib
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path
from .model import ClipSample, VideoNarrator, VideoNarratorConfig, collate

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    steps: int = 120                 # optimizer steps
    batch_size: int = 8              # clips per optimizer step, over all processes and accumulation
    grad_accum: int = 1              # micro-batches per step (per process)
    lr_lora: float = 1e-3
    lr_visual: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 40       # 0: no checkpoints
    eval_every: int = 40             # validation loss every n steps (and at the end)
    eval_clips: int = 32
    length_grouping: bool = True     # batch clips of similar length together (less padding)
    precision: str = "auto"          # auto | fp32 | bf16 | fp16 (fp16 on GPUs only)
    modes: list[str] = field(default_factory=lambda: ["given", "generated"])


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto': bf16 on GPUs that support it and on CPUs with native bf16 matmuls, else fp32."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def batch_plan(lengths: list[int], cfg: TrainConfig) -> list[list[int]]:
    """Sample indices of every global batch, seeded and fixed before training starts.

    Each epoch is a seeded permutation; with length grouping, windows of 16
    batches are sorted by length, cut into batches and the batches shuffled,
    so a batch holds clips of similar length but the order stays random.
    """
    n, B = len(lengths), cfg.batch_size
    if n < B:
        raise ValueError(f"{n} training clips are fewer than batch_size {B}; lower train.batch_size")
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        usable = order[: n - n % B]
        if cfg.length_grouping:
            window = 16 * B
            batches = []
            for w in range(0, len(usable), window):
                chunk = sorted(usable[w:w + window], key=lambda i: lengths[i])
                batches += [chunk[k:k + B] for k in range(0, len(chunk), B)]
            perm = torch.randperm(len(batches), generator=g).tolist()
            plan += [batches[p] for p in perm]
        else:
            plan += [usable[k:k + B] for k in range(0, len(usable), B)]
        epoch += 1
    return plan[: cfg.steps]


def sample_length(s: ClipSample, num_queries: int) -> int:
    visual = num_queries * (len(s.clip_patches) + (1 if len(s.earlier_patches) else 0))
    return len(s.prefix_ids) + len(s.suffix_ids) + len(s.target_ids) + visual


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of padded positions in right-padded batches."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / total


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def param_groups(model: VideoNarrator, cfg: TrainConfig) -> list[dict]:
    params = model.trainable_parameters()
    visual = [p for n, p in params.items() if n.startswith("visual.")]
    lora = [p for n, p in params.items() if not n.startswith("visual.")]
    groups = [{"params": lora, "lr": cfg.lr_lora}]
    if visual:
        groups.append({"params": visual, "lr": cfg.lr_visual})
    return groups


def weights_checksum(model: VideoNarrator) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.trainable_parameters().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def mean_loss(model: VideoNarrator, samples: list[ClipSample], batch_size: int, autocast) -> float:
    was_training = model.training
    model.eval()
    losses = []
    for k in range(0, len(samples), batch_size):
        chunk = samples[k:k + batch_size]
        with autocast():
            losses.append(float(model(collate(chunk))) * len(chunk))
    model.train(was_training)
    return sum(losses) / len(samples)


def save_checkpoint(path: Path, model: VideoNarrator, optimizer, scheduler, step: int,
                    log: list[dict], fingerprint: str) -> None:
    state = {"step": step, "fingerprint": fingerprint,
             "weights": {n: p.detach().cpu() for n, p in model.trainable_parameters().items()},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": torch.get_rng_state(), "log": log}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model: VideoNarrator, optimizer, scheduler, fingerprint: str) -> tuple[int, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    if state["fingerprint"] != fingerprint:
        raise ValueError(f"{path} was written by a run with other settings or data; delete it "
                         f"(or the whole output folder) to start afresh")
    params = model.trainable_parameters()
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"], state["log"]


def run_fingerprint(cfg: TrainConfig, model_cfg: VideoNarratorConfig, samples: list[ClipSample]) -> str:
    h = hashlib.sha256(repr((asdict(cfg), model_cfg.to_dict())).encode())
    for s in samples:
        h.update(s.prefix_ids.numpy().tobytes())
        h.update(s.target_ids.numpy().tobytes())
    return h.hexdigest()[:16]


def train(model: VideoNarrator, train_samples: list[ClipSample], val_samples: list[ClipSample],
          cfg: TrainConfig, out_dir: str | Path, progress: bool = True,
          stop_after: int | None = None) -> dict:
    """Train ``model`` in place; save it to ``out_dir`` and return the run's figures.

    A checkpoint in ``out_dir/../<name>.ckpt/`` is resumed from when present
    (same settings and data only).  ``stop_after`` ends the run early after
    that many steps (used to test resuming).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    ckpt = out_dir.parent / f"{out_dir.name}.ckpt" / CHECKPOINT
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    acc = accelerator(precision)
    world, rank = acc.num_processes, acc.process_index
    per_step = cfg.batch_size
    if per_step % (world * cfg.grad_accum):
        raise ValueError(f"train.batch_size {per_step} must be divisible by processes x grad_accum "
                         f"({world} x {cfg.grad_accum})")

    lengths = [sample_length(s, model.cfg.num_query_tokens) for s in train_samples]
    plan = batch_plan(lengths, cfg)
    fingerprint = run_fingerprint(cfg, model.cfg, train_samples)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start, log = 0, []
    if ckpt.exists():
        start, log = load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
        acc.print(f"resuming from {ckpt} at step {start}")
    wrapped, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    model.train()

    t0, clips_seen = time.time(), 0
    end = min(cfg.steps, stop_after if stop_after is not None else cfg.steps)
    bar = tqdm(range(start, end), desc="train", disable=not (progress and acc.is_main_process))
    for step in bar:
        mine = plan[step][rank::world]                                  # this process's share
        micro = np.array_split(np.array(mine), cfg.grad_accum)
        total = 0.0
        for k, idx in enumerate(micro):
            batch = collate([train_samples[i] for i in idx])
            sync = acc.no_sync(wrapped) if (k < len(micro) - 1 and world > 1) else nullcontext()
            with sync, acc.autocast():
                loss = wrapped(batch) / len(micro)
                acc.backward(loss)
            total += float(loss.detach())
        acc.clip_grad_norm_(list(model.trainable_parameters().values()), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss = float(acc.reduce(torch.tensor(total, device=acc.device), reduction="mean"))
        clips_seen += len(plan[step])
        entry = {"step": step + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
        if val_samples and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            entry["val_loss"] = mean_loss(model, val_samples[: cfg.eval_clips], cfg.batch_size, acc.autocast)
        log.append(entry)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(ckpt, model, optimizer, scheduler, step + 1, log, fingerprint)
    acc.wait_for_everyone()
    wall = time.time() - t0
    done = len(log) and log[-1]["step"] == cfg.steps
    checksums = acc.gather_for_metrics([weights_checksum(model)], use_gather_object=True)
    result = {
        "steps": log[-1]["step"] if log else 0,
        "final_loss": float(np.mean([e["loss"] for e in log[-10:]])) if log else float("nan"),
        "first_loss": log[0]["loss"] if log else float("nan"),
        "val_loss": next((e["val_loss"] for e in reversed(log) if "val_loss" in e), None),
        "clips_per_s": clips_seen / wall if wall else 0.0,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "processes": world,
        "precision": precision,
        "padding_share": padding_share(plan, lengths),
        "trainable_params": sum(p.numel() for p in model.trainable_parameters().values()),
        "rank_checksums": list(checksums),
        "log": log,
    }
    if acc.is_main_process:
        if done:
            model.save_pretrained(out_dir)
            if ckpt.parent.exists():
                import shutil
                shutil.rmtree(ckpt.parent)
        elif stop_after is not None:
            save_checkpoint(ckpt, model, optimizer, scheduler, result["steps"], log, fingerprint)
    acc.wait_for_everyone()
    return result


def accelerator(precision: str):
    """An Accelerator for this precision.  accelerate keeps one global state per
    process, so a second run in the same process (a notebook training several
    systems, a test) first resets the non-distributed part of it."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=not torch.cuda.is_available(),
                       mixed_precision={"fp32": "no"}.get(precision, precision),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def write_loss_csv(log: list[dict], path: str | Path, key: str = "loss") -> None:
    """``step,<key>`` rows for a DVC plot (only the steps that have the key)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", key])
        for e in log:
            if key in e:
                w.writerow([e["step"], f"{e[key]:.6f}"])


def train_system(params: dict, system: str, root: str | Path = ".", progress: bool = True,
                 stop_after: int | None = None) -> dict:
    """Train one system (systems.SYSTEMS) on the prepared data under ``root``; save it to
    ``root/models/<system>``.  ``params`` holds the sections common, llm, model, train."""
    from .schema import load_dataset

    root = Path(root)
    videos, _ = load_dataset(root / "data/processed/dataset.json")
    return train_on_videos(params, system, videos, root / "data/features", root / "models" / system, root,
                           progress, stop_after)


def train_on_videos(params: dict, system: str, videos: list, features_dir: str | Path | None, out_dir: str | Path,
                    root: str | Path = ".", progress: bool = True, stop_after: int | None = None,
                    **overrides) -> dict:
    """Train ``system`` on the train split of ``videos`` (val split for the validation loss); save it
    to ``out_dir``.  ``overrides`` replace keys of the train section (e.g. ``steps``)."""
    from .dataset import training_samples
    from .prompt import PromptOptions
    from .params import config_from
    from .schema import split_videos
    from .systems import settings_from_params, system_config

    root = Path(root)
    base_cfg, lora, tau = settings_from_params(params["model"])
    model_cfg, tau = system_config(system, base_cfg, tau)
    if model_cfg.use_video and features_dir is None:
        raise ValueError(f"system {system!r} needs frame features, and these videos have none; "
                         f"train text_only instead")
    torch.manual_seed(params["train"]["seed"])  # the fresh LoRA and visual weights are seeded too
    narrator = VideoNarrator.from_llm(model_cfg, root / params["llm"]["path"], lora,
                                      trust_remote_code=params["llm"]["trust_remote_code"],
                                      attn_implementation=params["llm"]["attn_implementation"])
    if narrator.visual is not None and params["model"]["qformer_weights"]:
        narrator.visual.load_qformer(root / params["model"]["qformer_weights"])  # BLIP-2 start (paper)
    features_dir = features_dir if model_cfg.use_video else None
    seed, modes = params["train"]["seed"], params["train"]["modes"]
    buckets = model_cfg.num_position_buckets
    story = model_cfg.story_clips
    options = PromptOptions(position_text=model_cfg.position_text)
    train_samples = training_samples(narrator.tokenizer, split_videos(videos, "train"), features_dir, tau,
                                     modes, seed, buckets, story, options)
    val_samples = training_samples(narrator.tokenizer, split_videos(videos, "val"), features_dir, tau,
                                   modes, seed + 1, buckets, story, options)
    cfg = config_from(TrainConfig, params["train"], seed=seed, **overrides)
    return train(narrator, train_samples, val_samples, cfg, out_dir, progress, stop_after)


def write_train_report(result: dict, system: str, reports_dir: str | Path = "reports") -> Path:
    """reports/train.json for the full model, reports/train_<system>.json for the others,
    plus the loss CSVs that DVC plots."""
    from .io import write_json

    reports_dir = Path(reports_dir)
    stem = "train" if system == "videonarrator" else f"train_{system}"
    write_loss_csv(result["log"], reports_dir / f"{stem}_loss.csv")
    write_loss_csv(result["log"], reports_dir / f"{stem}_val_loss.csv", key="val_loss")
    path = reports_dir / f"{stem}.json"
    write_json(path, {"system": system, **{k: v for k, v in result.items() if k != "log"}})
    return path


def main(argv: list[str] | None = None) -> int:
    """Train from the command line, e.g. on several GPUs or processes::

        accelerate launch --num_processes 4 -m videonarrator.train --system videonarrator
    """
    import argparse
    import sys

    from .params import ParamsError, load_params

    parser = argparse.ArgumentParser(description="Train a VideoNarrator system (any number of processes).")
    parser.add_argument("--system", default="videonarrator")
    parser.add_argument("--root", default=".", help="project root: params.yaml, data/, models/, reports/")
    parser.add_argument("--params", default=None, help="params file (default: ROOT/params.yaml)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (resumable)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params or Path(args.root) / "params.yaml")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result = train_system(params, args.system, args.root, stop_after=args.stop_after)
    from accelerate import PartialState
    if PartialState().is_main_process:
        print(f"report: {write_train_report(result, args.system, Path(args.root) / 'reports')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def read_loss_log(reports_dir: str | Path, system: str) -> list[dict]:
    """The per-step log of a finished run back from its loss CSVs (train and validation)."""
    reports_dir = Path(reports_dir)
    stem = "train" if system == "videonarrator" else f"train_{system}"
    rows: dict[int, dict] = {}
    for key, path in (("loss", reports_dir / f"{stem}_loss.csv"), ("val_loss", reports_dir / f"{stem}_val_loss.csv")):
        if path.exists():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    rows.setdefault(int(r["step"]), {"step": int(r["step"])})[key] = float(r[key])
    return [rows[s] for s in sorted(rows) if "loss" in rows[s]]
