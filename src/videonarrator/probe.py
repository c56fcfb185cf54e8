"""Forced choice of visible facts: does a trained narrator prefer the true value given the frames?

``visual_attr_acc`` scores what a narrator says when it writes freely, so a fact it leaves out or
words otherwise counts as wrong, and the decoder's choices hide what the model knows. This asks
what the decoder cannot hide: each visible fact stated in a test clip's reference narration
(synthetic truth) is written once with every value of its kind (all 6 colours, 3 shapes, 4
actions, 6 settings); the narrator scores every version teacher forced (summed log-probability of
the narration after the clip's given-storyline prompt with the reference story so far), and its
choice is the most likely version. It is done twice: with the clip's own frames and with the next
test video's (the shuffled control of ``evaluate.shuffled_visual``). A narrator that reads the fact
off the frames chooses right more often with its own; one that does not scores the same under
both, whatever its text prior gives it.

    python -m videonarrator.probe --system videonarrator    # reports/probe_videonarrator.json + a table

``--side decode`` is the free-decoding side (:func:`free_decoding`): the same narrator writes every
test clip freely, once after its own story so far (as the evaluation decodes) and once after the
reference story, the latter also with shuffled frames, so what its own earlier words cost and what
it reads off the frames when its context is right are measured apart
(``reports/probe_<system>_decoding.json``).

``--side labels`` asks the same of the storyline (:func:`label_choice`): the label set the narrator
chooses in generated mode after the reference story, split by the clip's place in its video
(first, middle, last clip), beside the position prior (``reports/probe_<system>_labels.json``).

``--side caption`` asks the visual path alone (``target="caption"`` of :func:`choices`): each test
clip's caption, the caption warm-up's target ("red round, held in a hand, in the kitchen"), is
scored with every value of each kind swapped in, after only the product line and the frames
(``reports/probe_<system>_caption.json``).  Nothing but the frames can tell the values apart there,
so a kind at chance with the own frames is one the Q-Former did not learn to pass on.

``--side features`` asks the same of the frozen vision tower, without a narrator
(:func:`feature_probe`): a linear probe on the training clips' patch tokens names each test clip's
colour, shape, action and setting (``reports/probe_features.json``). Where it is near 1 and the
narrator is near chance, what the narrator lacks is learnt, not in the features.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from . import intervals as I
from . import metrics as M
from .data.synthetic import PROPS, VISUAL_VOCAB, clip_caption, stated_fact_spans
from .dataset import VisualInputs, caption_sample, clip_sample, visual_inputs
from .labels import LABELS
from .model import VideoNarrator, collate, fit_linear, label_features
from .progress import progress_bar
from .schema import PLACES, Video, clip_place

KINDS = tuple(VISUAL_VOCAB)
# what the feature probe names: the visible values, and the label's prop ("none": a clip without one)
PROBED = {**VISUAL_VOCAB, "prop": ["none", *PROPS]}


def fact_versions(video: Video, i: int) -> list[tuple[str, str, dict[str, str]]]:
    """(kind, true value, {value: the reference narration with that value}) for every visible fact
    that clip ``i``'s reference narration states in words the vocabulary knows."""
    text = video.clips[i].narration
    return [(kind, value, {alt: text[:start] + alt + text[end:] for alt in VISUAL_VOCAB[kind]})
            for kind, value, start, end in stated_fact_spans(video.clips[i])]


def caption_versions(video: Video, i: int) -> list[tuple[str, str, dict[str, str]]]:
    """(kind, true value, {value: the caption with that value}) for each of the four kinds of clip
    ``i``'s caption (``synthetic.clip_caption``, the warm-up's target); [] for a clip without one."""
    truth = video.clips[i].truth or {}
    if clip_caption(video.clips[i]) is None:
        return []
    return [(kind, truth[kind], {alt: clip_caption(replace(video.clips[i], truth={**truth, kind: alt}))
                                 for alt in VISUAL_VOCAB[kind]}) for kind in KINDS]


