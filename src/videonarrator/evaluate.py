"""Evaluation: narrate the test split with every system and score all of them the same way.

Systems (the rows of the results table):

* trained systems (``systems.SYSTEMS``): the full model, the text-only LLM and
  the ablations, each loaded from ``models/<name>``;
* controls on the trained video model: ``shuffled_frames`` (each test video's
  frames replaced by another test video's) and ``blank_frames`` (every clip
  one blank grey frame): a model that uses the video falls to chance on the
  visible facts there;
* ``zero_shot``: the base LLM with the same prompt and no fine-tuning;
* no-learning references (:func:`reference_rows`): ``chance`` (analytic, from
  the generator's rules), ``template_guess`` / ``template_oracle`` (the
  synthetic generator's own grammar with guessed / true visible values),
  ``position_prior`` (label and narration from the clip's relative position),
  ``majority_label``, ``retrieval`` (the training narration of the same
  product category with the same label and the closest window).

Text metrics come from given-storyline generation; label metrics from
generated-storyline generation; ``*_free`` from given-storyline generation
with length control off (the model's own sense of length).  Every rate comes
with its count (``*_n``) and a 95 % interval that resamples test videos
(``*_lo``, ``*_hi``; :mod:`videonarrator.intervals`).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import intervals as I
from . import metrics as M
from .dataset import VisualInputs, visual_inputs
from .generate import ClipOutput, GenerationConfig, NarrationPass, narrate_passes
from .labels import LABELS, label_candidates
from .model import VideoNarrator, default_device, position_bucket
from .prompt import PromptOptions, chat_wrap
from .schema import Video, text_length
from .voice import spoken_fit

POSITION_BINS = 5   # relative-position bins of the label-by-position prior
BLANK_GREY = 128    # the blank frame of the blank_frames control


@dataclass
class Narrations:
    """One system's output for a set of videos, per mode: {video id: [ClipOutput]}.

    ``free``: given-storyline output with length control off (model systems only)."""
    given: dict[str, list[ClipOutput]]
    generated: dict[str, list[ClipOutput]]
    free: dict[str, list[ClipOutput]] = field(default_factory=dict)


# -- baselines without a model ------------------------------------------------------------

def _output(text: str, labels: list[str] | None, video: Video, i: int) -> ClipOutput:
    n = text_length(text, video.language)
    lo, hi = video.clips[i].window
    return ClipOutput(text=text, labels=labels, raw=text, length=n, in_window=lo <= n <= hi, stop="baseline")


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


def _category(video: Video) -> str | None:
    return video.truth.get("category")


def retrieve(train: list[Video], video: Video, i: int, labels: list[str]) -> str:
    """The training narration of the same product category (where the data has one) with the
    same label set and the closest window centre; falls back to any label, then any category."""
    centre = sum(video.clips[i].window) / 2
    same = [v for v in train if _category(v) == _category(video)] or train
    pool = ([c for v in same for c in v.clips if c.labels == labels] or [c for v in same for c in v.clips])
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


def position_prior_narrations(train: list[Video], test: list[Video], with_text: bool = False) -> Narrations:
    """Each clip gets the most frequent training label at its relative position; ``with_text``:
    also the narration of the training clip closest in relative position and window centre
    (same category), scored as this row's narrations (it uses no label)."""
    prior = position_prior(train)
    generated, given = {}, {}
    for v in test:
        texts = [_position_narration(train, v, i) if with_text else "" for i in range(len(v.clips))]
        generated[v.id] = [_output(t, [prior[_position_bin(v, i)]], v, i) for i, t in enumerate(texts)]
        if with_text:
            given[v.id] = [_output(t, None, v, i) for i, t in enumerate(texts)]
    return Narrations(given=given, generated=generated)


def _position_narration(train: list[Video], video: Video, i: int) -> str:
    def mid(v: Video, k: int) -> float:
        return (v.clips[k].start + v.clips[k].end) / 2 / v.duration
    same = [v for v in train if _category(v) == _category(video)] or train
    centre = sum(video.clips[i].window) / 2
    best = min(((abs(mid(v, k) - mid(video, i)), abs(sum(c.window) / 2 - centre), c.narration)
                for v in same for k, c in enumerate(v.clips)))
    return best[2]


