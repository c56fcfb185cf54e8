"""Bounded resources on a long video: 100 clips, narrated clip by clip (tiny LLM, tiny narrator).

What stays bounded per clip:

- the **visual input** of clip i is ``min(M, F_prev) * Q + F_i * Q`` embeddings (M =
  ``model.memory_frames``, Q = ``model.num_query_tokens``, F = kept frames): the memory tokens
  are group means over the earlier frames, the same number at clip 1 and at clip 99;
- the per-clip working KV cache (visual, suffix, generated tokens) is dropped after each clip.

What grows with the clip index:

- in training, the **work behind the memory**: a sample's ``earlier_patches`` hold every earlier
  kept frame and ``VisualEncoder.forward`` runs the Q-Former over all of them (the gradient must
  reach them), so a late clip's sample costs O(i) Q-Former work.  Generation does not: it keeps
  each frame's Q-Former output and the memory reads those, so every frame is encoded once
  (tested below);
- the **text story so far**, unless ``model.story_clips`` bounds it: by default (null, as in the
  paper) clip i's prompt holds the i narrations written before it (``prompt.build_prefix``), so
  the prompt, the video's prefix KV cache and the attention cost grow linearly with the clip
  index, and a video long enough overflows the LLM's context (8k tokens for SmolLM2: roughly
  300-400 clips of 20-token narrations).  With ``story_clips: k`` the prompt keeps the last k
  narrations and stays bounded (tested below).  Each ``ClipOutput`` keeps its prompt text.

Measured here (2-core CPU): 100 clips in about 2 s; resident memory grows about 5 MB from clip 10
to clip 100 (the prefix KV cache of 1,137 tokens is 2.2 MB of it); a leak of every clip's working
cache, tried by hand, grew it by 125 MB, so the 25 MB bound below catches one.
"""
import ctypes
import os
import resource
import time

import pytest
import torch

from helpers import DEFAULTS, make_tiny_llm
from videonarrator.dataset import VisualInputs
from videonarrator.generate import narrate_videos
from videonarrator.model import VideoNarrator, VideoNarratorConfig, clip_bucket
from videonarrator.prompt import build_clip_prompt
from videonarrator.schema import Clip, Product, Video

N_CLIPS, FRAMES, P, W, Q, M = 100, 2, 5, 16, 4, 2
HIDDEN = 256               # LLM width: 2 layers x (k, v) x 2 kv heads x 64 dims x 4 bytes = 2 KiB of KV cache per token
NARR = ["Dry skin all winter?", "Meet the aloe cream.", "Grab it today.", "Soft and calm skin."]


def long_video() -> Video:
    clips = [Clip(index=i, start=2.0 * i, end=2.0 * i + 2, window=(2, 6), labels=["pain_point"],
                  narration=NARR[i % len(NARR)]) for i in range(N_CLIPS)]
    return Video(id="long", product=Product("Aloe Cream", {"ingredients": ["aloe vera", "vitamin E"]}), clips=clips)