def _narration_sample(model: VideoNarrator, video: Video, i: int, vis: VisualInputs | None, text: str):
    """Clip ``i``'s given-storyline sample with ``text`` as its narration (reference story before it)."""
    clips = list(video.clips)
    clips[i] = replace(clips[i], narration=text)
    return clip_sample(model.tokenizer, replace(video, clips=clips), i, vis, "given",
                       num_buckets=model.cfg.num_position_buckets, story_clips=model.cfg.story_clips,
                       options=model.prompt_options)


def _caption_sample(model: VideoNarrator, video: Video, i: int, vis: VisualInputs, text: str):
    """Clip ``i``'s caption warm-up sample with ``text`` as its caption."""
    return caption_sample(model.tokenizer, video, i, vis, text, model.cfg.num_position_buckets, model.prompt_options)


@torch.no_grad()
def choices(model: VideoNarrator, videos: list[Video], visual: dict[str, VisualInputs] | None,
            progress: bool = True, target: str = "narration") -> dict[str, list[tuple[int, int]]]:
    """Per kind, per video: (facts chosen right, facts) under ``visual`` (None: a text-only model).
    ``target``: "narration" (the reference narration's stated facts, after the reference story) or
    "caption" (every kind of the clip's caption, after only the product line and the frames)."""
    if target == "caption" and visual is None:
        raise ValueError("the caption choice reads frames only; a text-only model has none")
    versions_of, sample_of = {"narration": (fact_versions, _narration_sample),
                              "caption": (caption_versions, _caption_sample)}[target]
    device = next(model.parameters()).device
    out = {kind: [[0, 0] for _ in videos] for kind in KINDS}
    for v_idx, video in enumerate(progress_bar(videos, desc="forced choice", unit="video", disable=not progress)):
        vis = visual[video.id] if visual is not None else None
        for i in range(len(video.clips)):
            for kind, value, versions in versions_of(video, i):
                names = list(versions)
                samples = [sample_of(model, video, i, vis, versions[alt]) for alt in names]
                scores = model.target_logprobs(collate(samples).to(device))
                out[kind][v_idx][0] += names[int(scores.argmax())] == value
                out[kind][v_idx][1] += 1
    return {kind: [tuple(c) for c in per_video] for kind, per_video in out.items()}


def _per_video(counts: dict[str, list[tuple[int, int]]], kinds) -> tuple[list[int], list[int]]:
    """Per video: facts of ``kinds`` chosen right, and facts of ``kinds``."""
    videos = range(len(counts[kinds[0]]))
    return ([sum(counts[k][v][0] for k in kinds) for v in videos],
            [sum(counts[k][v][1] for k in kinds) for v in videos])


def probe(model: VideoNarrator, test: list[Video], own_visual: dict[str, VisualInputs] | None,
          n_boot: int = I.N_BOOT, seed: int = 0, progress: bool = True, target: str = "narration") -> dict:
    """Forced-choice accuracy per kind and overall with the own frames (``own_visual``; None for a
    text-only model) and the shuffled control, each with its count and interval over test videos,
    their paired difference and the chance level (1 / the kind's number of values, averaged over
    the facts).  ``target``: what is scored (:func:`choices`)."""
    from .evaluate import shuffled_visual

    sees = model.visual is not None
    if sees and own_visual is None:
        raise ValueError("a model that sees needs the test videos' frames (own_visual)")
    runs = {"own": choices(model, test, own_visual if sees else None, progress, target)}
    if sees:
        runs["shuffled"] = choices(model, test, shuffled_visual(test, own_visual), progress, target)
    report: dict = {}
    for name, kinds in [(k, (k,)) for k in KINDS] + [("all", KINDS)]:
        per_video = {run: _per_video(counts, kinds) for run, counts in runs.items()}
        facts = sum(per_video["own"][1])
        if not facts:
            continue
        row = {run: I.rate_ci(*hits_n, n_boot, seed) for run, hits_n in per_video.items()}
        row["chance"] = sum(c[1] / len(VISUAL_VOCAB[k]) for k in kinds for c in runs["own"][k]) / facts
        if sees:
            own, shuf = (I.ratio(*per_video[run]) for run in ("own", "shuffled"))
            row["own_minus_shuffled"] = I.paired_difference_ci(own, shuf, len(test), n_boot, seed)
        report[name] = row
    return report