def template_rows(test: list[Video], seed: int) -> dict[str, Narrations]:
    """``template_guess`` and ``template_oracle``: the synthetic generator's grammar with guessed /
    true visible values (given-storyline only: they know the labels)."""
    from .data.synthetic import template_narrations

    rows = {}
    for name, oracle in (("template_guess", False), ("template_oracle", True)):
        texts = template_narrations(test, seed, oracle)
        rows[name] = Narrations(given={v.id: [_output(t, list(c.labels), v, i)
                                              for i, (t, c) in enumerate(zip(texts[v.id], v.clips))]
                                       for v in test}, generated={})
    return rows


REFERENCE_DESCRIPTIONS = {
    "chance": "analytic: every stated fact guessed among the values not yet stated in the video (the generator's "
              "rule); a uniform guess among the 12 labels",
    "template_guess": "no learning: the synthetic generator's grammar, given the label, duration and knowledge, "
                      "with guessed visible values (it states the facts its own word budget allows, so it can "
                      "fall below chance, which guesses every fact)",
    "template_oracle": "no learning: the same grammar with the true visible values (an upper reference)",
    "position_prior": "no learning: the most frequent training label at the clip's relative position, and the "
                      "training narration (same category) closest in position and window",
    "majority_label": "every clip gets the most frequent training label (label metrics only)",
    "retrieval": "no learning: the training narration of the same product category with the same label and the "
                 "closest window; in generated-storyline mode the label is the position prior's",
}


def reference_rows(train: list[Video], test: list[Video], seed: int, synthetic: bool
                   ) -> tuple[dict[str, Narrations], dict[str, str]]:
    """Every no-learning row but ``chance`` (see :func:`chance_metrics`), with descriptions."""
    rows = template_rows(test, seed) if synthetic else {}
    rows["position_prior"] = position_prior_narrations(train, test, with_text=True)
    rows["majority_label"] = majority_narrations(train, test)
    rows["retrieval"] = retrieval_narrations(train, test)
    return rows, {name: REFERENCE_DESCRIPTIONS[name] for name in rows}


# -- model systems and controls -------------------------------------------------------------

def narrate_rows(model: VideoNarrator, test: list[Video], gen: GenerationConfig,
                 rows: dict[str, tuple[dict[str, VisualInputs] | None, bool]], progress: bool = True
                 ) -> dict[str, Narrations]:
    """Several rows of one model narrated in one batched run (``generate.narrate_passes``):
    ``rows[name] = (visual, free)``: both storyline modes for every test video from ``visual``
    ({video id: VisualInputs}; None: a text-only model), and with ``free`` also given mode
    with length control off."""
    passes = {}
    for name, (visual, free) in rows.items():
        modes = {"given": replace(gen, mode="given"), "generated": replace(gen, mode="generated")}
        if free:
            modes["free"] = replace(gen, mode="given", length_control=False)
        for mode, cfg in modes.items():
            passes[f"{name}/{mode}"] = NarrationPass(test, visual or {}, cfg)
    out = narrate_passes(model, passes, progress)
    return {name: Narrations(out[f"{name}/given"], out[f"{name}/generated"], out.get(f"{name}/free", {}))
            for name in rows}


def narrate_with_model(model: VideoNarrator, test: list[Video], features_dir: str | Path | None, tau: float,
                       gen: GenerationConfig, progress: bool = True,
                       visual: dict[str, VisualInputs] | None = None, free: bool = False) -> Narrations:
    """Both storyline modes for every test video; ``free``: also given mode with length control off.
    ``visual`` replaces the frames read from ``features_dir`` (the controls)."""
    if visual is None and model.visual is not None:
        visual = {v.id: visual_inputs(v, features_dir, tau) for v in test}
    return narrate_rows(model, test, gen, {"model": (visual, free)}, progress)["model"]


def shuffled_visual(test: list[Video], visual: dict[str, VisualInputs]) -> dict[str, VisualInputs]:
    """Each test video gets the next test video's frames (clip i <- its clip i mod n): real frames
    of another product, so anything the model reads off them is wrong for this video."""
    if len(test) < 2:
        raise ValueError("shuffled_frames needs at least two test videos")
    out = {}
    for k, v in enumerate(test):
        donor = visual[test[(k + 1) % len(test)].id]
        pick = [i % len(donor.clips) for i in range(len(v.clips))]
        out[v.id] = VisualInputs(clips=[donor.clips[j] for j in pick], kept=[donor.kept[j] for j in pick],
                                 totals=[donor.totals[j] for j in pick])
    return out


