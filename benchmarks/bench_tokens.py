"""Token budget: visual tokens before and after frame compression, memory tokens and the text prompt,
against the LLM's context; and what stays bounded over a 100-clip video and what does not.

    python benchmarks/bench_tokens.py            # SmolLM2's tokenizer, well under a minute
    python benchmarks/bench_tokens.py --quick    # a tiny BPE tokenizer: checks the script works

Counts come from the project's own code, not from formulas: samples are built by
videonarrator.dataset.clip_sample (prompt.build_clip_prompt + the tokenizer, given-storyline mode,
the reference narrations as the story so far) and the visual + memory tokens are the lengths of what
model.VisualEncoder.forward returns for the sample (default VideoNarratorConfig of params.yaml:
num_query_tokens Q per kept frame, memory_frames M groups of earlier frames averaged into M x Q
memory tokens).  Frames are the synthetic ads' 1-fps JPEGs encoded by the default tiny tower and
compressed by compression.compress_frames at params.yaml's tau (0.9).

1. The default dataset (80 videos): per clip, visual tokens before (all frames x Q) and after
   compression (kept frames x Q), memory tokens, text prompt tokens (prefix + suffix), the whole input.
2. One synthetic video of 100 clips: at clips 1, 10, 50 and 100 the bounded part (this clip's visual
   tokens + M x Q memory tokens) next to the part that grows (the text story so far); also the
   frames the Q-Former encodes for the memory (all earlier kept frames: the token count is bounded,
   that compute is not), and at which clip the input would fill the context.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import replace

import benchlib  # noqa: F401  (sets the offline environment first)

import torch  # noqa: E402

CLIPS = (1, 10, 50, 100)


def count(encoder, tok, video, i: int, visual, buckets: int) -> dict:
    """Token counts of clip ``i`` (0-based) as the model would see it."""
    from videonarrator.dataset import clip_sample
    from videonarrator.prompt import build_prefix

    s = clip_sample(tok, video, i, visual, "given", num_buckets=buckets)
    t0 = time.perf_counter()
    with torch.no_grad():
        vis = encoder([s.clip_patches], [s.earlier_patches], [s.bucket])[0]            # (M'Q + FQ, D)
    visual_s = time.perf_counter() - t0
    Q = encoder.cfg.num_query_tokens
    base_prefix = len(tok(build_prefix(video, []), add_special_tokens=False)["input_ids"])   # empty story so far
    text = len(s.prefix_ids) + len(s.suffix_ids)
    return {
        "clip": i + 1, "frames": visual.totals[i], "kept": len(visual.kept[i]),
        "visual_before": visual.totals[i] * Q, "visual_after": len(s.clip_patches) * Q,
        "memory": len(vis) - len(s.clip_patches) * Q, "visual_memory": len(vis),
        "earlier_kept_frames": len(s.earlier_patches), "qformer_frames": len(s.clip_patches) + len(s.earlier_patches),
        "visual_forward_s": visual_s,
        "text": text, "story": len(s.prefix_ids) - base_prefix, "target": len(s.target_ids),
        "input": text + len(vis),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny BPE tokenizer instead of SmolLM2's, 16 videos")
    p.add_argument("--llm", help="converted SmolLM2 folder (default: models/base_llm or a cached conversion)")
    p.add_argument("--clips", type=int, default=100, help="clips of the long video (default 100)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    p.add_argument("--work", help="folder for generated frames and features (default: a temp dir)")
    p.add_argument("--json", help="write the figures here (run_all.py)")
    args = p.parse_args()
    benchlib.set_threads(args.threads)
    machine = benchlib.print_machine_info("token budget: visual, memory and text tokens against the context")

    from transformers import AutoConfig, AutoTokenizer

    from videonarrator.dataset import visual_inputs
    from videonarrator.model import VisualEncoder
    from videonarrator.config import Settings
    from videonarrator.features import stored_shape

    figs = benchlib.Figures("tokens")
    params = benchlib.default_params()
    settings = Settings(params)
    tau = settings.tau()
    with ExitStack() as stack:
        work = benchlib.work_dir(args.work, stack)
        videos, frames_root = benchlib.synthetic_frames(work)
        videos = videos[:16] if args.quick else videos
        features = benchlib.tiny_features(videos, frames_root, work)
        model_cfg = settings.model(vision_shape=stored_shape(features, videos[0]))
        # three videos: the split by video gives val and test one each; the first is the long video
        long_cfg = benchlib.synthetic_config(n_videos=3, min_clips=args.clips, max_clips=args.clips)
        long_videos, long_root = benchlib.synthetic_frames(work, long_cfg)
        long_video = long_videos[0]
        long_features = benchlib.tiny_features([long_video], long_root, long_root)
        llm = benchlib.tiny_llm(work / "tiny-llm", videos) if args.quick else benchlib.find_smollm2(args.llm)
        tok = AutoTokenizer.from_pretrained(llm)
        llm_cfg = AutoConfig.from_pretrained(llm)
        context = llm_cfg.max_position_embeddings
        torch.manual_seed(0)
        encoder = VisualEncoder(replace(model_cfg, llm_dim=llm_cfg.hidden_size)).eval()
        buckets = model_cfg.num_position_buckets
        Q, M = model_cfg.num_query_tokens, model_cfg.memory_frames

        rows = [count(encoder, tok, v, i, visual_inputs(v, features, tau), buckets)
                for v in videos for i in range(len(v.clips))]
        long_visual = visual_inputs(long_video, long_features, tau)
        long_rows = {k: count(encoder, tok, long_video, k - 1, long_visual, buckets) for k in CLIPS if k <= args.clips}

    def stats(key: str) -> tuple[float, float, int]:
        xs = [r[key] for r in rows]
        return statistics.mean(xs), statistics.median(xs), max(xs)

    print(f"LLM tokenizer {llm}, context {context} tokens; Q = {Q} query tokens per kept frame, memory_frames "
          f"M = {M}, tau = {tau}")
    print(f"1. default dataset: {len(videos)} videos, {len(rows)} clips        mean   median    max")
    for key, what in [("frames", "1-fps frames per clip"), ("kept", "kept after compression"),
                      ("visual_before", "visual tokens before compression"),
                      ("visual_after", "visual tokens after compression"), ("memory", "memory tokens"),
                      ("text", "text prompt tokens (prefix + suffix)"), ("target", "target tokens"),
                      ("input", "input tokens (text + visual + memory)")]:
        mean, median, mx = stats(key)
        print(f"   {what:42} {mean:7.1f} {median:8.1f} {mx:6d}")
    before, after = sum(r["visual_before"] for r in rows), sum(r["visual_after"] for r in rows)
    print(f"   compression at tau {tau}: {before} -> {after} visual tokens (x{before / after:.2f} fewer); "
          f"the longest input uses {100 * stats('input')[2] / context:.1f} % of the context")
    figs.add("visual_per_clip.before", stats("visual_before")[0], "tokens")
    figs.add("visual_per_clip.after", stats("visual_after")[0], "tokens", before / after, "before compression (x fewer)")
    figs.add("memory", M * Q, "tokens")
    figs.add("text_prompt.mean", stats("text")[0], "tokens")
    figs.add("input.max", stats("input")[2], "tokens")
    figs.add("input.max_share_of_context", stats("input")[2] / context, "share")
    figs.add("context", context, "tokens")

    print(f"2. one synthetic video of {args.clips} clips ({len(long_video.clips)} clips, "
          f"{sum(long_visual.totals)} frames): bounded vs growing")
    print(f"   {'clip':>4} {'frames':>6} {'kept':>4} | {'visual':>6} {'memory':>6} {'vis+mem':>7} | "
          f"{'story':>6} {'text':>6} | {'input':>6} {'of ctx':>6} | Q-Former frames (memory included)")
    for k, r in long_rows.items():
        print(f"   {k:4d} {r['frames']:6d} {r['kept']:4d} | {r['visual_after']:6d} {r['memory']:6d} "
              f"{r['visual_memory']:7d} | {r['story']:6d} {r['text']:6d} | {r['input']:6d} "
              f"{100 * r['input'] / context:5.1f}% | {r['qformer_frames']:5d} ({1e3 * r['visual_forward_s']:.0f} ms)")
        figs.add(f"clip{k}.visual_memory", r["visual_memory"], "tokens")
        figs.add(f"clip{k}.text", r["text"], "tokens")
        figs.add(f"clip{k}.input", r["input"], "tokens")
        figs.add(f"clip{k}.input_share_of_context", r["input"] / context, "share")
        figs.add(f"clip{k}.qformer_frames", r["qformer_frames"], "frames")
    first, last = long_rows[min(long_rows)], long_rows[max(long_rows)]
    if last["clip"] > first["clip"]:
        per_clip = (last["story"] - first["story"]) / (last["clip"] - first["clip"])
        bounded = max(r["visual_memory"] for r in rows + list(long_rows.values()))
        fixed = first["text"] + bounded + max(r["target"] for r in long_rows.values())
        fill = first["clip"] + (context - fixed) / per_clip
        print(f"   the story so far grows by {per_clip:.1f} tokens per clip; visual + memory stay <= {bounded} tokens "
              f"(memory is always {M} x {Q} = {M * Q} after clip 1); the input would fill the {context}-token "
              f"context at about clip {fill:.0f}")
        figs.add("story_tokens_per_clip", per_clip, "tokens")
        figs.add("clips_to_fill_context", fill, "clips")
    figs.details.update({"llm": str(llm), "context": context, "Q": Q, "M": M, "tau": tau,
                         "long_video": list(long_rows.values()),
                         "dataset": {k: stats(k) for k in ("frames", "kept", "visual_before", "visual_after",
                                                           "memory", "text", "target", "input")}})
    figs.write(args.json, machine, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
