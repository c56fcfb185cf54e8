"""What the text side can tell of a real clip's script label: priors and linear probes.

The real-data profile's text model ties the five-bin position prior on ``label_acc`` (README,
*Real data*).  This asks, without training an LLM, whether anything the text side has names the
label better: the clip's place in its video, its duration, the product knowledge, the story so
far.  Count priors and logistic regressions (:func:`model.fit_linear`, as the label head) are
fitted on the training videos, compared (and a probe's L2 strength chosen) on the validation
videos, and scored on the test videos with an interval over test videos and the paired
difference to the position prior.  The story
rows read the *reference* narrations of the earlier clips (a story a narrator got exactly right),
so they bound from above what a model's own story could add.

    python -m videonarrator.storyline      # reports/probe_labels/esyncvidstory.{json,md}
"""
from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import intervals as I
from .labels import LABELS
from .schema import PLACES, Video, clip_place

Predictions = dict[str, list[tuple[str, ...]]]   # video id -> one label set per clip
HASH_DIM = 256                                     # hashed character bigrams of a text
WEIGHT_DECAYS = (0.01, 0.1, 1.0)                   # L2 strengths tried per probe; the best on val is kept


def _label_set(labels) -> tuple[str, ...]:
    return tuple(sorted(labels))


def count_prior(train: list[Video], key: Callable[[Video, int], Any]) -> Callable[[Video], list[tuple[str, ...]]]:
    """The most frequent training label *set* among the clips with the same ``key`` (ties: first
    seen; an unseen key: the most frequent set overall)."""
    by_key: dict[Any, Counter] = {}
    for v in train:
        for i, c in enumerate(v.clips):
            by_key.setdefault(key(v, i), Counter())[_label_set(c.labels)] += 1
    overall = sum(by_key.values(), Counter()).most_common(1)[0][0]
    return lambda v: [(by_key.get(key(v, i)) or Counter({overall: 1})).most_common(1)[0][0]
                      for i in range(len(v.clips))]


def position_bins(v: Video, i: int) -> int:
    """The evaluation's five relative-position bins (``evaluate.position_prior``)."""
    from .evaluate import _position_bin
    return _position_bin(v, i)


def ends(v: Video, i: int, cap: int = 3) -> tuple[int, int]:
    """Clips before and after clip ``i`` in its video, each capped at ``cap``."""
    return min(i, cap), min(len(v.clips) - 1 - i, cap)


def hashed_bigrams(text: str, dim: int = HASH_DIM) -> list[float]:
    """Character bigram counts hashed into ``dim`` buckets (crc32: the same on every run), L2-normed."""
    x = np.zeros(dim)
    for j in range(len(text) - 1):
        x[zlib.crc32(text[j:j + 2].encode()) % dim] += 1
    norm = np.linalg.norm(x)
    return list(x / norm) if norm else list(x)


def knowledge_text(v: Video) -> str:
    return "".join(item for items in v.product.knowledge.values() for item in items)


def feature_sets(train: list[Video]) -> dict[str, Callable[[Video, int], list[float]]]:
    """What each linear probe reads of clip ``i`` (every set starts with the place one-hot)."""
    fields = sorted({k for v in train for k in v.product.knowledge})

    def place(v, i):
        return [float(clip_place(v, i) == p) for p in PLACES]

    def shape(v, i):   # duration (log seconds) and the video's clip count
        c = v.clips[i]
        return place(v, i) + [math.log(max(c.end - c.start, 0.1)), len(v.clips) / 10]

    return {
        "place": place,
        "place + duration, clip count": shape,
        "place + knowledge fields": lambda v, i: place(v, i) + [float(k in v.product.knowledge) for k in fields],
        "place + knowledge text": lambda v, i: place(v, i) + hashed_bigrams(knowledge_text(v)),
        "place + story so far": lambda v, i: place(v, i) + hashed_bigrams(v.clips[i - 1].narration if i else ""),
        "all of the above": lambda v, i: (shape(v, i) + [float(k in v.product.knowledge) for k in fields]
                                          + hashed_bigrams(knowledge_text(v))
                                          + hashed_bigrams(v.clips[i - 1].narration if i else "")),
    }


def linear_probe(train: list[Video], features: Callable[[Video, int], list[float]],
                 weight_decay: float = WEIGHT_DECAYS[0]) -> Callable[[Video], list[tuple[str, ...]]]:
    """A logistic regression fitted on the single-label training clips (as ``model.LabelHead``)."""
    from .model import fit_linear

    rows = [(features(v, i), LABELS.index(c.labels[0])) for v in train for i, c in enumerate(v.clips)
            if len(c.labels) == 1]
    x = torch.tensor([r[0] for r in rows], dtype=torch.float)
    mean, std, weight, bias = fit_linear(x, torch.tensor([r[1] for r in rows]), len(LABELS), weight_decay)

    def predict(v: Video) -> list[tuple[str, ...]]:
        xv = torch.tensor([features(v, i) for i in range(len(v.clips))], dtype=torch.float)
        return [(LABELS[int(k)],) for k in (((xv - mean) / std) @ weight + bias).argmax(dim=-1)]
    return predict


def accuracy(videos: list[Video], predict: Callable[[Video], list[tuple[str, ...]]]) -> float:
    hits, clips = hits_per_video(videos, {v.id: predict(v) for v in videos})
    return sum(hits) / sum(clips)


