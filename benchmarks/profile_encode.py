"""Where frame-encoding time goes, per frame: JPEG decode alone, batched encode alone, one-frame encode alone.

    python benchmarks/profile_encode.py                    # frames of the prepared default dataset
    python benchmarks/profile_encode.py --frames 'dir/*/*.jpg' --threads 1

The bound on what batching and decode overlap can gain over a naive per-frame loop follows from
these three numbers (benchmarks/RESULTS.md, "Frame encoding").  Needs `dvc repro prepare` first
(or any folder of JPEG frames).
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
import torch

from videonarrator.features import TowerConfig, _decode_frame, _image_size, encode_frames, load_tower


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", default="data/processed/frames/*/*.jpg", help="glob of JPEG frames")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(glob.glob(args.frames))
    if not paths:
        print(f"error: no frames match {args.frames}; run `dvc repro prepare` first or pass --frames", file=sys.stderr)
        return 1
    for name, n in (("vn-tiny-vit", len(paths)), ("ViT-B-32", min(160, len(paths)))):
        model, _ = load_tower(TowerConfig(name=name, pretrained=None, image_size=None, seed=0))
        size = _image_size(model)
        t = time.perf_counter()
        frames = [_decode_frame(Path(f), size) for f in paths[:n]]
        decode = (time.perf_counter() - t) / n
        batch = torch.from_numpy(np.stack(frames))
        t = time.perf_counter()
        encode_frames(model, batch, batch_size=64)
        batched = (time.perf_counter() - t) / n
        k = min(n, 200)
        t = time.perf_counter()
        for i in range(k):
            encode_frames(model, batch[i:i + 1], batch_size=1)
        single = (time.perf_counter() - t) / k
        print(f"{name}: {n} frames at {size} px, {args.threads} thread(s): decode {1e3 * decode:.2f} ms/frame, "
              f"batched encode {1e3 * batched:.2f} ms/frame, one-frame encode {1e3 * single:.2f} ms/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
