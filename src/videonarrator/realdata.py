"""Real data: the E-SyncVidStory text-side experiment (Chinese, no frames).

The public release of E-SyncVidStory holds text only, so this experiment asks
what the text alone carries: predicting the storyline (the script labels of a
video, clip by clip) and writing each clip's narration inside its character
window from the product knowledge, the story so far and the clip's place in
the video.  Videos are split by video (never by clip).  Systems, scored by the
same code as the synthetic evaluation (character level for Chinese):

* ``majority_label``: every clip gets the most frequent training label;
* ``position_prior``: the most frequent training label at the clip's relative position;
* ``retrieval``: the training narration with the same label and the closest window;
* ``text_only``: the narrator's LLM fine-tuned with LoRA on the training videos,
  no visual input (the same code as the synthetic ``text_only`` system).

Real knowledge blocks are long (about 480 characters, 900 SmolLM2 tokens); on a
CPU the prompt's knowledge is cut to a character budget (``max_knowledge_chars``)
before training and generation, the same for every system that reads it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .schema import Video

# E-SyncVidStory as described by the paper (DESIGN §2: 6,032 videos, 41,292 clips; windows are the
# reference length ±3 characters at about 6 characters per second of video).
PAPER_STATISTICS = {"videos": 6032, "clips": 41292, "clips_per_video": 41292 / 6032, "units_per_second": 6.0}

# English glosses of the knowledge field names, for figures (no CJK font is assumed).
FIELD_EN = {
    "功效": "efficacy", "成分/材质": "ingredients/material", "质量/特性": "quality/feature", "质地": "texture",
    "痛点": "pain point", "通用卖点": "general selling points", "外观": "appearance",
    "适用人群/肤质": "target users/skin type", "活动优惠": "promotion", "相关产品": "related products",
    "生产工艺": "production process", "鉴定/认证": "certification", "专利": "patent", "品牌故事": "brand story",
    "售后服务": "after-sales service",
}


def field_name_en(name: str) -> str:
    """The English gloss of a knowledge field name, or the name itself."""
    return FIELD_EN.get(name, name)


def split_by_video(videos: list[Video], val_fraction: float, test_fraction: float, seed: int) -> list[Video]:
    """Copies of ``videos`` with ``split`` set to train/val/test, by video, seeded.

    The order of the input does not matter (videos are sorted by id first);
    val and test get at least one video each when there are three or more.
    """
    if len({v.id for v in videos}) != len(videos):
        raise ValueError("video ids are not unique; a split by video needs unique ids")
    if len(videos) < 3:
        raise ValueError(f"a train/val/test split needs at least 3 videos, got {len(videos)}")
    ordered = sorted(videos, key=lambda v: v.id)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_test = max(1, round(test_fraction * len(ordered)))
    n_val = max(1, round(val_fraction * len(ordered)))
    if n_test + n_val >= len(ordered):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} leave no training "
                         f"video out of {len(ordered)}")
    split = {}
    for rank, i in enumerate(order):
        split[ordered[i].id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [replace(v, split=split[v.id]) for v in videos]


def trim_knowledge(video: Video, max_chars: int | None) -> Video:
    """A copy of ``video`` whose knowledge items add up to at most ``max_chars`` characters.

    Items are taken round-robin over the fields (every field's first item, then
    every field's second, ...), so a tight budget keeps a little of every field
    instead of all of the first one.  ``None`` keeps everything.
    """
    if max_chars is None:
        return video
    fields = list(video.product.knowledge.items())
    kept: dict[str, list[str]] = {name: [] for name, _ in fields}
    used, depth = 0, 0
    while any(depth < len(items) for _, items in fields):
        for name, items in fields:
            if depth < len(items) and used + len(items[depth]) <= max_chars:
                kept[name].append(items[depth])
                used += len(items[depth])
        depth += 1
    product = replace(video.product, knowledge={k: v for k, v in kept.items() if v})
    return replace(video, product=product)


def prompt_lengths(videos: list[Video], tokenizer, mode: str = "generated") -> dict[str, float]:
    """Mean and max prompt + target tokens per clip (what a training step costs)."""
    from .prompt import build_clip_prompt

    n = [len(tokenizer(build_clip_prompt(v, i, mode).text()).input_ids) for v in videos for i in range(len(v.clips))]
    return {"mean_tokens": float(np.mean(n)), "max_tokens": int(np.max(n)), "clips": len(n)}


def statistics_vs_paper(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of this subset's statistics beside the paper's full-dataset figures."""
    rows = [("videos", stats["videos"], PAPER_STATISTICS["videos"]),
            ("clips", stats["clips"], PAPER_STATISTICS["clips"]),
            ("clips per video", stats["clips_per_video"]["mean"], PAPER_STATISTICS["clips_per_video"]),
            ("characters per second", stats["units_per_second"], PAPER_STATISTICS["units_per_second"]),
            ("clip seconds (mean)", stats["clip_seconds_mean"], None)]
    return [{"statistic": name, "this subset": ours, "paper": paper} for name, ours, paper in rows]


def train_text_model(params: dict, videos: list[Video], out_dir: str | Path, progress: bool = True) -> dict:
    """Fine-tune the text-only narrator on the train split of ``videos`` (knowledge already trimmed).

    ``params`` holds the sections common, llm, model, train and esyncvidstory;
    the esyncvidstory section's run length and attention settings override train's and llm's.
    """
    from .train import train_on_videos

    esv = params["esyncvidstory"]
    params = {**params, "llm": {**params["llm"], "attn_implementation": esv["attn_implementation"]}}
    return train_on_videos(params, "text_only", videos, None, out_dir, progress=progress,
                           **{k: esv[k] for k in ("steps", "batch_size", "checkpoint_every", "eval_every")})


# -- the main pipeline on the official data (frames supplied by the user) ----------------

NO_FRAMES_HINT = ("the main pipeline needs each video's 1-fps frame images; without frames, run the "
                  "text-side profile instead: dvc repro esyncvidstory/dvc.yaml")


def _link_or_copy(src: Path, dst: Path) -> None:
    import os
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)          # no second copy of a large frame set where the filesystem allows
    except OSError:
        shutil.copy2(src, dst)


