"""Training: one sample per clip, loss on the label line and narration only.

A step's clips come in runs of consecutive clips of one video, and the model runs
each video's clips packed in one sequence (model.pack_layout): the shared product
knowledge and story are computed once, every clip keeps exactly its own sample's
context, so the loss is the per-clip loss at a fraction of the LLM positions.

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

from contextlib import nullcontext
import functools
import hashlib
import math
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path
from .llm import cast_frozen_linears
from .model import (ClipSample, VideoNarrator, VideoNarratorConfig, attention_cost, collate, default_device,
                    pack_layout, visual_token_count)
from .progress import progress_bar
from .pretrain import ClipValues, PretrainConfig, pretrain_visual

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Built from params' ``train`` section by :class:`config.Settings`."""
    steps: int                       # optimizer steps
    batch_size: int                  # clips per optimizer step, over all processes and accumulation
    grad_accum: int                  # micro-batches per step (per process)
    lr_lora: float
    lr_visual: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    checkpoint_every: int            # 0: no checkpoints
    eval_every: int                  # validation loss every n steps (and at the end)
    eval_clips: int
    length_grouping: bool            # batch videos of similar length together (less padding)
    precision: str                   # auto | fp32 | bf16 | fp16 (fp16 on GPUs only)
    modes: list[str]
    label_weight: float              # the label line's tokens against the narration's (generated-mode samples)
    fact_weight: float               # the visible facts' words against the rest of the narration
    stop_weight: float               # the tokens that set the narration's length (go on after a sentence, or stop)
    caption_steps: int               # caption warm-up steps before the ``steps`` (clips that have a caption)
    qformer_steps: int               # stage 1: Q-Former steps before any LLM step (pretrain.py; clips with values)
    qformer_lr: float
    qformer_batch_size: int          # clips per stage-1 step


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto': bf16 on GPUs that support it and on CPUs where bf16 matrix products are
    measured faster than fp32 (:func:`cpu_bf16_speedup`), else fp32."""
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else "fp32"


BF16_MIN_SPEEDUP = 1.25   # bf16 autocast also pays for casts: below this the step is no faster
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of an LLM-sized matrix product on this CPU (0 without native bf16).

    Timed, because the CPU flags do not tell: two 2-core machines that both report
    AVX-512 BF16 trained 1.84x faster (an AMD EPYC) and 0.64x as fast (an Intel Xeon
    without AMX: bf16 products at 0.74x fp32) in bf16 autocast (benchmarks/RESULTS.md).
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0.0
    a, b = torch.randn(256, 576), torch.randn(576, 1536)   # SmolLM2-135M's MLP shape, a packed batch's rows

    def best(dtype) -> float:
        x, y = a.to(dtype), b.to(dtype)
        for _ in range(2):
            x @ y
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(4):
                x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


def video_groups(samples: list[ClipSample]) -> list[list[int]]:
    """Runs of consecutive samples of one video (a sample of no known video stands alone)."""
    groups: list[list[int]] = []
    for i, s in enumerate(samples):
        if groups and s.video and samples[groups[-1][-1]].video == s.video:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def batch_plan(lengths: list[int], cfg: TrainConfig, groups: list[list[int]] | None = None,
               what: str = "training clips") -> list[list[int]]:
    """Sample indices of every global batch, seeded and fixed before training starts.

    ``groups``: runs of samples kept next to each other (the clips of a video, so that a batch
    packs them); None: every sample on its own.  Each epoch is a seeded permutation of the
    groups, concatenated and cut into batches of ``batch_size`` clips (a group may straddle two
    batches; the last incomplete batch is dropped).  With length grouping, windows of about 16
    batches' groups are sorted by length first and the batches shuffled, so a batch holds
    clips of similar length (less padding) but the order stays random.
    """
    n, B = len(lengths), cfg.batch_size
    if n < B:
        raise ValueError(f"{n} {what} are fewer than batch_size {B}; lower train.batch_size")
    groups = groups if groups is not None else [[i] for i in range(n)]
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < cfg.steps:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = [groups[k] for k in torch.randperm(len(groups), generator=g).tolist()]
        if cfg.length_grouping:
            windows, window = [], []
            for group in order:
                window.append(group)
                if sum(map(len, window)) >= 16 * B:
                    windows.append(window)
                    window = []
            windows.append(window)
            order = [grp for w in windows for grp in sorted(w, key=lambda grp: sum(lengths[i] for i in grp))]
        flat = [i for grp in order for i in grp]
        batches = [flat[k:k + B] for k in range(0, len(flat) - B + 1, B)]
        if cfg.length_grouping:
            batches = [batches[p] for p in torch.randperm(len(batches), generator=g).tolist()]
        plan += batches
        epoch += 1
    return plan[: cfg.steps]


def sample_length(s: ClipSample, model_cfg: VideoNarratorConfig) -> int:
    """LLM positions of the sample on its own: prompt + visual + target tokens."""
    return len(s.prefix_ids) + len(s.suffix_ids) + len(s.target_ids) + visual_token_count(model_cfg, s)


def micro_batches(batch: list[int], world: int, rank: int, grad_accum: int) -> list[list[int]]:
    """This process's micro-batches of a global batch: contiguous shares, so a video's
    clips stay together and pack."""
    mine = np.array_split(np.array(batch), world)[rank]
    return [m.tolist() for m in np.array_split(mine, grad_accum)]


def plan_positions(plan: list[list[int]], samples: list[ClipSample], model_cfg: VideoNarratorConfig,
                   cost: float, world: int = 1, grad_accum: int = 1, share_prefix: bool = True) -> dict:
    """LLM positions per clip (padding included) and the padding share over a plan's micro-batches,
    from the same layouts the model's forward builds (``cost``: model.attention_cost of the LLM)."""
    computed = used = clips = 0
    for batch in plan:
        for rank in range(world):
            for idx in micro_batches(batch, world, rank, grad_accum):
                chunk = [samples[i] for i in idx]
                layout = pack_layout(chunk, [visual_token_count(model_cfg, s) for s in chunk], share_prefix, cost)
                computed, used, clips = computed + layout.positions, used + layout.used, clips + len(chunk)
    if not clips:   # a plan without narration steps (a caption-only exploration)
        return {"positions_per_clip": None, "padding_share": None}
    return {"positions_per_clip": computed / clips, "padding_share": 1 - used / computed}


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
    device = next(model.parameters()).device
    losses = []
    for k in range(0, len(samples), batch_size):
        chunk = samples[k:k + batch_size]
        with autocast():
            losses.append(float(model(collate(chunk).to(device))) * len(chunk))
    model.train(was_training)
    return sum(losses) / len(samples)


