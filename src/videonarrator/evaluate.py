"""Evaluation: narrate the test split with every system and score all of them the same way.

Systems (the rows of the results table):

* trained systems (``systems.SYSTEMS``): the full model, the text-only LLM and
  the ablations, each loaded from ``models/<name>``;
* ``zero_shot``: the base LLM with the same prompt and no fine-tuning (a fresh
  LoRA adapter is the identity: its B matrices start at zero);
* ``retrieval``: the training narration whose clip has the same label and the
  closest word-window centre (no model); in generated-storyline mode the label
  is the most frequent training label at the clip's relative position;
* ``majority_label``: every clip gets the most frequent training label (only
  ``label_acc`` is meaningful: the bar to beat).

Text metrics come from given-storyline generation; ``label_acc`` from
generated-storyline generation.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import metrics as M
from .dataset import visual_inputs
from .generate import ClipOutput, GenerationConfig, narrate_videos
from .model import VideoNarrator, position_bucket
from .schema import Video, text_length
from .voice import spoken_fit

POSITION_BINS = 5   # relative-position bins of the label-by-position prior


@dataclass
class Narrations:
    """One system's output for a set of videos, per mode: {video id: [ClipOutput]}."""
    given: dict[str, list[ClipOutput]]
    generated: dict[str, list[ClipOutput]]


# -- baselines without a model ------------------------------------------------------------

def _output(text: str, labels: list[str] | None, video: Video, i: int) -> ClipOutput:
    n = text_length(text, video.language)
    lo, hi = video.clips[i].window
    return ClipOutput(text=text, labels=labels, raw=text, length=n, in_window=lo <= n <= hi, stop="retrieval")


def _position_bin(video: Video, i: int) -> int:
    c = video.clips[i]
    return position_bucket(c.start, c.end, video.duration, POSITION_BINS)


def position_prior(train: list[Video]) -> dict[int, str]:
    """The most frequent training label in each relative-position bin (ties: first seen)."""
    counts: dict[int, Counter] = {b: Counter() for b in range(POSITION_BINS)}
    for v in train:
        for i, c in enumerate(v.clips):
            counts[_position_bin(v, i)].update(c.labels)
    overall = Counter(k for v in train for c in v.clips for k in c.labels).most_common(1)[0][0]
    return {b: (cnt.most_common(1)[0][0] if cnt else overall) for b, cnt in counts.items()}


def majority_label(train: list[Video]) -> str:
    return Counter(k for v in train for c in v.clips for k in c.labels).most_common(1)[0][0]


def retrieve(train: list[Video], video: Video, i: int, labels: list[str]) -> str:
    """The training narration with the same label set and the closest window centre."""
    centre = sum(video.clips[i].window) / 2
    pool = [c for v in train for c in v.clips if c.labels == labels] or [c for v in train for c in v.clips]
    return min(pool, key=lambda c: (abs(sum(c.window) / 2 - centre), c.narration)).narration


def retrieval_narrations(train: list[Video], test: list[Video]) -> Narrations:
    prior = position_prior(train)
    given = {v.id: [_output(retrieve(train, v, i, c.labels), list(c.labels), v, i) for i, c in enumerate(v.clips)]
             for v in test}
    generated = {}
    for v in test:
        outs = []
        for i in range(len(v.clips)):
            label = [prior[_position_bin(v, i)]]
            outs.append(_output(retrieve(train, v, i, label), label, v, i))
        generated[v.id] = outs
    return Narrations(given, generated)


def majority_narrations(train: list[Video], test: list[Video]) -> Narrations:
    label = [majority_label(train)]
    generated = {v.id: [_output("", label, v, i) for i in range(len(v.clips))] for v in test}
    return Narrations(given={}, generated=generated)


def position_prior_narrations(train: list[Video], test: list[Video]) -> Narrations:
    """Labels only: each clip gets the most frequent training label at its relative position."""
    prior = position_prior(train)
    generated = {v.id: [_output("", [prior[_position_bin(v, i)]], v, i) for i in range(len(v.clips))] for v in test}
    return Narrations(given={}, generated=generated)


# -- model systems ------------------------------------------------------------------------

def narrate_with_model(model: VideoNarrator, test: list[Video], features_dir: str | Path | None, tau: float,
                       gen: GenerationConfig, progress: bool = True) -> Narrations:
    """Both storyline modes for every test video."""
    visual = {v.id: visual_inputs(v, features_dir, tau) for v in test} if model.visual is not None else {}
    return Narrations(*(narrate_videos(model, test, visual, replace(gen, mode=mode), progress)
                        for mode in ("given", "generated")))


# -- scoring ------------------------------------------------------------------------------

def _flat(videos: list[Video], outs: dict[str, list[ClipOutput]]):
    return [(v, i, c, outs[v.id][i]) for v in videos for i, c in enumerate(v.clips)]