def clip_features(visual: VisualInputs) -> torch.Tensor:
    """(clips, P*W) each clip's patch tokens averaged over its kept frames (the Q-Former reads
    them frame by frame)."""
    return torch.stack([c.float().mean(dim=0).flatten() for c in visual.clips])


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Multinomial logistic regression (:func:`model.fit_linear`); returns the predictor."""
    mean, std, w, b = fit_linear(train_x, train_y, classes)
    return lambda z: ((z - mean) / std @ w + b).argmax(dim=1)


def probed_value(truth: dict, kind: str) -> str | None:
    """A clip's value of ``kind`` as the feature probe names it: a synthetic clip without a prop
    has the prop "none"; None where the truth lacks the kind (real data)."""
    if kind == "prop" and "prop" in truth:
        return truth["prop"] or "none"
    return truth.get(kind)


def feature_probe(train: list[Video], test: list[Video], visual: dict[str, VisualInputs],
                  n_boot: int = I.N_BOOT, seed: int = 0) -> dict:
    """Can the frozen tower's features tell each visible value apart?  Per kind (and for the
    prop, the label's cue), a linear probe trained on the training clips' features
    (:func:`clip_features`) names the value of every test clip (all clips show all four, stated
    or not): accuracy with its count, interval over test videos and chance (a uniform guess).
    Near 1 means the tower is not what keeps a narrator from seeing them.  With single-label
    clips, also the script label from the features and the clip's place (first / middle / last)."""
    def data(videos):
        x = torch.cat([clip_features(visual[v.id]) for v in videos])
        truth = [c.truth or {} for v in videos for c in v.clips]
        return x, truth
    train_x, train_truth = data(train)
    test_x, test_truth = data(test)
    clips = [len(v.clips) for v in test]
    report = {}
    for kind, vocab in PROBED.items():
        train_y, test_y = ([probed_value(t, kind) for t in truth] for truth in (train_truth, test_truth))
        have = [k for k, y in enumerate(train_y) if y in vocab]
        if not have or not all(y in vocab for y in test_y):
            continue
        y = torch.tensor([vocab.index(train_y[k]) for k in have])
        predict = linear_probe(train_x[have], y, len(vocab))
        right = predict(test_x) == torch.tensor([vocab.index(y) for y in test_y])   # (test clips,)
        hits = [int(part.sum()) for part in right.split(clips)]
        report[kind] = {**I.rate_ci(hits, clips, n_boot, seed), "chance": 1 / len(vocab)}
    if all(len(c.labels) == 1 for v in train + test for c in v.clips):
        # the script label from exactly what a video narrator's label head reads (model.label_features)
        def head_inputs(videos):
            return torch.stack([label_features(visual[v.id].clips[i], PLACES.index(clip_place(v, i)))
                                for v in videos for i in range(len(v.clips))])
        y = torch.tensor([LABELS.index(c.labels[0]) for v in train for c in v.clips])
        predict = linear_probe(head_inputs(train), y, len(LABELS))
        right = predict(head_inputs(test)) == torch.tensor([LABELS.index(c.labels[0]) for v in test for c in v.clips])
        hits = [int(part.sum()) for part in right.split(clips)]
        report["label (features + place)"] = {**I.rate_ci(hits, clips, n_boot, seed), "chance": 1 / len(LABELS)}
    return report


def feature_table(report: dict) -> str:
    """The feature probe's report as a Markdown table."""
    lines = ["| value named by a linear probe of the frozen features | test clips | chance |", "|---|---|---|"]
    for kind, row in report.items():
        cell = f"{I.format_ci(row['value'], row['lo'], row['hi'])} ({int(row['k'])}/{int(row['n'])})"
        lines.append(f"| {kind} | {cell} | {row['chance']:.2f} |")
    return "\n".join(lines) + "\n"