def prepare_official(esv: dict, seed: int, out_dir: str | Path, skip_bad: bool = False,
                     progress: bool = True) -> tuple[list[Video], dict[str, Any]]:
    """E-SyncVidStory with its frames -> ``out_dir`` (dataset.json + frames/), like the synthetic prepare.

    ``esv`` is the params section (annotations, frames_root, fractions, knowledge
    budget).  Each video's frames are found under ``frames_root`` (``root/name``
    or ``root/<id>/name``) and linked or copied to ``out_dir/frames/<id>/``; the
    clips point there, so the features stage reads them as it reads synthetic
    frames.  A video without frames stops the run naming it, unless
    ``skip_bad``: then it is left out and listed.  Atomic, as prepare_dataset.
    """
    from tqdm.auto import tqdm

    from .data.esyncvidstory import load_esyncvidstory, load_esyncvidstory_report, resolve_frames
    from .io import atomic_path
    from .schema import save_dataset
    from .stats import dataset_statistics

    if not esv["frames_root"]:
        raise ValueError(f"common.dataset is 'esyncvidstory' but esyncvidstory.frames_root is null: {NO_FRAMES_HINT}")
    if skip_bad:
        videos, bad = load_esyncvidstory_report(esv["annotations"])
        skipped = [{"id": vid, "reason": reason} for vid, reason in bad]
    else:
        videos, skipped = load_esyncvidstory(esv["annotations"]), []
    found = []
    for video in videos:
        try:
            paths = resolve_frames(video, esv["frames_root"])
            if not any(paths):
                raise FileNotFoundError(f"video {video.id!r} has no frames under {esv['frames_root']}; {NO_FRAMES_HINT}")
        except FileNotFoundError as err:
            if not skip_bad:
                raise
            skipped.append({"id": video.id, "reason": str(err)})
            continue
        found.append((video, paths))
    if len(found) < 3:
        raise ValueError(f"only {len(found)} videos have frames under {esv['frames_root']} "
                         f"({len(skipped)} skipped); a train/val/test split needs 3 or more")

    trimmed = [trim_knowledge(v, esv["max_knowledge_chars"]) for v, _ in found]
    split = split_by_video(trimmed, esv["val_fraction"], esv["test_fraction"], seed)
    prepared = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for video, (_, paths) in tqdm(list(zip(split, found)), desc="frames", disable=not progress):
            clips = []
            for clip, clip_paths in zip(video.clips, paths):
                rel = [f"frames/{video.id}/{p.name}" for p in clip_paths]
                for src, name in zip(clip_paths, rel):
                    _link_or_copy(src, tmp / name)
                clips.append(replace(clip, frames=rel))
            prepared.append(replace(video, clips=clips))
        save_dataset(prepared, tmp / "dataset.json",
                     meta={"source_annotations": str(esv["annotations"]), "frames_root": str(esv["frames_root"]),
                           "max_knowledge_chars": esv["max_knowledge_chars"], "skipped_videos": skipped})
    stats = dataset_statistics(prepared)
    return prepared, {**stats, "skipped_videos": skipped}