def grounding_inputs(videos: list[Video], knowledge_vocab: list[str]):
    """Per-clip facts the reference states, what is true of the clip, and the vocabulary
    (visible facts plus every knowledge item of the dataset): for the exact synthetic metrics."""
    from .data.synthetic import VISUAL_VOCAB

    vocab = {**VISUAL_VOCAB, "knowledge": sorted(set(knowledge_vocab))}
    facts, allowed = [], []
    for v in videos:
        items = {it for its in v.product.knowledge.values() for it in its}
        for c in v.clips:
            facts.append({a: c.truth[a] for a in c.truth["stated"]})
            allowed.append({"colour": {c.truth["colour"]}, "shape": {c.truth["shape"]},
                            "action": {c.truth["action"]}, "knowledge": items})
    return facts, allowed, vocab


def score_system(n: Narrations, test: list[Video], language: str, encoder=None, knowledge_vocab=None,
                 meteor: bool = False, clip_scorer=None) -> dict[str, float]:
    """Every metric for one system: text metrics on given-mode output, label_acc on generated."""
    out: dict[str, float] = {}
    if n.given:
        rows = _flat(test, n.given)
        refs = [c.narration for _, _, c, _ in rows]
        hyps = [o.text for *_, o in rows]
        windows = [c.window for _, _, c, _ in rows]
        out.update(M.bleu(refs, hyps, language))
        out["ROUGE-L"] = M.rouge_l(refs, hyps, language)
        out["CIDEr"] = M.cider(refs, hyps, language)
        if meteor:
            out["METEOR"] = M.meteor(refs, hyps, language)
        out["sync_in_window"] = M.sync_in_window(hyps, windows, language)
        out["length_error"] = M.length_error(hyps, windows, language)
        out.update(spoken_fit(hyps, [c.end - c.start for _, _, c, _ in rows], language))
        stories = [[o.text for o in n.given[v.id]] for v in test]
        out["repetition"] = M.mean_repetition(stories, language)
        if knowledge_vocab is not None:   # synthetic data: exact grounding
            facts, allowed, vocab = grounding_inputs(test, knowledge_vocab)
            out["visual_attr_acc"] = M.visual_attr_acc(hyps, facts, {a: vocab[a] for a in ("colour", "shape", "action")})
            out["hallucination_rate"] = M.hallucination_rate(hyps, allowed, vocab)
        if encoder is not None:
            items = [[it for its in v.product.knowledge.values() for it in its] for v in test]
            out.update(M.knowledge_scores(stories, items, encoder))
        if clip_scorer is not None:
            out["emscore"] = clip_scorer(rows)
    if n.generated:
        rows = _flat(test, n.generated)
        out["label_acc"] = M.label_acc([o.labels or [] for *_, o in rows], [c.labels for _, _, c, _ in rows])
    return out


def narrations_to_json(n: Narrations) -> dict:
    def clip(o: ClipOutput) -> dict:
        return {"text": o.text, "labels": o.labels, "length": o.length, "in_window": o.in_window, "stop": o.stop}
    return {mode: {vid: [clip(o) for o in outs] for vid, outs in getattr(n, mode).items()}
            for mode in ("given", "generated")}


def results_table(metrics: dict[str, dict[str, float]], descriptions: dict[str, str]) -> str:
    """A markdown table: one row per system, one column per metric (blank where not defined)."""
    columns = [c for c in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "sync_in_window", "length_error",
                           "spoken_fit", "spoken_overrun_s", "label_acc", "visual_attr_acc", "hallucination_rate",
                           "info_sim", "info_diverse", "repetition", "emscore") if any(c in m for m in metrics.values())]
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, m in metrics.items():
        cells = [f"{m[c]:.3f}" if c in m else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "How each system was obtained:", ""]
    lines += [f"- **{name}**: {descriptions.get(name, '')}" for name in metrics]
    return "\n".join(lines) + "\n"


def length_rows(test: list[Video], outs: dict[str, list[ClipOutput]]) -> list[dict]:
    """Per clip: narration length against its window (a DVC plot and a figure)."""
    return [{"clip": k, "video": v.id, "index": i, "length": o.length, "lo": c.window[0], "hi": c.window[1]}
            for k, (v, i, c, o) in enumerate(_flat(test, outs))]


def emscore_scorer(tower, tokenizer, features_dir: str | Path):
    """A scorer for :func:`score_system`: mean EMScore(X, V) of the narrations against
    their clips' frames (pooled embeddings from the features store, same tower)."""
    import torch

    from .features import load_video_features

    def score(rows) -> float:
        texts = [o.text or " " for *_, o in rows]
        embs = M.clip_text_embed(tower, tokenizer, texts)
        frames = {}
        values = []
        for (v, i, _, _), emb in zip(rows, embs):
            if v.id not in frames:
                frames[v.id] = load_video_features(features_dir, v)
            pooled = frames[v.id][i]["pooled"]
            values.append(M.emscore(emb, torch.as_tensor(pooled))["emscore_xv"])
        return float(np.mean(values))
    return score