def rss_mb() -> float:
    """Resident memory now, after handing freed heap memory back to the OS (glibc keeps freed
    blocks of the growing temporary tensors otherwise, which is not memory anything holds)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    video = long_video()
    corpus = [build_clip_prompt(video, i, mode="given").text() for i in range(8)] * 5
    llm = make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", corpus, hidden=HIDDEN, heads=4)
    torch.manual_seed(0)
    cfg = VideoNarratorConfig(vision_width=W, num_patches=P, qformer_hidden=16, qformer_layers=1, qformer_heads=2,
                              num_query_tokens=Q, memory_frames=M,
                              patch_pos_embed=True, story_clips=None, label_head=False)
    model = VideoNarrator.from_llm(cfg, llm, DEFAULTS.lora(r=2, dropout=0.0)).eval()
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(FRAMES, P, W, generator=g) for _ in range(N_CLIPS)]
    visual = VisualInputs(clips=clips, kept=[list(range(FRAMES))] * N_CLIPS, totals=[FRAMES] * N_CLIPS)
    return video, model, visual


def test_visual_and_memory_input_per_clip_is_bounded(setup):
    video, model, visual = setup
    sizes, earlier = {}, {}
    with torch.no_grad():
        for i in (0, 1, 10, 50, 99):
            (out,) = model.visual([visual.clips[i]], [visual.earlier(i)], [clip_bucket(video, i)])
            sizes[i], earlier[i] = out.shape[0], len(visual.earlier(i))
    assert sizes[0] == FRAMES * Q                                   # no earlier clip, no memory
    assert sizes[1] == sizes[10] == sizes[50] == sizes[99] == M * Q + FRAMES * Q
    assert earlier[99] == 99 * FRAMES                               # ... but the Q-Former input grows


def test_narrating_100_clips_keeps_memory_bounded(setup, monkeypatch):
    video, model, visual = setup
    rss, prefix_tokens, encoded = {}, {}, []
    encode = model.visual.encode_frames
    monkeypatch.setattr(model.visual, "encode_frames", lambda x: encoded.append(len(x)) or encode(x))

    def on_clip(vid, i, out):
        if i in (10, 50, N_CLIPS - 1):
            rss[i] = rss_mb()
            prefix_tokens[i] = len(model.tokenizer(out.prompt.prefix, add_special_tokens=False)["input_ids"])

    t0 = time.perf_counter()
    cfg = DEFAULTS.generation(temperature=0, max_new_tokens=3, batch_size=1)
    outputs = narrate_videos(model, [video], {video.id: visual}, cfg, progress=False, on_clip=on_clip)["long"]
    seconds = time.perf_counter() - t0
    assert len(outputs) == N_CLIPS
    assert encoded == [FRAMES] * N_CLIPS            # each clip's frames through the Q-Former once, nothing more
    # what grows: the story so far (the prompt prefix of clip i holds i narrations)
    assert prefix_tokens[10] < prefix_tokens[50] < prefix_tokens[N_CLIPS - 1]
    # what must not: resident memory from clip 10 to clip 100
    growth = rss[N_CLIPS - 1] - rss[10]
    print(f"100 clips in {seconds:.1f} s; RSS {rss}; prefix tokens {prefix_tokens}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    assert growth < 25, f"resident memory grew {growth:.0f} MB from clip 10 to clip 100"


def test_a_story_window_keeps_the_prompt_of_a_long_video_bounded(setup):
    """model.story_clips: the prompt of clip 99 is as long as that of clip 10."""
    video, model, visual = setup
    from dataclasses import replace

    bounded = VideoNarrator(replace(model.cfg, story_clips=5), model.llm, model.tokenizer)
    bounded.visual = model.visual
    prefix_tokens = {}

    def on_clip(vid, i, out):
        if i in (10, 50, N_CLIPS - 1):
            prefix_tokens[i] = len(model.tokenizer(out.prompt.prefix, add_special_tokens=False)["input_ids"])

    cfg = DEFAULTS.generation(temperature=0, max_new_tokens=3, batch_size=1)
    narrate_videos(bounded, [video], {video.id: visual}, cfg, progress=False, on_clip=on_clip)
    assert max(prefix_tokens.values()) - min(prefix_tokens.values()) <= 15, prefix_tokens
    assert "Story so far:\n95. " in bounded_prompt(bounded, video, visual)


def bounded_prompt(model, video, visual) -> str:
    return build_clip_prompt(video, 99, mode="given", story_so_far=[c.narration for c in video.clips[:99]],
                             story_clips=model.cfg.story_clips).prefix


def test_importing_the_package_bounds_onednns_kernel_cache_unless_the_environment_sets_it():
    """Packed training meets new shapes every step; oneDNN's default 1,024 cached kernels grew a
    default training to 6.2 GB (benchmarks/RESULTS.md).  The bound must be in the environment
    before torch runs its first kernel, so importing the package sets it."""
    import subprocess
    import sys

    code = ("import os, videonarrator, torch; torch.ones(2) @ torch.ones(2); "
            "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])")
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "128"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "7"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "7"