# free decoding runs: name -> (story so far, frames); "own" frames or the "shuffled" control
DECODING_RUNS = {"own story": ("own", "own"), "reference story": ("reference", "own"),
                 "reference story, shuffled frames": ("reference", "shuffled")}


def free_decoding(model: VideoNarrator, test: list[Video], own_visual: dict[str, VisualInputs], gen,
                  n_boot: int = I.N_BOOT, seed: int = 0, progress: bool = True) -> dict:
    """Visible facts stated right when the narrator writes freely (given storyline, ``gen``'s
    decoding), with its own story so far (as the evaluation decodes) and with the reference story
    (each clip is still written freely, after the data's earlier narrations), the latter also with
    shuffled frames. Own vs reference story measures what the model's own earlier words cost;
    reference story with own vs shuffled frames measures what it reads off the frames when its
    context is right. Each rate with its count and interval; the two paired differences; each
    run's rate per fact kind (``"<run>: <kind>"``)."""
    from .evaluate import Narrations, shuffled_visual, video_counts
    from .generate import narrate_videos

    frames = {"own": own_visual, "shuffled": shuffled_visual(test, own_visual)}
    # video_counts scores visible facts only when given the knowledge vocabulary (it also counts
    # hallucinations, unused here): the test videos' items
    items = [it for v in test for its in v.product.knowledge.values() for it in its]
    per_video, by_kind, cider = {}, {}, {}
    for name, (story, shown) in DECODING_RUNS.items():
        cfg = replace(gen, mode="given", story=story)
        given = narrate_videos(model, test, frames[shown], cfg, progress)
        # the evaluation's corpus CIDEr of the same text (own story: its given-mode CIDEr)
        cider[name] = M.cider([c.narration for v in test for c in v.clips],
                              [o.text for v in test for o in given[v.id]], "en")
        counts = video_counts(Narrations(given=given, generated={}), test, items)
        per_video[name] = counts["visual_attr_acc"]
        for rate, kind_counts in counts.items():   # visual_attr_acc_<kind>: a model may read one kind only
            if rate.startswith("visual_attr_acc_"):
                by_kind[f"{name}: {rate.removeprefix('visual_attr_acc_')}"] = kind_counts
    report = {name: I.rate_ci(*counts, n_boot, seed) for name, counts in per_video.items()}
    for a, b in (("reference story", "own story"), ("reference story", "reference story, shuffled frames")):
        report[f"{a} - {b}"] = I.paired_difference_ci(I.ratio(*per_video[a]), I.ratio(*per_video[b]),
                                                      len(test), n_boot, seed)
    report.update({name: I.rate_ci(*counts, n_boot, seed) for name, counts in by_kind.items()})
    report.update({f"CIDEr, {name}": {"value": value} for name, value in cider.items()})
    return report


def _at(video: Video, i: int, place: str | None) -> bool:
    return place in (None, clip_place(video, i))


def _labels_right(test: list[Video], chosen: dict[str, list[list[str]]], place: str | None) -> tuple[list, list]:
    """Per test video: (clips whose chosen label set is the data's, clips) at ``place`` (None: all),
    summed per video as the evaluation sums its rates."""
    from .evaluate import _per_video
    return _per_video(test, [(float(set(chosen[v.id][i]) == set(c.labels)), 1.0) if _at(v, i, place) else (0.0, 0.0)
                             for v in test for i, c in enumerate(v.clips)])