def blank_frame_tokens(tower) -> "torch.Tensor":
    """(1, P, W) patch tokens of one uniform grey frame, rounded through fp16 as the features store is."""
    from .features import _image_size, encode_frames

    size = _image_size(tower)
    _, tokens = encode_frames(tower, np.full((1, size, size, 3), BLANK_GREY, np.uint8))
    return tokens.half().float()


def blank_visual(test: list[Video], tokens) -> dict[str, VisualInputs]:
    """Every clip of every test video shows one blank frame."""
    return {v.id: VisualInputs(clips=[tokens] * len(v.clips), kept=[[0]] * len(v.clips),
                               totals=[1] * len(v.clips)) for v in test}


CONTROL_DESCRIPTIONS = {
    "shuffled_frames": "the trained videonarrator with each test video's frames replaced by the next test video's",
    "blank_frames": "the trained videonarrator with every clip shown as one blank grey frame",
}


def zero_shot_options(tokenizer) -> PromptOptions:
    """An untrained LLM's prompt: its chat template (where it has one), the output format and the label list."""
    chat = chat_wrap(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    return PromptOptions(chat=chat, instructions=True)


# -- the roster ------------------------------------------------------------------------------

ROW_ORDER = ("chance", "template_guess", "template_oracle", "position_prior", "majority_label", "retrieval",
             "zero_shot", "text_only", "videonarrator", "shuffled_frames", "blank_frames")


def generation_config(settings, train: list[Video]) -> GenerationConfig:
    """Decoding as params' ``evaluate`` section says; in generated-storyline mode the model chooses
    among the single labels and every label set seen in the training videos."""
    return settings.generation(label_candidates=label_candidates(c.labels for v in train for c in v.clips))


def narrate_systems(train: list[Video], test: list[Video], settings, features_dir: str | Path, tower=None,
                    models_dir: str | Path = "models", synthetic: bool = True, progress: bool = True
                    ) -> tuple[dict[str, Narrations], dict[str, str]]:
    """Every row of the results table but ``chance``: the trained systems of
    ``settings["systems"]["trained"]`` (loaded from ``models_dir/<name>``, with free-running
    output), the two frame controls on ``videonarrator`` (``tower`` encodes the blank frame),
    ``zero_shot`` and the no-learning references.  ``settings``: a :class:`config.Settings`.
    In generated-storyline mode every model chooses among the single labels and the label
    sets seen in the training videos.  Returns (outputs, descriptions), in :data:`ROW_ORDER`."""
    from .systems import describe

    seed, llm = settings.train_seed, settings["llm"]
    gen = generation_config(settings, train)
    device = default_device()   # the features stay on the CPU until a batch needs them
    outputs, descriptions = {}, {}
    for system in settings["systems"]["trained"]:
        narrator = settings.narrator(Path(models_dir) / system, device)
        system_tau = settings.tau(system)
        real = {v.id: visual_inputs(v, features_dir, system_tau) for v in test} if narrator.visual is not None else None
        rows = {system: (real, True)}
        descriptions[system] = describe(system) + f"; trained by `03` for the same steps ({Path(models_dir) / system})"
        if system == "videonarrator" and tower is not None:
            if len(test) >= 2:   # one test video has no other video's frames to show
                rows["shuffled_frames"] = (shuffled_visual(test, real), False)
            rows["blank_frames"] = (blank_visual(test, blank_frame_tokens(tower)), False)
            descriptions.update({name: CONTROL_DESCRIPTIONS[name] for name in rows if name != system})
        # the system and its controls share the weights: all their passes are decoded in one batched run
        outputs.update(narrate_rows(narrator, test, gen, rows, progress))
    # the bare LLM (a fresh LoRA adapter would be the identity at a LoRA layer's cost); no label head
    # either: nothing was fitted, so it chooses its label lines by likelihood
    zero_cfg = replace(settings.model("text_only"), label_head=False)
    zero_shot = VideoNarrator.from_llm(zero_cfg, llm["path"], None, dtype=settings.narrating_dtype(device)).to(device)
    zero_shot.prompt_options = zero_shot_options(zero_shot.tokenizer)
    outputs["zero_shot"] = narrate_with_model(zero_shot, test, None, settings.tau(), gen, progress, free=True)
    descriptions["zero_shot"] = ("the base LLM, no fine-tuning and no video, "
                                 "given the same content in its chat template with the output format and the "
                                 "label list spelled out")
    rows, ref_descriptions = reference_rows(train, test, seed, synthetic)
    outputs.update(rows)
    descriptions.update(ref_descriptions)
    order = {name: k for k, name in enumerate(ROW_ORDER)}
    names = sorted(outputs, key=lambda n: order.get(n, len(order)))
    return {n: outputs[n] for n in names}, {n: descriptions[n] for n in names}


# -- scoring ------------------------------------------------------------------------------

def _flat(videos: list[Video], outs: dict[str, list[ClipOutput]]):
    return [(v, i, c, outs[v.id][i]) for v in videos for i, c in enumerate(v.clips)]


def grounding_inputs(videos: list[Video], knowledge_vocab: list[str]):
    """Per-clip facts the reference states, what is true of the clip, and the vocabulary
    (visible facts plus every knowledge item of the dataset): for the exact synthetic metrics."""
    from .data.synthetic import VISUAL_ATTRS, VISUAL_VOCAB

    vocab = {**VISUAL_VOCAB, "knowledge": sorted(set(knowledge_vocab))}
    facts, allowed = [], []
    for v in videos:
        items = {it for its in v.product.knowledge.values() for it in its}
        for c in v.clips:
            facts.append({a: c.truth[a] for a in c.truth["stated"]})
            allowed.append({**{a: {c.truth[a]} for a in VISUAL_ATTRS if a in c.truth}, "knowledge": items})
    return facts, allowed, vocab


# rate -> the name of its count in metrics.json
COUNTS = {"visual_attr_acc": "visual_attr_n", "visual_attr_chance": "visual_attr_n",
          "visual_attr_stated": "visual_attr_n", "hallucination_rate": "stated_facts_n", "label_acc": "label_n",
          "sync_in_window": "sync_n", "sync_in_window_free": "sync_free_n", "knowledge_recall": "knowledge_n"}


# Rates that describe a row against its own chance rather than what it achieves: not compared between rows.
OWN_YARDSTICKS = ("visual_attr_chance", "visual_attr_stated")


def _per_video(videos: list[Video], per_clip: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Per-clip (hits, count) pairs, in _flat order -> per-video sums."""
    hits, counts, k = [], [], 0
    for v in videos:
        part = per_clip[k:k + len(v.clips)]
        k += len(v.clips)
        hits.append(float(sum(h for h, _ in part)))
        counts.append(float(sum(n for _, n in part)))
    return hits, counts


def _in_window(rows) -> list[tuple[float, float]]:
    return [(float(c.window[0] <= text_length(o.text, v.language) <= c.window[1]), 1.0) for v, _, c, o in rows]


def video_counts(n: Narrations, test: list[Video], knowledge_vocab: list[str] | None = None
                 ) -> dict[str, tuple[list[float], list[float]]]:
    """rate -> (hits per test video, count per test video): what every rate and interval is made of.

    Visible facts per kind are ``visual_attr_acc_<kind>``.
    """
    from .data.synthetic import VISUAL_ATTRS

    out = {}
    if n.given:
        rows = _flat(test, n.given)
        out["sync_in_window"] = _per_video(test, _in_window(rows))
        if knowledge_vocab is not None:
            facts, allowed, vocab = grounding_inputs(test, knowledge_vocab)
            hyps = [o.text for *_, o in rows]
            visible = {a: vocab[a] for a in VISUAL_ATTRS}
            hits = M.visual_attr_hits(hyps, facts, visible)
            out["visual_attr_acc"] = _per_video(test, [(sum(h.values()), len(h)) for h in hits])
            for a in VISUAL_ATTRS:
                out[f"visual_attr_acc_{a}"] = _per_video(test, [(h.get(a, 0), int(a in h)) for h in hits])
            # The row's own chance: each fact it states, guessed uniformly among its kind's values
            # (what reading another clip's frames gives); a fact it leaves out scores 0 either way.
            stated = M.stated_kinds(hyps, facts, visible)
            out["visual_attr_chance"] = _per_video(test, [(sum(1 / len(visible[a]) for a in s), len(f))
                                                          for s, f in zip(stated, facts)])
            out["visual_attr_stated"] = _per_video(test, [(len(s), len(f)) for s, f in zip(stated, facts)])
            out["hallucination_rate"] = _per_video(test, M.hallucination_counts(hyps, allowed, vocab))
            used = [c.truth.get("knowledge_used", []) for v in test for c in v.clips]
            out["knowledge_recall"] = _per_video(test, M.knowledge_recall_counts(hyps, used, vocab))
    if n.free:
        out["sync_in_window_free"] = _per_video(test, _in_window(_flat(test, n.free)))
    if n.generated:
        rows = _flat(test, n.generated)
        out["label_acc"] = _per_video(test, [(float(set(o.labels or []) == set(c.labels)), 1.0)
                                             for _, _, c, o in rows])
    return out


def add_intervals(metrics: dict[str, float], counts: dict[str, tuple[list[float], list[float]]],
                  seed: int = 0, n_boot: int = I.N_BOOT) -> dict[str, float]:
    """For each rate: its value, its count (``COUNTS`` name or ``<rate>_n``) and ``<rate>_lo`` /
    ``<rate>_hi``, the 95 % bootstrap interval over test videos."""
    for rate, (hits, totals) in counts.items():
        ci = I.rate_ci(hits, totals, n_boot=n_boot, seed=seed)
        metrics[COUNTS.get(rate, f"{rate}_n")] = int(ci["n"])
        if ci["n"]:
            metrics[rate] = ci["value"]
            metrics[f"{rate}_lo"], metrics[f"{rate}_hi"] = ci["lo"], ci["hi"]
    return metrics


def score_system(n: Narrations, test: list[Video], language: str, encoder=None, knowledge_vocab=None,
                 meteor: bool = False, clip_scorer=None, seed: int = 0, n_boot: int = I.N_BOOT) -> dict[str, float]:
    """Every metric for one system: text metrics on given-mode output, label metrics on generated,
    ``*_free`` on length-control-off output; each rate with its count and interval."""
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
        out["length_error"] = M.length_error(hyps, windows, language)
        out.update(spoken_fit(hyps, [c.end - c.start for _, _, c, _ in rows], language))
        stories = [[o.text for o in n.given[v.id]] for v in test]
        out["repetition"] = M.mean_repetition(stories, language)
        if knowledge_vocab is not None:   # synthetic data: exact grounding
            _, allowed, vocab = grounding_inputs(test, knowledge_vocab)
            out["hallucination_rate"] = M.hallucination_rate(hyps, allowed, vocab)  # 0.0 when nothing is stated
        if encoder is not None:
            items = [[it for its in v.product.knowledge.values() for it in its] for v in test]
            out.update(M.knowledge_scores(stories, items, encoder))
        if clip_scorer is not None:
            out["emscore"] = clip_scorer(rows)
    if n.free:
        rows = _flat(test, n.free)
        texts, windows = [o.text for *_, o in rows], [c.window for _, _, c, _ in rows]
        out["length_error_free"] = M.length_error(texts, windows, language)
        out["length_slope_free"] = M.length_slope(texts, windows, language)
    if n.generated:
        rows = _flat(test, n.generated)
        pred, true = [o.labels or [] for *_, o in rows], [c.labels for _, _, c, _ in rows]
        out["label_macro_f1"] = M.label_macro_f1(pred, true)
    counts = video_counts(n, test, knowledge_vocab)
    out = add_intervals(out, counts, seed, n_boot)
    if "visual_attr_chance" in counts:   # how far the row is above its own chance, on the same videos
        d = I.paired_difference_ci(I.ratio(*counts["visual_attr_acc"]), I.ratio(*counts["visual_attr_chance"]),
                                   len(test), n_boot, seed)
        out["visual_attr_above_chance"] = d["value"]
        out["visual_attr_above_chance_lo"], out["visual_attr_above_chance_hi"] = d["lo"], d["hi"]
    return out


def chance_metrics(test: list[Video], seed: int = 0, n_boot: int = I.N_BOOT) -> dict[str, float]:
    """The analytic chance row: expected hits of a text-only guess that knows the synthetic
    generator's rules (1 / values not yet stated, per fact), and of a uniform label guess."""
    from .data.synthetic import VISUAL_ATTRS

    counts = {}
    for name, kinds in [("visual_attr_acc", VISUAL_ATTRS), *((f"visual_attr_acc_{a}", (a,)) for a in VISUAL_ATTRS)]:
        per_clip = [(sum(1 / c.truth["options"][a] for a in c.truth["stated"] if a in kinds),
                     sum(a in kinds for a in c.truth["stated"])) for v in test for c in v.clips]
        counts[name] = _per_video(test, per_clip)
    counts["label_acc"] = _per_video(test, [(1 / len(LABELS), 1.0) for v in test for _ in v.clips])
    out = add_intervals({}, counts, seed, n_boot)
    # A uniform guess: label l with test share p has precision p and recall 1/12, so F1 = 2pq / (p + q).
    share = Counter(k for v in test for c in v.clips for k in c.labels)
    total, q = sum(len(v.clips) for v in test), 1 / len(LABELS)
    out["label_macro_f1"] = float(np.mean([2 * (share[l] / total) * q / (share[l] / total + q) for l in LABELS]))
    return out


def paired_differences(outputs: dict[str, Narrations], test: list[Video], knowledge_vocab=None,
                       baseline: str = "text_only", seed: int = 0, n_boot: int = I.N_BOOT
                       ) -> dict[str, dict[str, float]]:
    """For each system: ``<rate>_diff_<baseline>`` (system minus baseline on the same test videos)
    with ``_lo`` / ``_hi`` from shared video resamples; {} when the baseline was not run."""
    if baseline not in outputs:
        return {}
    base = video_counts(outputs[baseline], test, knowledge_vocab)
    out = {}
    for name, n in outputs.items():
        if name == baseline:
            continue
        diffs = {}
        for rate, (hits, totals) in video_counts(n, test, knowledge_vocab).items():
            if rate in OWN_YARDSTICKS or rate not in base or not sum(totals) or not sum(base[rate][1]):
                continue
            d = I.paired_difference_ci(I.ratio(hits, totals), I.ratio(*base[rate]), len(test), n_boot, seed)
            key = f"{rate}_diff_{baseline}"
            diffs[key], diffs[f"{key}_lo"], diffs[f"{key}_hi"] = d["value"], d["lo"], d["hi"]
        if diffs:
            out[name] = diffs
    return out


def video_counts_json(outputs: dict[str, Narrations], test: list[Video], knowledge_vocab=None) -> dict:
    """Per system and rate, the hits and counts of every test video (``reports/video_counts.json``):
    what the seed study (:mod:`videonarrator.study`) pools across runs."""
    systems = {}
    for name, n in outputs.items():
        counts = video_counts(n, test, knowledge_vocab)
        systems[name] = {rate: {"hits": h, "counts": c} for rate, (h, c) in counts.items()}
    return {"videos": [v.id for v in test], "systems": systems}


def narrations_to_json(n: Narrations) -> dict:
    def clip(o: ClipOutput) -> dict:
        return {"text": o.text, "labels": o.labels, "length": o.length, "in_window": o.in_window, "stop": o.stop}
    return {mode: {vid: [clip(o) for o in outs] for vid, outs in getattr(n, mode).items()}
            for mode in ("given", "generated", "free") if getattr(n, mode) or mode != "free"}


COLUMNS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "sync_in_window", "length_error", "sync_in_window_free",
           "length_error_free", "length_slope_free", "spoken_fit", "spoken_overrun_s", "label_acc", "label_macro_f1", "visual_attr_acc",
           "visual_attr_chance", "visual_attr_above_chance", "visual_attr_stated", "hallucination_rate", "knowledge_recall", "info_sim", "info_diverse", "repetition",
           "emscore")


def _cell(m: dict[str, float], c: str) -> str:
    if c not in m or (isinstance(m[c], float) and math.isnan(m[c])):
        return ""
    if f"{c}_lo" in m:
        count = m.get(COUNTS.get(c, f"{c}_n"))
        return I.format_ci(m[c], m[f"{c}_lo"], m[f"{c}_hi"]) + (f" (n={count})" if count is not None else "")
    return f"{m[c]:.3f}"


def results_table(metrics: dict[str, dict[str, float]], descriptions: dict[str, str],
                  differences: dict[str, dict[str, float]] | None = None, baseline: str = "text_only") -> str:
    """Markdown: one row per system, one column per metric (blank where not defined); a rate with an
    interval shows ``value [lo, hi] (n=count)``.  With ``differences``: a second table of each
    system's paired difference to ``baseline``."""
    columns = [c for c in COLUMNS if any(c in m for m in metrics.values())]
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, m in metrics.items():
        lines.append(f"| {name} | " + " | ".join(_cell(m, c) for c in columns) + " |")
    if differences:
        rates = [r for r in COUNTS if any(f"{r}_diff_{baseline}" in d for d in differences.values())]
        lines += ["", f"Paired differences to `{baseline}` on the same test videos (95 % interval over video "
                      "resamples; an interval that excludes 0 is a difference the test split shows):", "",
                  "| system | " + " | ".join(rates) + " |", "|---|" + "---|" * len(rates)]
        for name, d in differences.items():
            cells = [I.format_ci(d[k], d[k + "_lo"], d[k + "_hi"], 3) if (k := f"{r}_diff_{baseline}") in d else ""
                     for r in rates]
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
