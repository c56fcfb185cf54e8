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

from .progress import progress_bar
from .schema import Video, split_by_rank

# E-SyncVidStory as described by the paper (Yang et al., ACL 2024: 6,032 videos, 41,292 clips; windows are the
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
    split = {ordered[i].id: name for i, name in split_by_rank(order, val_fraction, test_fraction).items()}
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
    """Rows of this data's statistics beside the paper's full-dataset figures (None: not given there)."""
    rows = [("videos", stats["videos"], PAPER_STATISTICS["videos"]),
            ("clips", stats["clips"], PAPER_STATISTICS["clips"]),
            ("clips per video", stats["clips_per_video"]["mean"], PAPER_STATISTICS["clips_per_video"]),
            ("characters per second", stats["units_per_second"], PAPER_STATISTICS["units_per_second"]),
            ("clip seconds (mean)", stats["clip_seconds_mean"], None)]
    if "multi_label_share" in stats:
        rows.append(("clips with 2+ labels", stats["multi_label_share"], None))
    return [{"statistic": name, "these videos": ours, "paper": paper} for name, ours, paper in rows]


def label_distribution(videos: list[Video]) -> list[dict[str, Any]]:
    """Per script label: clips carrying it and their share of all clips (a multi-label clip counts
    for each of its labels), most frequent first."""
    from collections import Counter

    from .labels import LABEL_EN, LABEL_ZH, LABELS

    counts = Counter(k for v in videos for c in v.clips for k in c.labels)
    n_clips = sum(len(v.clips) for v in videos)
    order = sorted(LABELS, key=lambda k: (-counts[k], LABELS.index(k)))
    return [{"label": LABEL_EN[k], "name": LABEL_ZH[k], "clips": counts[k], "share": counts[k] / n_clips}
            for k in order]


def train_text_model(params: dict, videos: list[Video], out_dir: str | Path, progress: bool = True) -> dict:
    """Fine-tune the text-only narrator on the train split of ``videos`` (knowledge already trimmed).

    ``params`` holds the sections common, llm, model, train and esyncvidstory;
    the esyncvidstory section's run length and attention settings override train's and llm's.
    """
    from .train import train_on_videos

    esv = params["esyncvidstory"]
    params = {**params, "llm": {**params["llm"], "attn_implementation": esv["attn_implementation"]}}
    return train_on_videos(params, "text_only", videos, None, out_dir, progress=progress,
                           **{k: esv[k] for k in ("steps", "batch_size", "checkpoint_every", "eval_every",
                                                        "label_weight")})


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
        for video, (_, paths) in progress_bar(list(zip(split, found)), desc="frames", disable=not progress):
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


# -- reporting over test videos, with intervals -------------------------------------------
# Every figure below comes with a 95 % cluster-bootstrap interval that resamples whole test
# videos (clips of one video share a product and a story, so they are not independent) and
# with the count behind it.  Resamples are seeded: the same outputs give the same intervals.

def _label_sets(outs) -> list[set[str]]:
    return [set(o.labels or ()) for o in outs]   # no parsable label: an empty set, wrong for every clip


def label_counts(test: list[Video], generated: dict) -> tuple[list[str], np.ndarray]:
    """Labels seen in the truth or the predictions (``LABELS`` order) and per video and label the
    true positives, false positives and false negatives: an array (videos, labels, 3)."""
    from .labels import LABELS

    pairs = [(set(c.labels), p) for v in test for c, p in zip(v.clips, _label_sets(generated[v.id]))]
    seen = set().union(*(t | p for t, p in pairs)) if pairs else set()
    labels = [k for k in LABELS if k in seen]
    counts = np.zeros((len(test), len(labels), 3))
    for vi, v in enumerate(test):
        for c, pred in zip(v.clips, _label_sets(generated[v.id])):
            true = set(c.labels)
            for li, k in enumerate(labels):
                counts[vi, li] += (k in pred and k in true, k in pred and k not in true, k in true and k not in pred)
    return labels, counts


def _f1(summed: np.ndarray) -> np.ndarray:
    """Per label F1 = 2 TP / (2 TP + FP + FN) from summed counts (NaN where a label has none)."""
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def macro_f1(counts: np.ndarray) -> float:
    """Mean per-label F1 over the labels that occur (truth or prediction) in the given videos."""
    f1 = _f1(counts.sum(axis=0))
    return float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else float("nan")


