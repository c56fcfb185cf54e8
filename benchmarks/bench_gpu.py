"""The default profile's training and narration on a CUDA GPU: the project's own code paths
(videonarrator.train.train_on_videos, evaluate.narrate_with_model), timed.

    python benchmarks/bench_gpu.py --root . --llm-shape models/base_llm [--steps 150] [--json out.json]

ROOT holds the prepared default data (data/processed/dataset.json and data/features, from
`dvc repro features`).  The LLM has the shape and tokenizer of the folder --llm-shape names (its
config.json and tokenizer files; models/base_llm is SmolLM2-135M-Instruct) but weights drawn at
random from that config: a lent GPU machine cannot receive the 514 MB checkpoint (64 MiB travel).
So the figures are the real model's arithmetic, not its quality: an untrained LLM rarely stops, so
narrations run to evaluate.max_new_tokens, a worst case for decoding.  benchmarks/gpu_check.sh runs
this with the GPU tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def random_llm(shape_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A causal LM with ``shape_dir``'s config and tokenizer and seeded random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_dir))
    model.save_pretrained(out_dir)
    for f in shape_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")) or f.suffix in (".jinja", ".model"):
            shutil.copy(f, out_dir / f.name)
    return out_dir


def main(argv: list[str] | None = None) -> dict:
    from videonarrator.config import Settings
    from videonarrator.evaluate import generation_config, narrate_with_model
    from videonarrator.model import VideoNarrator
    from videonarrator.params import load_params
    from videonarrator.schema import load_dataset, split_videos
    from videonarrator.train import train_on_videos

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=".", help="project root with params.yaml and the prepared data")
    p.add_argument("--llm-shape", required=True, help="LLM folder whose config and tokenizer are used")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: params.yaml's)")
    p.add_argument("--videos", type=int, default=None, help="narrate only the first test videos")
    p.add_argument("--device", default="cuda", help="cuda; cpu only to check the script itself")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device; the CPU figures are benchmarks/bench_train.py's")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    root = Path(args.root)
    params = load_params(root / "params.yaml")
    settings = Settings(params)
    videos, _ = load_dataset(root / "data/processed/dataset.json")
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    params["llm"]["path"] = str(random_llm(Path(args.llm_shape), work / "llm"))   # absolute: root / it = it
    overrides = {"steps": args.steps} if args.steps else {}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    result = train_on_videos(params, "videonarrator", videos, root / "data/features", work / "vn", root,
                             progress=False, **overrides)
    train_s = time.time() - t0
    train_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    narrator = VideoNarrator.from_pretrained(work / "vn", params["llm"]["path"]).to(args.device)
    test = split_videos(videos, "test")[: args.videos]
    gen = generation_config(settings, split_videos(videos, "train"))
    sync()
    t0 = time.time()
    out = narrate_with_model(narrator, test, root / "data/features", settings.tau("videonarrator"), gen,
                             progress=False)
    sync()
    narrate_s = time.time() - t0
    clips = sum(len(v.clips) for v in test)
    tokens = [len(narrator.tokenizer(o.raw, add_special_tokens=False)["input_ids"])
              for outs in (out.given, out.generated) for v in outs.values() for o in v]
    figures = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "precision": result["precision"], "steps": result["steps"],
        "train_wall_s": round(train_s, 1), "train_clips_per_s": round(result["clips_per_s"], 1),
        "positions_per_clip": round(result["positions_per_clip"], 1),
        "train_peak_gpu_gib": round(train_mem, 2), "first_loss": round(result["first_loss"], 3),
        "final_loss": round(result["final_loss"], 3),
        "narrate_clips": 2 * clips, "narrate_wall_s": round(narrate_s, 1),
        "narrate_clips_per_s": round(2 * clips / narrate_s, 2),
        "mean_new_tokens": round(sum(tokens) / len(tokens), 1),
        "narrate_batch_videos": gen.batch_size,
    }
    print("BENCH_GPU_RESULT " + json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
