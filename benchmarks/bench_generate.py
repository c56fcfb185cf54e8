"""How much KV-cache reuse and batching across videos speed up narration (prints figures; not a test).

    python benchmarks/bench_generate.py                       # tiny random LLM, about a minute on 2 CPU cores
    python benchmarks/bench_generate.py --smollm2 /tmp/smollm2 # a converted SmolLM2-135M-Instruct folder
                                                              # (videonarrator.llm.prepare_smollm2(dir) writes one)

Videos of 8 clips with long-ish product knowledge, greedy decoding, a random
visual side (the speed does not depend on trained weights).  Three runs over
the same videos:
  (a) full re-encode: every clip's [prefix][visual][suffix] encoded from scratch, batch 1
  (b) KV-cache reuse: the video's prefix cache extended by one story line per clip, batch 1
  (c) KV-cache reuse, batch_size videos decoded together
(a) and (b) must give identical narrations; (c) is compared too.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from videonarrator.dataset import VisualInputs  # noqa: E402
from videonarrator.generate import GenerationConfig, narrate_videos  # noqa: E402
from videonarrator.llm import LoraSettings, make_tiny_llm  # noqa: E402
from videonarrator.model import VideoNarrator, VideoNarratorConfig  # noqa: E402
from videonarrator.prompt import build_clip_prompt  # noqa: E402
from videonarrator.schema import Clip, Product, Video  # noqa: E402

LABELS = ["pain_point", "product_recommendation", "appearance_design", "texture_material", "product_trial",
          "product_efficacy", "quality_feature", "purchase_guidance"]
FIELDS = {
    "ingredients": ["aloe vera gel from organic farms", "vitamin E", "hyaluronic acid", "green tea extract"],
    "efficacy": ["hydrates dry skin for 24 hours", "calms redness after sun exposure", "softens rough patches"],
    "appearance": ["a slim tube with a flip cap", "a soft matte finish", "fits in a travel bag"],
    "texture": ["light gel cream", "absorbs in seconds", "never sticky or greasy"],
    "price": ["19.99 dollars", "buy two get one free this week", "free shipping over 30 dollars"],
    "certification": ["dermatologist tested", "cruelty free", "no parabens or added perfume"],
    "usage": ["apply a thin layer morning and night", "works under make-up", "keep it in the fridge for a cool feel"],
    "brand": ["a family workshop in Valencia since 1962", "refill packs cut plastic by 70 percent"],
}


def make_videos(n_videos: int, n_clips: int) -> list[Video]:
    videos = []
    for v in range(n_videos):
        clips = [Clip(index=i, start=3.0 * i, end=3.0 * (i + 1), window=(5, 11), labels=[LABELS[(i + v) % 8]],
                      narration="Soft skin starts with a cool drop of aloe.") for i in range(n_clips)]
        # knowledge of slightly different length per video: the batch needs left padding
        knowledge = {k: items[: 2 + (v + j) % 3] for j, (k, items) in enumerate(FIELDS.items())}
        videos.append(Video(id=f"bench{v:02d}", product=Product(f"Aloe Cream No. {v}", knowledge), clips=clips))
    return videos


def make_visual(videos: list[Video], cfg: VideoNarratorConfig, seed: int = 0) -> dict[str, VisualInputs]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for v in videos:
        clips = [torch.randn(1 + i % 3, cfg.num_patches, cfg.vision_width, generator=g) for i in range(len(v.clips))]
        out[v.id] = VisualInputs(clips=clips, kept=[list(range(len(c))) for c in clips], totals=[len(c) for c in clips])
    return out


def build_model(args, videos: list[Video], tmp: str) -> VideoNarrator:
    cfg = VideoNarratorConfig()                      # the default profile's visual side (random init)
    torch.manual_seed(0)
    if args.smollm2:
        return VideoNarrator.from_llm(cfg, args.smollm2, lora=LoraSettings(r=8, alpha=16, dropout=0.0)).eval()
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos[:2] for i in range(len(v.clips))
              for m in ("given", "generated")] * 5
    llm_dir = make_tiny_llm(os.path.join(tmp, "tiny"), corpus, hidden=64, layers=4, heads=4, vocab_size=512)
    return VideoNarrator.from_llm(cfg, llm_dir, lora=LoraSettings(r=4, alpha=8, dropout=0.0)).eval()


def timed(model, videos, visual, cfg) -> tuple[dict, float, float]:
    """Outputs, wall seconds and CPU seconds of this process (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = narrate_videos(model, videos, visual, cfg, progress=False)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def texts(out: dict) -> dict[str, list[str]]:
    return {k: [o.raw for o in v] for k, v in out.items()}


def first_difference(a: dict, b: dict) -> str:
    for vid in a:
        for i, (x, y) in enumerate(zip(a[vid], b[vid])):
            if x.raw != y.raw:
                return f"{vid} clip {i}: {x.raw!r} vs {y.raw!r}"
    return "none"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smollm2", help="a converted SmolLM2 folder (default: a tiny random Llama)")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--mode", choices=("given", "generated"), default="given")
    # On a busy 2-core machine 2 torch threads ran SmolLM2 decoding 10x slower than 1 (they spin against
    # other processes); 0 leaves torch's default.
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    videos = make_videos(args.videos, args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args, videos, tmp)
    visual = make_visual(videos, model.cfg)
    n = sum(len(v.clips) for v in videos)
    prefix_tokens = len(model.tokenizer(build_clip_prompt(videos[0], 0).prefix)["input_ids"])
    print(f"LLM: {'SmolLM2 ' + args.smollm2 if args.smollm2 else 'tiny random Llama'} "
          f"({sum(p.numel() for p in model.llm.parameters()) / 1e6:.1f} M params), torch threads "
          f"{torch.get_num_threads()}, {args.videos} videos x {args.clips} clips = {n} narrations, "
          f"knowledge prefix ~{prefix_tokens} tokens, {args.mode} mode, greedy, max_new_tokens {args.max_new_tokens}")

    base = GenerationConfig(mode=args.mode, temperature=0.0, max_new_tokens=args.max_new_tokens, batch_size=1)
    narrate_videos(model, videos[:1], visual, replace(base, max_new_tokens=2), progress=False)   # warm-up

    full, *t_full = timed(model, videos, visual, replace(base, reencode=True))
    cached, *t_cached = timed(model, videos, visual, base)
    batched, *t_batched = timed(model, videos, visual, replace(base, batch_size=args.batch_size))
    runs = {"a": t_full, "b": t_cached, "c": t_batched}
    wall = {k: n / t[0] for k, t in runs.items()}     # narrations per wall second
    cpu = {k: n / t[1] for k, t in runs.items()}      # narrations per CPU second of this process

    def line(name: str, k: str, vs: list[str]) -> str:
        ratios = ", ".join(f"x{wall[k] / wall[o]:.2f} wall / x{cpu[k] / cpu[o]:.2f} cpu vs ({o})" for o in vs)
        return (f"{name}: {runs[k][0]:6.1f} s wall {wall[k]:6.2f} narrations/s | {runs[k][1]:6.1f} s cpu "
                f"{cpu[k]:6.2f} narrations/cpu-s" + (f" | {ratios}" if ratios else ""))
    print(line("(a) full re-encode, batch 1", "a", []))
    print(line("(b) KV-cache reuse, batch 1", "b", ["a"]))
    print(line(f"(c) KV-cache reuse, batch {args.batch_size}", "c", ["b", "a"]))

    same_ab = texts(full) == texts(cached)
    same_bc = texts(batched) == texts(cached)
    print(f"identical narrations (a) == (b): {same_ab}"
          + ("" if same_ab else f"; first difference: {first_difference(full, cached)}"))
    print(f"identical narrations (c) == (b): {same_bc}"
          + ("" if same_bc else f"; first difference: {first_difference(cached, batched)}"))
    outs = [o for v in cached.values() for o in v]
    stops = Counter(o.stop for o in outs)
    print(f"length control (b): {sum(o.in_window for o in outs)}/{len(outs)} inside their window, "
          f"stops {dict(stops)}, mean length {sum(o.length for o in outs) / len(outs):.1f} words")
    print(f"first video, (b): window {videos[0].clips[0].window}")
    for i, o in enumerate(cached[videos[0].id][:4]):
        print(f"  clip {i + 1}: [{o.length} words, {o.stop}] {o.text!r}")
    assert same_ab, "KV-cache reuse changed the narrations"
    return 0


if __name__ == "__main__":
    sys.exit(main())