def save_checkpoint(path: Path, model: VideoNarrator, optimizer, scheduler, step: int,
                    log: list[dict], fingerprint: str, stage1: dict | None = None) -> None:
    state = {"step": step, "fingerprint": fingerprint,
             "weights": {n: p.detach().cpu() for n, p in model.trainable_parameters().items()},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": torch.get_rng_state(), "log": log, "stage1": stage1}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model: VideoNarrator, optimizer, scheduler, fingerprint: str
                    ) -> tuple[int, list, dict | None]:
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
    return state["step"], state["log"], state.get("stage1")


def run_fingerprint(cfg: TrainConfig, model_cfg: VideoNarratorConfig, samples: list[ClipSample]) -> str:
    h = hashlib.sha256(repr((asdict(cfg), model_cfg.to_dict())).encode())
    for s in samples:
        h.update(s.prefix_ids.numpy().tobytes())
        h.update(s.target_ids.numpy().tobytes())
        h.update(s.video.encode() + b"\0")         # the plan keeps a video's clips together
    return h.hexdigest()[:16]


def full_plan(train_samples: list[ClipSample], caption_samples: list[ClipSample], cfg: TrainConfig,
              model_cfg: VideoNarratorConfig) -> tuple[list[ClipSample], list[list[int]], int]:
    """(every sample, the plan of every step, caption warm-up steps): ``cfg.caption_steps`` batches of
    caption samples (none without them), then ``cfg.steps`` batches of the training samples."""
    lengths = [sample_length(s, model_cfg) for s in train_samples]
    plan = batch_plan(lengths, cfg, video_groups(train_samples))
    if not (cfg.caption_steps and caption_samples):
        return list(train_samples), plan, 0
    n = len(train_samples)
    warm_cfg = replace(cfg, steps=cfg.caption_steps)
    warm = batch_plan([sample_length(s, model_cfg) for s in caption_samples], warm_cfg, video_groups(caption_samples),
                      "caption warm-up clips")
    return list(train_samples) + list(caption_samples), [[n + i for i in b] for b in warm] + plan, len(warm)