def label_report(test: list[Video], generated: dict, n_boot: int, seed: int) -> dict[str, Any]:
    """Generated-storyline labels against the truth: exact-set accuracy, macro-F1 and per-label F1,
    each with its interval over test videos (``generated``: {video id: [ClipOutput]})."""
    from .intervals import bootstrap_ci, rate_ci

    hits = [sum(set(c.labels) == p for c, p in zip(v.clips, _label_sets(generated[v.id]))) for v in test]
    clips = [len(v.clips) for v in test]
    labels, counts = label_counts(test, generated)
    lo, hi = bootstrap_ci(len(test), lambda idx: macro_f1(counts[idx]), n_boot, seed)
    per_label = {}
    for li, k in enumerate(labels):
        f_lo, f_hi = bootstrap_ci(len(test), lambda idx, li=li: float(_f1(counts[idx, li].sum(axis=0))), n_boot, seed)
        tp, fp, fn = counts[:, li].sum(axis=0)
        per_label[k] = {"value": float(_f1(counts[:, li].sum(axis=0))), "lo": f_lo, "hi": f_hi,
                        "support": int(tp + fn), "predicted": int(tp + fp)}
    return {"label_acc": rate_ci(hits, clips, n_boot, seed),
            "macro_f1": {"value": macro_f1(counts), "lo": lo, "hi": hi, "labels": len(labels)},
            "label_f1": per_label}


def caption_report(test: list[Video], given: dict, n_boot: int, seed: int) -> dict[str, Any]:
    """Given-storyline narrations against the references, character level, with intervals:
    BLEU-4 and CIDEr recomputed on each resample (corpus metrics), ROUGE-L, the signed length
    error, the share inside the window and the repetition across a video as means."""
    from . import metrics as M
    from .intervals import bootstrap_ci, rate_ci, ratio
    from .schema import text_length

    refs = [[c.narration for c in v.clips] for v in test]
    hyps = [[o.text for o in given[v.id]] for v in test]
    n = [len(r) for r in refs]

    def corpus(metric, idx):
        return metric([r for i in idx for r in refs[i]], [h for i in idx for h in hyps[i]], "zh")

    out: dict[str, Any] = {}
    for name, metric in (("BLEU-4", lambda r, h, lang: M.bleu(r, h, lang)["BLEU-4"]), ("CIDEr", M.cider)):
        lo, hi = bootstrap_ci(len(test), lambda idx, m=metric: corpus(m, idx), n_boot, seed)
        out[name] = {"value": corpus(metric, range(len(test))), "lo": lo, "hi": hi, "clips": sum(n)}
    per_video = {
        "ROUGE-L": [sum(M.rouge_l([r], [h], "zh") for r, h in zip(rs, hs)) for rs, hs in zip(refs, hyps)],
        "length_error": [sum(text_length(h, "zh") - sum(c.window) / 2 for c, h in zip(v.clips, hs))
                         for v, hs in zip(test, hyps)],
    }
    for name, sums in per_video.items():
        stat = ratio(sums, n)
        lo, hi = bootstrap_ci(len(test), stat, n_boot, seed)
        out[name] = {"value": stat(range(len(test))), "lo": lo, "hi": hi, "clips": sum(n)}
    in_window = [sum(c.window[0] <= text_length(h, "zh") <= c.window[1] for c, h in zip(v.clips, hs))
                 for v, hs in zip(test, hyps)]
    out["sync_in_window"] = rate_ci(in_window, n, n_boot, seed)
    rep = [M.repetition(hs, "zh") for hs in hyps]
    stat = ratio(rep, [1] * len(test))
    lo, hi = bootstrap_ci(len(test), stat, n_boot, seed)
    out["repetition"] = {"value": stat(range(len(test))), "lo": lo, "hi": hi, "videos": len(test)}
    return out


