"""From prepared videos and their frame features to model samples, one per clip.

A sample for clip i of a video holds: the prompt (knowledge, the story so far,
the clip's window and, in given-storyline mode, its label), the patch tokens
of the clip's kept frames (frame compression at threshold tau), the kept
frames of all earlier clips (for the memory tokens) and the clip's position
bucket, and the video's id (training packs a video's clips into one
sequence, see model.pack_layout).  Training uses the reference narrations as
the story so far; generation uses what the model wrote.  A caption sample (the
caption warm-up) holds only the product line, the clip's frames and what they
show.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .compression import compress_frames
from .data.synthetic import VISUAL_ATTRS, VISUAL_VOCAB, clip_caption, clip_values, stated_fact_spans
from .features import load_video_features
from .model import ClipSample, clip_bucket, encode_sample
from .pretrain import ClipValues
from .prompt import PromptOptions, build_caption_prompt, build_clip_prompt
from .schema import Video, clip_place


@dataclass
class VisualInputs:
    """The kept frames of every clip of one video (after compression)."""
    clips: list[torch.Tensor]      # per clip (F_kept, P, W)
    kept: list[list[int]]          # per clip: indices of the kept frames
    totals: list[int]              # per clip: frames before compression

    def earlier(self, i: int) -> torch.Tensor:
        """(F_prev, P, W) kept frames of clips 0..i-1 (0 frames for the first clip)."""
        return torch.cat(self.clips[:i]) if i else self.clips[0][:0]


def compress_clips(per_clip: list[dict[str, torch.Tensor]], tau: float) -> VisualInputs:
    """Per clip {"tokens": (F, P, W), "pooled": (F, D)} -> the kept frames (tau > 1 keeps every frame)."""
    kept = [compress_frames(c["pooled"], tau) for c in per_clip]
    return VisualInputs(clips=[c["tokens"][k] for c, k in zip(per_clip, kept)], kept=kept,
                        totals=[len(c["pooled"]) for c in per_clip])


def visual_inputs(video: Video, features_dir: str | Path, tau: float) -> VisualInputs:
    """Load a video's features and apply frame compression."""
    return compress_clips(load_video_features(features_dir, video), tau)


def clip_sample(tokenizer, video: Video, i: int, visual: VisualInputs | None, mode: str,
                story_so_far: list[str] | None = None, with_target: bool = True,
                num_buckets: int = 100, story_clips: int | None = None,
                options: PromptOptions | None = None) -> ClipSample:
    """The model sample for clip ``i`` (``visual`` None: no visual input, the text-only baseline)."""
    prompt = build_clip_prompt(video, i, mode=mode, story_so_far=story_so_far, story_clips=story_clips,
                               options=options)
    at = prompt.narration_at   # the visible facts' words in the target (weighted in the loss; none at generation)
    spans = [(at + start, at + end) for _, _, start, end in stated_fact_spans(video.clips[i], prompt.target[at:])
             ] if with_target else []
    bucket = clip_bucket(video, i, num_buckets)
    where = {"place": clip_place(video, i), "labels": tuple(video.clips[i].labels)}
    if visual is None:
        empty = torch.zeros(0, 1, 1)
        return encode_sample(tokenizer, prompt, empty, None, bucket, with_target, video.id, spans, **where)
    return encode_sample(tokenizer, prompt, visual.clips[i], visual.earlier(i), bucket, with_target, video.id, spans,
                         **where)


def training_samples(tokenizer, videos: list[Video], features_dir: str | Path | None, tau: float,
                     modes: list[str], seed: int, num_buckets: int = 100,
                     story_clips: int | None = None, options: PromptOptions | None = None) -> list[ClipSample]:
    """One sample per clip; each clip's storyline mode is drawn from ``modes`` (seeded),
    so one model learns both to follow a given label and to predict it."""
    rng = np.random.default_rng(seed)
    samples = []
    for video in videos:
        visual = visual_inputs(video, features_dir, tau) if features_dir is not None else None
        for i in range(len(video.clips)):
            mode = modes[int(rng.integers(len(modes)))]
            samples.append(clip_sample(tokenizer, video, i, visual, mode, num_buckets=num_buckets,
                                       story_clips=story_clips, options=options))
    return samples


def caption_samples(tokenizer, videos: list[Video], features_dir: str | Path, tau: float,
                    num_buckets: int = 100, options: PromptOptions | None = None) -> list[ClipSample]:
    """One caption warm-up sample per clip that has a caption (``synthetic.clip_caption``: the
    generator's truth; real data has none, so none of its clips gives one).  No memory tokens:
    the caption is what this clip's own frames show."""
    samples = []
    for video in videos:
        captions = [clip_caption(c) for c in video.clips]
        if not any(captions):
            continue
        visual = visual_inputs(video, features_dir, tau)
        samples += [caption_sample(tokenizer, video, i, visual, caption, num_buckets, options)
                    for i, caption in enumerate(captions) if caption is not None]
    return samples


def caption_sample(tokenizer, video: Video, i: int, visual: VisualInputs, caption: str, num_buckets: int = 100,
                   options: PromptOptions | None = None) -> ClipSample:
    """Clip ``i``'s caption sample: the product line, its own kept frames (no memory) and ``caption``
    as the target, every caption word weighted as a visible fact's."""
    prompt = build_caption_prompt(video, caption, options=options)
    return encode_sample(tokenizer, prompt, visual.clips[i], None, clip_bucket(video, i, num_buckets), True,
                         video.id, [(prompt.narration_at, len(prompt.target))])


def value_targets(videos: list[Video], features_dir: str | Path, tau: float) -> ClipValues:
    """Stage 1's data (:mod:`videonarrator.pretrain`): the kept frames and visible values of every
    clip that has them (``synthetic.clip_values``; real data has none, so none of its clips counts)."""
    frames, values = [], []
    for video in videos:
        truth = [clip_values(c) for c in video.clips]
        if not any(truth):
            continue
        visual = visual_inputs(video, features_dir, tau)
        for i, v in enumerate(truth):
            if v is not None:
                frames.append(visual.clips[i])
                values.append(v)
    return ClipValues(frames, torch.tensor(values, dtype=torch.long).reshape(len(values), len(VISUAL_ATTRS)),
                      VISUAL_ATTRS, tuple(tuple(VISUAL_VOCAB[k]) for k in VISUAL_ATTRS))