def train(model: VideoNarrator, train_samples: list[ClipSample], val_samples: list[ClipSample],
          cfg: TrainConfig, out_dir: str | Path, progress: bool = True,
          stop_after: int | None = None, caption_samples: list[ClipSample] = (),
          values: ClipValues | None = None, val_values: ClipValues | None = None) -> dict:
    """Train ``model`` in place; save it to ``out_dir`` and return the run's figures.

    ``values`` (dataset.value_targets) first train the Q-Former alone for ``cfg.qformer_steps``
    steps (stage 1, :mod:`videonarrator.pretrain`; ``val_values`` are scored after it).  Then
    ``caption_samples`` (dataset.caption_samples) fill the first ``cfg.caption_steps`` LLM steps (the
    caption warm-up), the training samples the ``cfg.steps`` after them; the learning-rate schedule
    spans both.  A checkpoint in ``out_dir/../<name>.ckpt/`` is resumed from when present
    (same settings and data only).  ``stop_after`` ends the run early after
    that many steps (used to test resuming).  Under bf16 or fp16 precision the LLM's frozen linear
    weights are stored in that dtype from then on (:func:`llm.cast_frozen_linears`).
    """
    out_dir = Path(out_dir)
    ckpt = out_dir.parent / f"{out_dir.name}.ckpt" / CHECKPOINT
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision, default_device())
    acc = training_accelerator(model, precision)
    world, rank = acc.num_processes, acc.process_index
    per_step = cfg.batch_size
    if per_step % (world * cfg.grad_accum):
        raise ValueError(f"train.batch_size {per_step} must be divisible by processes x grad_accum "
                         f"({world} x {cfg.grad_accum})")

    samples, plan, warm = full_plan(train_samples, caption_samples, cfg, model.cfg)
    n_steps = len(plan)
    if model.label_head is not None:
        model.label_head.fit(train_samples)   # fitted once, before the steps (deterministic)
    fingerprint = run_fingerprint(cfg, model.cfg, samples)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(replace(cfg, steps=n_steps)))
    start, log, stage1 = 0, [], None
    if ckpt.exists():   # its weights are those after stage 1
        start, log, stage1 = load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
        acc.print(f"resuming from {ckpt} at step {start}")
    elif model.visual is not None and values is not None and cfg.qformer_steps:
        stage1 = pretrain_visual(model.visual, values, model.embed_text, PretrainConfig(
            cfg.qformer_steps, cfg.qformer_lr, cfg.qformer_batch_size, cfg.seed), val_values,
            progress and acc.is_main_process)
    wrapped, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    model.train()

    t0, clips_seen = time.time(), 0
    end = min(n_steps, stop_after if stop_after is not None else n_steps)
    bar = progress_bar(range(start, end), desc="train", disable=not (progress and acc.is_main_process))
    for step in bar:
        micro = micro_batches(plan[step], world, rank, cfg.grad_accum)   # this process's share
        total = 0.0
        for k, idx in enumerate(micro):
            batch = collate([samples[i] for i in idx]).to(acc.device)   # samples stay on the CPU
            sync = acc.no_sync(wrapped) if (k < len(micro) - 1 and world > 1) else nullcontext()
            with sync, acc.autocast():
                loss = wrapped(batch, label_weight=cfg.label_weight, fact_weight=cfg.fact_weight,
                               stop_weight=cfg.stop_weight) / len(micro)
                acc.backward(loss)
            total += float(loss.detach())
        acc.clip_grad_norm_(list(model.trainable_parameters().values()), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss = float(acc.reduce(torch.tensor(total, device=acc.device), reduction="mean"))
        clips_seen += len(plan[step])
        entry = {"step": step + 1, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
        if val_samples and ((step + 1) % cfg.eval_every == 0 or step + 1 == n_steps):
            entry["val_loss"] = mean_loss(model, val_samples[: cfg.eval_clips], cfg.batch_size, acc.autocast)
        log.append(entry)
        bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)   # shown at the next update (every 30 s in a stage log)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < n_steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(ckpt, model, optimizer, scheduler, step + 1, log, fingerprint, stage1)
    acc.wait_for_everyone()
    wall = time.time() - t0
    done = len(log) and log[-1]["step"] == n_steps
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
        "cpu_bf16_speedup": round(cpu_bf16_speedup(), 2) if default_device().type == "cpu" else None,
        "caption_steps": warm,
        "stage1": stage1,
        **plan_positions(plan[warm:], samples, model.cfg, attention_cost(model._hf().config), world,
                          cfg.grad_accum),
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
            save_checkpoint(ckpt, model, optimizer, scheduler, result["steps"], log, fingerprint, stage1)
    acc.wait_for_everyone()
    return result


def training_accelerator(model: VideoNarrator, precision: str):
    """The Accelerator that trains ``model`` in ``precision``; under bf16 or fp16 the LLM's frozen
    linear weights are stored in it (autocast would cast them to the same values at every call)."""
    acc = accelerator(precision)
    if precision in HALF:
        cast_frozen_linears(model._hf(), HALF[precision])
    return acc


def accelerator(precision: str):
    """An Accelerator for this precision.  accelerate keeps one global state per
    process, so a second run in the same process (a notebook training several
    systems, a test) first resets the non-distributed part of it."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=default_device().type == "cpu",
                       mixed_precision={"fp32": "no"}.get(precision, precision),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def headline(result: dict, system: str) -> dict:
    """The numbers a training run is compared by (``dvc exp show``, ``dvc metrics diff``), under the
    system's name: as ``<system>.train_loss`` they sit beside the evaluation's ``<system>.CIDEr``
    in one ``dvc exp show`` column namespace, not in columns prefixed by each file's path."""
    return {system: {"train_loss": result.get("final_loss"), "val_loss": result.get("val_loss"),
                     "clips_per_s": result.get("clips_per_s")}}


def log_training(log: list[dict], summary: dict, directory: str | Path) -> Path:
    """A run's per-step log as a DVCLive folder: ``plots/metrics/{train/loss,train/lr,val/loss}.tsv``
    by step (``dvc plots show``) and ``metrics.json`` = ``summary`` (the headline numbers, not the
    last value of every series).  Written whole in a temporary folder, then renamed into place."""
    from dvclive import Live

    with atomic_path(directory) as tmp:
        # dvcyaml=None: the pipeline's dvc.yaml declares these files; no git experiment of DVCLive's own
        with Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            for e in log:
                live.step = e["step"]
                live.log_metric("train/loss", e["loss"])
                if "lr" in e:
                    live.log_metric("train/lr", e["lr"])
                if "val_loss" in e:
                    live.log_metric("val/loss", e["val_loss"])
            live.summary = dict(summary)
    return Path(directory)


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
    from .config import Settings
    from .dataset import caption_samples, training_samples, value_targets
    from .features import stored_shape
    from .schema import split_videos
    from .systems import sees_video as system_sees_video

    root = Path(root)
    settings = Settings(params)
    train_videos = split_videos(videos, "train")
    sees_video = system_sees_video(system)
    if not train_videos:
        raise ValueError("the dataset has no videos in the train split; prepare it again with a larger "
                         "prepare.n_videos or a smaller val/test fraction")
    if sees_video and features_dir is None:
        raise ValueError(f"system {system!r} needs frame features, and these videos have none; "
                         f"train text_only instead")
    # the tower's patch count and width come from the features (recorded in the saved config)
    shape = stored_shape(features_dir, train_videos[0]) if sees_video else None
    model_cfg, tau = settings.model(system, vision_shape=shape), settings.tau(system)
    torch.manual_seed(settings.train_seed)  # the fresh LoRA and visual weights are seeded too
    narrator = VideoNarrator.from_llm(model_cfg, root / params["llm"]["path"], settings.lora(),
                                      **settings.llm_kwargs())
    if narrator.visual is not None and params["model"]["qformer_weights"]:
        narrator.visual.load_qformer(root / params["model"]["qformer_weights"])  # BLIP-2 start (paper)
    features_dir = features_dir if sees_video else None
    seed, modes = settings.train_seed, params["train"]["modes"]
    buckets = model_cfg.num_position_buckets
    story = model_cfg.story_clips
    options = narrator.prompt_options
    train_samples = training_samples(narrator.tokenizer, train_videos, features_dir, tau,
                                     modes, seed, buckets, story, options)
    val_samples = training_samples(narrator.tokenizer, split_videos(videos, "val"), features_dir, tau,
                                   modes, seed + 1, buckets, story, options)
    cfg = settings.train(**overrides)
    captions = caption_samples(narrator.tokenizer, train_videos, features_dir, tau, buckets, options) \
        if (cfg.caption_steps and features_dir is not None) else []
    values = val_values = None
    if cfg.qformer_steps and features_dir is not None:
        values = value_targets(train_videos, features_dir, tau)
        val_values = value_targets(split_videos(videos, "val"), features_dir, tau)
        values, val_values = (values or None), (val_values or None)   # real data: no values, no stage 1
    return train(narrator, train_samples, val_samples, cfg, out_dir, progress, stop_after, captions,
                 values, val_values)


def write_train_report(result: dict, system: str, reports_dir: str | Path = "reports") -> Path:
    """``reports/dvclive/<system>/`` (DVCLive: per-step plots, headline metrics) and the whole run
    report with its per-step log, ``reports/train_<system>.json`` (one naming rule for every system,
    so one DVC ``foreach`` stage trains them all); returns the report's path."""
    from .io import write_json

    reports_dir = Path(reports_dir)
    log_training(result["log"], headline(result, system), reports_dir / "dvclive" / system)
    path = reports_dir / f"train_{system}.json"
    write_json(path, {"system": system, **result})
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