def narration_examples(test: list[Video], given: dict, n: int = 2) -> list[dict[str, Any]]:
    """The ``n`` best and ``n`` worst given-storyline narrations by character ROUGE-L against the
    reference (ties: the best in video and clip order, the worst in reverse), as rows to show
    beside their references; a clip is never both."""
    from . import metrics as M
    from .labels import format_labels
    from .schema import text_length

    scored = [(M.rouge_l([c.narration], [o.text], "zh"), v, i)
              for v in test for i, (c, o) in enumerate(zip(v.clips, given[v.id])) if c.narration]
    order = sorted(range(len(scored)), key=lambda k: -scored[k][0])
    best = order[:n]
    picks = [("best", k) for k in best] + [("worst", k) for k in order[::-1] if k not in best][:n]
    rows = []
    for kind, k in picks:
        score, v, i = scored[k]
        clip, text = v.clips[i], given[v.id][i].text
        rows.append({"": kind, "video": v.id, "product": v.product.name, "clip": f"{i + 1}/{len(v.clips)}",
                     "label": format_labels(clip.labels, "zh"), "reference": clip.narration, "generated": text,
                     "characters (window)": f"{text_length(text, 'zh')} ({clip.window[0]}-{clip.window[1]})",
                     "ROUGE-L": round(score, 3)})
    return rows


def interval_report(outputs: dict[str, Any], test: list[Video], n_boot: int, seed: int,
                    references: tuple[str, ...] = ("position_prior",)) -> dict[str, Any]:
    """Every system's figures with intervals, and each labelling system's label_acc minus each
    ``references`` system's on the same resampled videos (``outputs``: {system: Narrations})."""
    from .intervals import LEVEL, paired_difference_ci, ratio

    systems: dict[str, Any] = {}
    for name, n in outputs.items():
        systems[name] = {}
        if n.given:
            systems[name].update(caption_report(test, n.given, n_boot, seed))
        if n.generated:
            systems[name].update(label_report(test, n.generated, n_boot, seed))
    clips = [len(v.clips) for v in test]

    def acc(n) -> Any:
        return ratio([sum(set(c.labels) == p for c, p in zip(v.clips, _label_sets(n.generated[v.id])))
                      for v in test], clips)
    differences = {}
    for reference in (r for r in references if r in outputs and outputs[r].generated):
        for name, n in outputs.items():
            if name != reference and n.generated:
                differences[f"{name} - {reference}"] = {
                    "label_acc": paired_difference_ci(acc(n), acc(outputs[reference]), len(test), n_boot, seed)}
    return _finite({"n_boot": n_boot, "level": LEVEL, "seed": seed, "test_videos": len(test),
                    "test_clips": sum(clips), "systems": systems, "differences": differences})


def _finite(obj: Any) -> Any:
    """NaN (a figure undefined on these videos) -> None, so the report is valid JSON for DVC."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def interval_tables(report: dict[str, Any]) -> str:
    """Markdown: one row per system (value [lo, hi]; label_acc with k/n), the paired differences,
    and per-label F1 in generated-storyline mode."""
    from .intervals import format_ci
    from .labels import LABEL_EN

    def ci(m: dict | None) -> str:
        if m is None:
            return ""
        if m["value"] is None:
            return "n/a"
        if m["lo"] is None:
            return f"{m['value']:.3f}"
        return format_ci(m["value"], m["lo"], m["hi"], 3)

    columns = ["label_acc", "macro_f1", "BLEU-4", "ROUGE-L", "CIDEr", "sync_in_window", "length_error", "repetition"]
    lines = [f"Intervals: {report['level']:.0%} cluster bootstrap over the {report['test_videos']} test videos "
             f"({report['test_clips']} clips), {report['n_boot']} resamples, seed {report['seed']}.", "",
             "| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, m in report["systems"].items():
        cells = [ci(m.get(c)) for c in columns]
        if "label_acc" in m:
            cells[0] += f" ({m['label_acc']['k']:.0f}/{m['label_acc']['n']:.0f})"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report["differences"]:
        lines += ["", "| difference (same resampled videos) | label_acc |", "|---|---|"]
        lines += [f"| {name} | {ci(d['label_acc'])} |" for name, d in report["differences"].items()]
    labelled = {name: m["label_f1"] for name, m in report["systems"].items() if "label_f1" in m}
    if labelled:
        keys = [k for k in LABEL_EN if any(k in f for f in labelled.values())]
        lines += ["", "Per-label F1 (generated storyline; support = test clips with the label):", "",
                  "| label | support | " + " | ".join(labelled) + " |", "|---|---|" + "---|" * len(labelled)]
        for k in keys:
            support = next(f[k]["support"] for f in labelled.values() if k in f)
            lines.append(f"| {LABEL_EN[k]} | {support} | " + " | ".join(ci(f.get(k)) for f in labelled.values()) + " |")
    return "\n".join(lines) + "\n"