def prop_place_prior(train: list[Video], test: list[Video]) -> dict[str, list[list[str]]]:
    """A yardstick that reads the synthetic truth: each test clip gets the most frequent training
    label among clips at the same place (first / middle / last) showing the same prop (or none);
    the place alone where no training clip matches.  What a perfect reader of the prop who also
    knows the clip's place reaches, with no story and no knowledge."""
    by_key: dict[tuple[str, str | None], Counter] = {}
    by_place: dict[str, Counter] = {}
    for v in train:
        for i, c in enumerate(v.clips):
            place = clip_place(v, i)
            by_key.setdefault((place, c.truth.get("prop")), Counter()).update(c.labels)
            by_place.setdefault(place, Counter()).update(c.labels)
    out = {}
    for v in test:
        out[v.id] = []
        for i, c in enumerate(v.clips):
            place = clip_place(v, i)
            counts = by_key.get((place, c.truth.get("prop"))) or by_place.get(place) or Counter()
            out[v.id].append([counts.most_common(1)[0][0]] if counts else [])
    return out


def label_choice(model: VideoNarrator, train: list[Video], test: list[Video],
                 own_visual: dict[str, VisualInputs] | None, gen, n_boot: int = I.N_BOOT, seed: int = 0,
                 progress: bool = True) -> dict:
    """Generated storyline after the reference story: the label set the narrator chooses (by
    likelihood or its label head, the evaluation's own choice in ``generate``) for each test clip, split by the
    clip's place in its video, beside the position prior and :func:`prop_place_prior` on the same clips.  A model can tie the
    prior overall by reading "Clip i/n" for the opening and closing clips only; the split shows
    whether it knows the middle ones.  Each rate with its count and interval; the paired
    difference to the prior per place."""
    from .evaluate import position_prior_narrations
    from .generate import narrate_videos

    cfg = replace(gen, mode="generated", story="reference", max_new_tokens=1)   # the label is chosen before decoding
    outs = narrate_videos(model, test, own_visual or {}, cfg, progress)
    prior = position_prior_narrations(train, test).generated
    chosen = {"model": {vid: [o.labels or [] for o in o_] for vid, o_ in outs.items()},
              "position_prior": {vid: [o.labels or [] for o in o_] for vid, o_ in prior.items()},
              "prop_place_prior": prop_place_prior(train, test)}
    report: dict = {}
    for place in (*PLACES, None):
        runs = {name: _labels_right(test, c, place) for name, c in chosen.items()}
        row = {name: I.rate_ci(*hits_n, n_boot, seed) for name, hits_n in runs.items()}
        row["model_minus_prior"] = I.paired_difference_ci(I.ratio(*runs["model"]), I.ratio(*runs["position_prior"]),
                                                          len(test), n_boot, seed)
        row["chosen"] = dict(Counter(k for v in test for i, c in enumerate(chosen["model"][v.id])
                                     if _at(v, i, place) for k in c).most_common())
        report[place or "all"] = row
    return report


def label_table(report: dict) -> str:
    """The label-choice report as a Markdown table."""
    lines = ["| clips | narrator | position prior | narrator − prior | prop + place prior | narrator's most chosen |",
             "|---|---|---|---|---|---|"]
    for place, row in report.items():
        cells = [f"{I.format_ci(row[r]['value'], row[r]['lo'], row[r]['hi'])} ({int(row[r]['k'])}/{int(row[r]['n'])})"
                 for r in ("model", "position_prior", "prop_place_prior")]
        d = row["model_minus_prior"]
        top = ", ".join(f"{k} {n}" for k, n in list(row["chosen"].items())[:3])
        lines.append(f"| {place} | {cells[0]} | {cells[1]} | {d['value']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] | "
                     f"{cells[2]} | {top} |")
    return "\n".join(lines) + "\n"


def table(report: dict) -> str:
    """The report as a Markdown table."""
    lines = ["| facts | own frames | shuffled frames | own − shuffled | chance |", "|---|---|---|---|---|"]
    for name, row in report.items():
        cells = [f"{I.format_ci(row[r]['value'], row[r]['lo'], row[r]['hi'])} ({int(row[r]['k'])}/{int(row[r]['n'])})"
                 if r in row else "" for r in ("own", "shuffled")]
        d = row.get("own_minus_shuffled")
        diff = f"{d['value']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]" if d else ""
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {diff} | {row['chance']:.2f} |")
    return "\n".join(lines) + "\n"


