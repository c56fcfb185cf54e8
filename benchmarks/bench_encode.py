"""Frame encoding: the features stage's path versus a naive per-frame loop, over the same JPEG frames.

    python benchmarks/bench_encode.py            # default sizes, about a minute on 2 CPU cores
    python benchmarks/bench_encode.py --quick    # a few seconds: checks that the script works

The frames are the default profile's synthetic ads (80 videos, 2,321 frames of 128 px) drawn at
their 1-fps sample times and written as JPEG (quality 95) into a temporary folder, as the prepare
stage writes them.  For each tower -- the default tiny tower (vn-tiny-vit) on all frames and
open_clip ViT-B-32 on the first ~160 (--vitb32-frames), both random-init (speed does not depend on
the weights; nothing is downloaded):

  project   videonarrator.features.extract_features: frames batched across clips and videos (64),
            the next batch decoded in a thread pool while this one is encoded, one safetensors file
            per video; timed end to end (tower load, content hashes, decode, encode, write).
  naive     load the same tower, then per frame: decode one JPEG with PIL, open_clip's own
            preprocess transform, encode one frame; timed end to end (tower load included).
  cached    a second extract_features call on the same frames: every video's cache key matches,
            nothing is decoded or encoded (tower load, weight fingerprint and frame hashes remain).

The pooled embeddings of both paths must agree (max abs difference printed; the script fails
if they do not), so the speed comparison is of the same work.  Frames/s = frames / wall seconds;
ratio = project frames/s / naive frames/s.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import benchlib  # noqa: F401  (sets the offline environment first)

import torch  # noqa: E402

TOWERS = {"tiny": "vn-tiny-vit", "vitb32": "ViT-B-32"}


def take_frames(videos, max_frames: int | None):
    """The first videos (the last one cut to whole clips) holding about ``max_frames`` frames (None: all)."""
    from dataclasses import replace

    if max_frames is None:
        return list(videos)
    out, n = [], 0
    for v in videos:
        clips = []
        for c in v.clips:
            if n >= max_frames:
                break
            clips.append(c)
            n += len(c.frames)
        if clips:
            out.append(replace(v, clips=clips))
        if n >= max_frames:
            break
    return out


def naive_encode(paths: list[Path], tower: str) -> tuple[torch.Tensor, float]:
    """Load the tower, then decode / preprocess / encode one frame at a time -> (pooled (N, D), seconds)."""
    from PIL import Image

    from videonarrator.features import load_tower

    t0 = time.perf_counter()
    model, preprocess = load_tower(benchlib.settings().tower(name=tower))
    pooled = []
    with torch.inference_mode():
        for p in paths:
            with Image.open(p) as im:
                x = preprocess(im.convert("RGB")).unsqueeze(0)          # (1, 3, S, S)
            emb, _tokens = model.visual(x)                              # (1, D), (1, P, W)
            pooled.append(emb.float())
    return torch.cat(pooled), time.perf_counter() - t0


def bench_tower(key: str, videos, frames_root: Path, work: Path, batch_size: int, figs) -> dict:
    from videonarrator.features import extract_features, load_tower, load_video_features

    tower = TOWERS[key]
    cfg = benchlib.settings().tower(name=tower)
    paths = [frames_root / f for v in videos for c in v.clips for f in c.frames]
    n = len(paths)
    load_tower(cfg)                                        # warm-up: first model build, imports
    for p in paths:                                        # warm-up: frame files in the page cache
        p.read_bytes()
    out_dir = work / f"encode-{key}"
    shutil.rmtree(out_dir, ignore_errors=True)

    t0 = time.perf_counter()
    first = extract_features(videos, frames_root, out_dir, cfg, batch_size=batch_size, progress=False)
    t_project = time.perf_counter() - t0
    naive_pooled, t_naive = naive_encode(paths, tower)
    t0 = time.perf_counter()
    second = extract_features(videos, frames_root, out_dir, cfg, batch_size=batch_size, progress=False)
    t_cached = time.perf_counter() - t0
    assert first["encoded"] == len(videos) and second["encoded"] == 0, (first, second)
    t0 = time.perf_counter()
    load_tower(cfg)
    t_load = time.perf_counter() - t0

    project_pooled = torch.cat([c["pooled"] for v in videos for c in load_video_features(out_dir, v)])
    diff = float((project_pooled - naive_pooled).abs().max())
    scale = float(naive_pooled.abs().max())
    agree = torch.allclose(project_pooled, naive_pooled, rtol=1e-3, atol=1e-4 * max(1.0, scale))

    fps_project, fps_naive = n / t_project, n / t_naive
    print(f"{tower}: {n} frames of {len(videos)} videos, batch {batch_size}, torch threads {torch.get_num_threads()} "
          f"(the project's path encoded with {first['encode_threads']} beside {first['decode_workers']} decoding)")
    print(f"  project (extract_features)  {t_project:7.2f} s  {fps_project:8.1f} frames/s  "
          f"x{fps_project / fps_naive:.2f} vs naive")
    print(f"  naive per-frame loop        {t_naive:7.2f} s  {fps_naive:8.1f} frames/s")
    print(f"  cached rerun                {t_cached:7.2f} s  (x{t_project / t_cached:.1f} faster than the first call; "
          f"tower load alone {t_load:.2f} s)")
    print(f"  pooled embeddings agree: {agree} (max abs difference {diff:.2e}, max |value| {scale:.2f})")
    figs.add(f"{key}.project_fps", fps_project, "frames/s", fps_project / fps_naive, "naive")
    figs.add(f"{key}.naive_fps", fps_naive, "frames/s")
    figs.add(f"{key}.cached_rerun_s", t_cached, "s", t_project / t_cached, "first call (speed-up)")
    figs.add(f"{key}.tower_load_s", t_load, "s")
    figs.add(f"{key}.max_abs_diff", diff, "")
    return {"tower": tower, "frames": n, "videos": len(videos), "project_s": t_project, "naive_s": t_naive,
            "cached_s": t_cached, "tower_load_s": t_load, "agree": bool(agree), "max_abs_diff": diff,
            "project_encode_threads": first["encode_threads"], "project_decode_workers": first["decode_workers"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few frames only (checks the script works)")
    p.add_argument("--tiny-frames", type=int, default=None,
                   help="about this many frames for the tiny tower (default: all 2,321)")
    p.add_argument("--vitb32-frames", type=int, default=160, help="about this many frames for ViT-B-32 (default 160)")
    p.add_argument("--batch-size", type=int, default=64, help="extract_features batch (params.yaml: 64)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    p.add_argument("--work", help="folder for generated frames and features (default: a temp dir)")
    p.add_argument("--json", help="write the figures here (run_all.py)")
    args = p.parse_args()
    if args.quick:
        args.tiny_frames, args.vitb32_frames = 150, 6
    benchlib.set_threads(args.threads)
    machine = benchlib.print_machine_info("frame encoding: extract_features vs a naive per-frame loop")
    figs = benchlib.Figures("encode")
    with ExitStack() as stack:
        work = benchlib.work_dir(args.work, stack)
        videos, frames_root = benchlib.synthetic_frames(work)
        runs = [("tiny", take_frames(videos, args.tiny_frames)), ("vitb32", take_frames(videos, args.vitb32_frames))]
        results = [bench_tower(key, vids, frames_root, work, args.batch_size, figs) for key, vids in runs]
    figs.details["runs"] = results
    figs.write(args.json, machine, args)
    bad = [r["tower"] for r in results if not r["agree"]]
    if bad:
        print(f"error: the two paths' pooled embeddings differ for {bad}: the comparison is not of the same work",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