def predictors(train: list[Video], val: list[Video]) -> dict[str, tuple[str, Callable[[Video], list[tuple[str, ...]]]]]:
    """name -> (what it reads, video -> label sets); the first is the evaluation's position prior.
    Each probe's L2 strength is the best of :data:`WEIGHT_DECAYS` on ``val`` (so its val figure is
    optimistic; the test figure is not)."""
    out = {
        "position_prior": ("the clip's relative position, 5 bins (the stage's row)", count_prior(train, position_bins)),
        "majority_label": ("nothing", count_prior(train, lambda v, i: None)),
        "place_prior": ("first / middle / last clip (count)", count_prior(train, lambda v, i: clip_place(v, i))),
        "ends_prior": ("clips before and after, each capped at 3 (count)", count_prior(train, ends)),
    }
    for name, features in feature_sets(train).items():
        fits = {wd: linear_probe(train, features, wd) for wd in WEIGHT_DECAYS}
        wd = max(WEIGHT_DECAYS, key=lambda w: accuracy(val, fits[w]))   # ties: the weakest
        out[f"probe: {name}"] = (f"logistic regression on {name} (L2 {wd:g})", fits[wd])
    return out


def place_prior_narrations(train: list[Video], test: list[Video]):
    """``place_prior`` as a label-only row of the real-data evaluation (``evaluate.Narrations``):
    each test clip gets the most frequent training label set at its place (first, middle, last)."""
    from .evaluate import Narrations, _output

    predict = count_prior(train, lambda v, i: clip_place(v, i))
    return Narrations(given={}, generated={v.id: [_output("", list(labels), v, i) for i, labels in enumerate(predict(v))]
                                           for v in test})


def hits_per_video(videos: list[Video], predicted: Predictions) -> tuple[list[int], list[int]]:
    hits = [sum(_label_set(c.labels) == p for c, p in zip(v.clips, predicted[v.id])) for v in videos]
    return hits, [len(v.clips) for v in videos]


def storyline_report(train: list[Video], val: list[Video], test: list[Video], n_boot: int = I.N_BOOT,
                     seed: int = 0) -> dict[str, Any]:
    """Every predictor's exact-set label accuracy on val and on test (with its interval over test
    videos and its paired difference to the position prior); ``chosen``: the best on val."""
    if not (train and val and test):
        raise ValueError("the storyline probe needs train, val and test videos; check the split fractions")
    rows, base = {}, None
    for name, (reads, predict) in predictors(train, val).items():
        val_hits, val_clips = hits_per_video(val, {v.id: predict(v) for v in val})
        hits, clips = hits_per_video(test, {v.id: predict(v) for v in test})
        row = {"reads": reads, "val": {"k": sum(val_hits), "n": sum(val_clips), "value": sum(val_hits) / sum(val_clips)},
               "test": I.rate_ci(hits, clips, n_boot, seed)}
        if base is None:
            base = (hits, clips)
        else:
            row["test_minus_position_prior"] = I.paired_difference_ci(I.ratio(hits, clips), I.ratio(*base),
                                                                      len(test), n_boot, seed)
        rows[name] = row
    chosen = max(rows, key=lambda k: (rows[k]["val"]["value"], -list(rows).index(k)))   # ties: the simpler (earlier)
    return {"videos": {"train": len(train), "val": len(val), "test": len(test)}, "n_boot": n_boot,
            "rows": rows, "chosen": chosen}


def storyline_table(report: dict[str, Any]) -> str:
    lines = ["| predictor | reads | val label_acc | test label_acc [95 % interval] | test minus position prior |",
             "|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        t, d = r["test"], r.get("test_minus_position_prior")
        mark = " (best on val)" if name == report["chosen"] else ""
        lines.append(f"| `{name}`{mark} | {r['reads']} | {r['val']['value']:.3f} ({r['val']['k']}/{r['val']['n']}) | "
                     f"{t['value']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}] ({t['k']:.0f}/{t['n']:.0f}) | "
                     + (I.format_ci(d["value"], d["lo"], d["hi"], 3) if d else "") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from . import realdata as R
    from .data.esyncvidstory import load_esyncvidstory
    from .io import atomic_write_text, write_json
    from .params import load_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="project root: params.yaml, reports/")
    parser.add_argument("--annotations", help="the annotation file (default: params esyncvidstory.annotations)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    params = load_params(root / "params.yaml")
    esv, seed = params["esyncvidstory"], params["common"]["data_seed"]
    videos = load_esyncvidstory(args.annotations or root / esv["annotations"])
    # the same knowledge budget and split by video as the real-data stage (notebook 06)
    trimmed = [R.trim_knowledge(v, esv["max_knowledge_chars"]) for v in videos]
    split = R.split_by_video(trimmed, esv["val_fraction"], esv["test_fraction"], seed)
    parts = {s: [v for v in split if v.split == s] for s in ("train", "val", "test")}
    report = storyline_report(parts["train"], parts["val"], parts["test"], esv["n_boot"], seed)
    report["annotations"] = str(args.annotations or esv["annotations"])
    out = root / "reports" / "probe_labels"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "esyncvidstory.json", report)
    text = storyline_table(report)
    atomic_write_text(out / "esyncvidstory.md",
                      f"# What names a real clip's script label: text-side priors and probes\n\n"
                      f"{report['annotations']}: " + ", ".join(f"{n} {k}" for k, n in report["videos"].items())
                      + f" videos (split by video, data seed {seed}); "
                      f"exact label-set match; intervals: 95 % cluster bootstrap over the test videos, "
                      f"{report['n_boot']} resamples.\n\n" + text)
    print(text + f"written to {out / 'esyncvidstory.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