def decoding_table(report: dict) -> str:
    """The free-decoding report as a Markdown table."""
    lines = ["| visible facts stated right, free decoding | rate (facts) |", "|---|---|"]
    for name, row in report.items():
        if "k" in row:
            cell = f"{I.format_ci(row['value'], row['lo'], row['hi'])} ({int(row['k'])}/{int(row['n'])})"
        elif "lo" not in row:   # a corpus metric: one figure, no per-video count
            cell = f"{row['value']:.3f}"
        else:
            cell = f"{row['value']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}]"
        lines.append(f"| {name} | {cell} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .config import Settings
    from .io import write_json
    from .schema import load_dataset, split_videos

    parser = argparse.ArgumentParser(description="Does a narrator (or the frozen tower) see the visible facts "
                                                 "of the test split?")
    parser.add_argument("--system", default="videonarrator")
    parser.add_argument("--root", default=".", help="project root: params.yaml, data/, models/, reports/")
    parser.add_argument("--n-boot", type=int, default=I.N_BOOT)
    parser.add_argument("--side", choices=("forced", "caption", "decode", "features", "labels"), default="forced",
                        help="forced: forced choice (reports/probe_<system>.json); caption: forced choice of "
                             "each test clip's caption values after the frames alone "
                             "(reports/probe_<system>_caption.json); decode: free decoding with "
                             "the own and the reference story (reports/probe_<system>_decoding.json); labels: the "
                             "generated storyline's label choice by the clip's place in its video, against the "
                             "position prior (reports/probe_<system>_labels.json); features: "
                             "a linear probe of the frozen tower's features, no narrator "
                             "(reports/probe_features.json)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    settings = Settings.load(root / "params.yaml")
    videos, _ = load_dataset(root / "data/processed/dataset.json")
    test = split_videos(videos, "test")
    if not any(fact_versions(v, i) for v in test for i in range(len(v.clips))):
        raise SystemExit("the test split states no visible fact with synthetic truth; the probe needs the "
                         "synthetic ads (common.dataset: synthetic)")
    if args.side == "features":
        tau = settings.tau()
        visual = {v.id: visual_inputs(v, root / "data/features", tau) for v in videos}
        report = feature_probe(split_videos(videos, "train"), test, visual, args.n_boot, settings.data_seed)
        write_json(root / "reports" / "probe_features.json", report)
        print(feature_table(report) + "\nwritten to " + str(root / "reports" / "probe_features.json"))
        return 0
    model = settings.narrator(root / "models" / args.system, llm_path=root / settings["llm"]["path"])
    tau = settings.tau(args.system)
    own = {v.id: visual_inputs(v, root / "data/features", tau) for v in test} if model.visual is not None else None
    from .evaluate import generation_config
    train = split_videos(videos, "train")
    gen = generation_config(settings, train)
    if args.side == "labels":
        report = label_choice(model, train, test, own, gen, args.n_boot, settings.data_seed)
        path, shown = root / "reports" / f"probe_{args.system}_labels.json", label_table(report)
    elif args.side in ("forced", "caption"):
        if args.side == "caption" and own is None:
            raise SystemExit(f"--side caption reads frames only: {args.system} does not use video")
        target = "narration" if args.side == "forced" else "caption"
        report = probe(model, test, own, args.n_boot, settings.data_seed, target=target)
        name = f"probe_{args.system}.json" if args.side == "forced" else f"probe_{args.system}_caption.json"
        path, shown = root / "reports" / name, table(report)
    else:
        if own is None:
            raise SystemExit(f"--side decode compares frames: {args.system} does not use video")
        report = free_decoding(model, test, own, gen, args.n_boot, settings.data_seed)
        path, shown = root / "reports" / f"probe_{args.system}_decoding.json", decoding_table(report)
    write_json(path, report)
    print(shown)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
