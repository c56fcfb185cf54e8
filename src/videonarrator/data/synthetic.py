"""Synthetic product advertisements: the embedded default dataset (benchmark v2).

A seeded generator writes real mp4 files (H.264 through PyAV) of product ads:
each video has 4-8 clips of 2-8 s joined by hard cuts, a product with a
category, name and knowledge items, one script label per clip and a reference
English narration per clip whose length fits the clip's word window.

It is built so that seeing matters, and so that nothing else can pass for
seeing:

* **Visible facts belong to the clip.**  Each clip shows one variant of the
  product in a setting: its colour, shape, on-screen action and setting
  (:data:`VISUAL_VOCAB`) are drawn per clip and are only in the pixels, never
  in the knowledge.  A clip's value of an attribute is drawn uniformly from
  the values that no earlier reference narration of the video has stated, and
  a narration states only such new values: copying an earlier narration is
  always wrong.
* **Labels are not painted on.**  The setting (background) is independent of
  the label.  A label is evidenced by a prop (badge, price tag, stars, ...)
  that appears with a label-specific probability and is shared between labels
  (:data:`LABEL_PROPS`), by its position (ads open with a recommendation or a
  pain point and mostly close with purchase guidance) and by the knowledge
  (no certification clip without a certification, no pain-point clip without
  a pain point).
* **Wording varies.**  Every label opener, visual-fact sentence and knowledge
  clause has several phrasings, so a template that knows the grammar and the
  true visual words stays below the caption metrics' ceiling
  (:func:`template_narrations`).

Chance levels (written to ``reports/prepare.json`` by :func:`chance_levels`):
a text-only guesser that knows the rules picks a value uniformly among those
not yet stated in the video, so a fact with ``options`` such values is hit
with probability ``1 / options`` (``clip.truth["options"]``); the chance of a
kind is the mean over the stated facts.  For labels, a uniform guess among the
12 labels has chance 1/12 (the position prior and the majority label are
stronger text-free references, scored in the evaluation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..labels import LABELS
from ..metrics import phrase_pattern
from ..progress import progress_bar
from ..schema import UNITS_PER_SECOND, Clip, Product, Video, save_dataset, split_by_rank, text_length, window_around

# -- what can be seen ----------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40), "green": (40, 190, 60), "blue": (40, 80, 230),
    "yellow": (240, 215, 30), "purple": (150, 50, 200), "orange": (250, 130, 20),
}
SHAPES = ("round", "square", "triangular")
ACTIONS = ("held in a hand", "on a table", "with sparkles", "in its box")


def _tint(k: int) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(k / 12, 0.35, 0.45 if k % 2 else 0.75)
    return round(r * 255), round(g * 255), round(b * 255)


# Setting phrase -> (background pattern, muted tint).  Muted tints keep the
# saturated product colour the most salient colour in the frame; every pair
# differs in pattern and tint, so a cut between two settings is a clear scene change.
SETTINGS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "in the kitchen": ("checker", _tint(1)), "in the garden": ("dots", _tint(4)),
    "in a studio": ("solid", _tint(6)), "at the beach": ("gradient", _tint(3)),
    "in an office": ("grid", _tint(8)), "in a bedroom": ("hstripes", _tint(11)),
}

# Every phrase a narration can use to state a visible fact (metrics use it).
VISUAL_VOCAB: dict[str, list[str]] = {
    "colour": list(COLOURS), "shape": list(SHAPES), "action": list(ACTIONS), "setting": list(SETTINGS),
}
VISUAL_ATTRS = tuple(VISUAL_VOCAB)

# Label cues: props drawn in the top-left corner, never stated in a narration.
# Each label shows its props with these probabilities (the rest: no prop); props
# are shared between labels, so a prop narrows the label down without naming it.
PROPS = ("badge", "tag", "stars", "arrow", "cross", "gear", "drop", "brackets")
LABEL_PROPS: dict[str, dict[str, float]] = {
    "product_recommendation": {"stars": 0.3},
    "pain_point": {"cross": 0.7},
    "purchase_guidance": {"tag": 0.8},
    "appearance_design": {"brackets": 0.6, "stars": 0.2},
    "texture_material": {"drop": 0.6, "brackets": 0.2},
    "product_trial": {"drop": 0.2, "arrow": 0.2},
    "product_efficacy": {"arrow": 0.7},
    "quality_feature": {"badge": 0.3, "stars": 0.3},
    "appraisal_display": {"stars": 0.7},
    "safety_certification": {"badge": 0.8},
    "production_process": {"gear": 0.7},
    "other_selling_points": {"tag": 0.3},
}

# -- what is written -------------------------------------------------------------

BRANDS = ("Lumo", "Vexa", "Norra", "Kiro", "Sela", "Dawn", "Mira", "Tovi", "Paxo", "Rhea",
          "Ombra", "Zeni", "Calo", "Brio", "Nuvo", "Teka")

# category -> knowledge field -> item pool.  No item names a colour, shape, action or setting.
CATEGORIES: dict[str, dict[str, list[str]]] = {
    "serum": {
        "ingredients": ["hyaluronic acid", "vitamin C", "niacinamide", "matcha extract", "peptides"],
        "efficacy": ["deep hydration", "a brighter glow", "smoother skin", "fewer fine lines"],
        "appearance": ["a glass dropper", "a slim bottle", "a travel size"],
        "quality": ["absorbs in seconds", "never feels sticky", "suits sensitive skin"],
        "pain_point": ["dry skin", "dull skin", "tired skin"],
        "promotion": ["two for one today", "twenty percent off", "a free sample set"],
        "certification": ["dermatologist tested", "cruelty free", "fragrance free"],
    },
    "sneaker": {
        "ingredients": ["breathable mesh", "recycled rubber", "memory foam", "soft suede"],
        "efficacy": ["all day comfort", "a lighter step", "steady grip", "less foot fatigue"],
        "appearance": ["a low top cut", "thick soles", "reflective laces"],
        "quality": ["lasts for years", "keeps feet dry", "resists slipping"],
        "pain_point": ["sore feet", "heavy shoes", "slippery floors"],
        "promotion": ["free shipping today", "thirty percent off", "a second pair half price"],
        "certification": ["vegan certified", "lab tested for grip", "orthopedic approved"],
    },
    "mug": {
        "ingredients": ["stainless steel", "food grade ceramic", "double walls", "bamboo lid"],
        "efficacy": ["coffee hot for hours", "drinks cold all day", "no burnt fingers"],
        "appearance": ["a sturdy handle", "a wide mouth", "a compact body"],
        "quality": ["never leaks", "is dishwasher safe", "survives drops"],
        "pain_point": ["cold coffee", "leaky lids", "burnt fingers"],
        "promotion": ["buy one get one free", "fifteen percent off", "a free lid today"],
        "certification": ["BPA free", "food safety certified", "lead free"],
    },
    "headphones": {
        "ingredients": ["soft ear cushions", "a light frame", "titanium drivers", "a braided cable"],
        "efficacy": ["rich deep bass", "clear calls", "quiet focus", "crisp highs"],
        "appearance": ["folding arms", "a padded band", "a slim case"],
        "quality": ["runs forty hours", "charges in minutes", "blocks outside noise"],
        "pain_point": ["noisy trains", "weak batteries", "sore ears"],
        "promotion": ["a free case today", "twenty five percent off", "free express delivery"],
        "certification": ["hearing safe certified", "sweat resistant rated", "energy star rated"],
    },
    "lamp": {
        "ingredients": ["warm LED chips", "an aluminium base", "a frosted shade", "a touch dimmer"],
        "efficacy": ["soft even light", "less eye strain", "better sleep", "a cosy room"],
        "appearance": ["a weighted base", "a bendable neck", "a small footprint"],
        "quality": ["lasts ten years", "stays cool", "never flickers"],
        "pain_point": ["harsh lighting", "tired eyes", "dark corners"],
        "promotion": ["a free bulb today", "half price this week", "ten percent off"],
        "certification": ["flicker free certified", "energy saving rated", "safety tested"],
    },
}
KNOWLEDGE_FIELDS = ("ingredients", "efficacy", "appearance", "quality", "pain_point",
                    "promotion", "certification")
# Fields a product may lack (probability it has them); the labels that need them.
OPTIONAL_FIELDS = {"pain_point": 0.7, "certification": 0.6}
LABEL_NEEDS = {"pain_point": "pain_point", "safety_certification": "certification"}

# Per label: several openers ({name} and {field} slots are read from the
# knowledge) and the knowledge fields its extension clauses draw from.
OPENERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "product_recommendation": (("Meet the {name}.", "Say hello to the {name}.", "Introducing the {name}.",
                                "This is the {name}."), ("efficacy", "quality")),
    "pain_point": (("Tired of {pain_point}?", "Sick of {pain_point}?", "Still fighting {pain_point}?"),
                   ("pain_point", "efficacy")),
    "purchase_guidance": (("Grab it now with {promotion}.", "Order today: {promotion}.",
                           "Do not miss {promotion}."), ("promotion",)),
    "appearance_design": (("Look at this design.", "What a design.", "Check out the look."), ("appearance",)),
    "texture_material": (("It is made with {ingredients}.", "Inside is {ingredients}.",
                          "Made from {ingredients}."), ("ingredients",)),
    "product_trial": (("Let us try it.", "Time for a test.", "Watch it in use."), ("efficacy", "quality")),
    "product_efficacy": (("It gives you {efficacy}.", "Expect {efficacy}.", "The result: {efficacy}."),
                         ("efficacy",)),
    "quality_feature": (("This {name} {quality}.", "Built well: it {quality}.", "Quality shows: it {quality}."),
                        ("quality",)),
    "appraisal_display": (("Testers love it.", "Reviews are glowing.", "People rate it highly."),
                          ("quality", "efficacy")),
    "safety_certification": (("It is {certification}.", "Certified: {certification}.",
                              "Safe and {certification}."), ("certification",)),
    "production_process": (("Each piece is made with care.", "Crafted step by step.", "Made slowly, by hand."),
                           ("ingredients",)),
    "other_selling_points": (("And there is more.", "One more thing.", "Plus a bonus."), ("appearance", "quality")),
}
# Extension clauses, several per knowledge field, appended to reach the length.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "ingredients": ("It has {item}.", "Made with {item}.", "You get {item}."),
    "efficacy": ("Enjoy {item}.", "Expect {item}.", "It brings {item}."),
    "appearance": ("It has {item}.", "Note {item}.", "It comes with {item}."),
    "quality": ("It {item}.", "Best of all, it {item}.", "And it {item}."),
    "pain_point": ("No more {item}.", "Forget {item}.", "Say goodbye to {item}."),
    "promotion": ("Get {item}.", "Right now: {item}.", "Hurry for {item}."),
    "certification": ("It is {item}.", "Officially {item}.", "Proudly {item}."),
}
FILLERS = ("Truly.", "Worth it.", "Try it today.", "You will love it.", "Really.", "So good.")

# The visible-fact sentence: a noun phrase for colour / shape, a predicate for
# action / setting, and a frame that joins them (several phrasings of each).
NOUNS = {("colour", "shape"): ("the {colour} {shape} one", "this {colour} {shape} model"),
         ("colour",): ("the {colour} one", "this {colour} version"),
         ("shape",): ("the {shape} one", "this {shape} model"),
         (): ("it",)}
VERBS = ("appears", "is shown", "shows up")
FRAMES = ("{noun} {verb} {where}.", "Now {noun} {verb} {where}.", "Look, {noun} {verb} {where}.",
          "{noun}, {where}.")
BARE = ("Here is {noun}.", "Look at {noun}.", "See {noun}.", "{noun}.")   # no action / setting stated

WORDS_PER_SECOND = UNITS_PER_SECOND["en"]


@dataclass
class SyntheticConfig:
    n_videos: int = 100
    seed: int = 0
    min_clips: int = 4
    max_clips: int = 8
    min_clip_s: int = 2
    max_clip_s: int = 8
    fps: int = 10
    frame_size: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.2


# -- storyline and text --------------------------------------------------------

def sample_storyline(rng: np.random.Generator, n_clips: int, fields: set[str]) -> list[str]:
    """Ads open with a recommendation or a pain point and mostly close with purchase
    guidance; a label whose knowledge field the product lacks never occurs;
    neighbours never share a label."""
    usable = [l for l in LABELS if LABEL_NEEDS.get(l, "promotion") in fields]
    openers = [l for l in ("product_recommendation", "pain_point") if l in usable]
    story = [str(rng.choice(openers))]
    middle = [l for l in usable if l not in ("pain_point", "purchase_guidance")]
    for _ in range(n_clips - 2):
        story.append(str(rng.choice([l for l in middle if l != story[-1]])))
    last = "purchase_guidance" if rng.random() < 0.8 or story[-1] == "other_selling_points" \
        else "other_selling_points"
    if last == story[-1]:
        last = "purchase_guidance"
    story.append(last)
    return story


def _words(text: str) -> int:
    return text_length(text, "en")


def visual_sentence(rng: np.random.Generator, values: dict[str, str], attrs: list[str]) -> str:
    """One sentence stating exactly ``attrs`` of ``values`` (several phrasings)."""
    noun = str(rng.choice(NOUNS[tuple(a for a in ("colour", "shape") if a in attrs)]))
    where = " ".join(values[a] for a in ("action", "setting") if a in attrs)
    noun = noun.format(**values)
    frames = FRAMES if where else BARE
    if noun == "it":   # a bare pronoun cannot stand alone
        frames = tuple(f for f in frames if not f.startswith("{noun},") and f != "{noun}.")
    text = str(rng.choice(frames)).format(noun=noun, verb=str(rng.choice(VERBS)), where=where)
    return text[0].upper() + text[1:]


def compose_narration(rng: np.random.Generator, label: str, name: str, knowledge: dict[str, list[str]],
                      values: dict[str, str], new: list[str], target: int
                      ) -> tuple[str, list[str], list[str]]:
    """A sentence stating as many of the ``new`` visible facts as fit, after a label
    opener where one fits too, then knowledge clauses (and short fillers) until the
    length is within ±1 word of ``target``.  Returns (text, visible attributes
    stated, knowledge items used).

    The one grammar of the benchmark: the generator writes references with it and
    :func:`template_narrations` (the no-learning reference rows) narrates with it.
    The facts come first because they are what the clip alone can say; a short
    clip keeps them and drops the opener, as quick cuts in ads do.
    """
    openers, fields = OPENERS[label]
    budget = target + 1
    slots = {"name": name, **{f: str(rng.choice(knowledge[f])) for f in knowledge}}
    template = str(rng.choice(openers))
    opener = template.format(**slots)
    stated = [a for a in VISUAL_ATTRS if a in new]
    rng.shuffle(stated)
    sentence = ""
    while stated:   # drop facts (last drawn first) until the sentence fits
        sentence = visual_sentence(rng, values, stated)
        if _words(sentence) <= budget:
            break
        stated.pop()
        sentence = ""
    sentences = [sentence] if sentence else []
    used = []
    if not sentences or _words(opener) + _words(sentence) <= budget:
        sentences.insert(0, opener)
        used = [slots[f] for f in knowledge if "{" + f + "}" in template]
    extensions = [(f, item) for f in fields if f in knowledge for item in knowledge[f] if item not in used]
    rng.shuffle(extensions)
    for field_name, item in extensions:
        clause = str(rng.choice(EXTENSIONS[field_name])).format(item=item)
        if _words(" ".join(sentences)) + _words(clause) > budget:
            continue
        sentences.append(clause)
        used.append(item)
    for filler in sorted(FILLERS, key=lambda s: -_words(s)):
        n = _words(" ".join(sentences))
        if n + _words(filler) <= budget and n < target - 1:
            sentences.append(filler)
    return " ".join(sentences), [a for a in VISUAL_ATTRS if a in stated], used


def sample_product(rng: np.random.Generator, index: int) -> tuple[Product, str]:
    """A product (name and knowledge, some fields optional) and its category."""
    category = str(rng.choice(list(CATEGORIES)))
    brand = BRANDS[index % len(BRANDS)] if index < len(BRANDS) else str(rng.choice(BRANDS))
    pools = CATEGORIES[category]
    fields = [f for f in KNOWLEDGE_FIELDS if rng.random() < OPTIONAL_FIELDS.get(f, 1.0)]
    knowledge = {f: [str(x) for x in rng.choice(pools[f], size=2, replace=False)] for f in fields}
    return Product(name=f"{brand} {category}", knowledge=knowledge), category


def draw_values(rng: np.random.Generator, stated: dict[str, set[str]], previous_setting: str | None
                ) -> tuple[dict[str, str], dict[str, int]]:
    """One clip's visible values and, per attribute, how many values were still unstated.

    Each value is drawn uniformly from those no earlier narration of the video stated
    (all values once every one has been stated); the setting also differs from the
    previous clip's, so every cut is a scene change.
    """
    values, options = {}, {}
    for attr, vocab in VISUAL_VOCAB.items():
        fresh = [v for v in vocab if v not in stated[attr]]
        options[attr] = len(fresh)
        pool = [v for v in (fresh or vocab) if not (attr == "setting" and v == previous_setting)]
        values[attr] = str(rng.choice(pool or vocab))
    return values, options


def sample_prop(rng: np.random.Generator, label: str) -> str | None:
    """The clip's label cue, drawn with the label's prop probabilities (None: no prop)."""
    props = LABEL_PROPS[label]
    r, acc = rng.random(), 0.0
    for prop, p in props.items():
        acc += p
        if r < acc:
            return prop
    return None


def make_video_record(rng: np.random.Generator, index: int, cfg: SyntheticConfig) -> Video:
    """One video's annotation (true clip spans, labels, narrations, visible facts)."""
    product, category = sample_product(rng, index)
    n_clips = int(rng.integers(cfg.min_clips, cfg.max_clips + 1))
    story = sample_storyline(rng, n_clips, set(product.knowledge))
    clips, t = [], 0
    stated_so_far: dict[str, set[str]] = {a: set() for a in VISUAL_ATTRS}
    previous_setting = None
    for i, label in enumerate(story):
        seconds = int(rng.integers(cfg.min_clip_s, cfg.max_clip_s + 1))
        values, options = draw_values(rng, stated_so_far, previous_setting)
        new = [a for a in VISUAL_ATTRS if values[a] not in stated_so_far[a]]
        target = max(4, round(WORDS_PER_SECOND * seconds))
        text, stated, used = compose_narration(rng, label, product.name, product.knowledge, values, new, target)
        for a in stated:
            stated_so_far[a].add(values[a])
        previous_setting = values["setting"]
        n = _words(text)
        clips.append(Clip(
            index=i, start=float(t), end=float(t + seconds),
            window=window_around(n), labels=[label], narration=text,
            truth={**values, "stated": stated, "options": {a: options[a] for a in stated},
                   "prop": sample_prop(rng, label), "knowledge_used": used,
                   "motion": float(rng.choice([0.0, 0.0, 2.0, 5.0]))}))
        t += seconds
    return Video(id=f"syn{index:04d}", product=product, clips=clips, language="en",
                 video_path=f"videos/syn{index:04d}.mp4", truth={"category": category, "fps": cfg.fps})


def assign_splits(videos: list[Video], cfg: SyntheticConfig, rng: np.random.Generator) -> None:
    """Split by video (never by clip), at least one video each for val and test."""
    for i, split in split_by_rank(rng.permutation(len(videos)), cfg.val_fraction, cfg.test_fraction).items():
        videos[i].split = split


# -- chance and the no-learning reference rows --------------------------------------

def fact_count(videos: list[Video]) -> int:
    """Visible facts stated by the reference narrations of ``videos``."""
    return sum(len(c.truth.get("stated", ())) for v in videos for c in v.clips)


def stated_fact_spans(clip: Clip, text: str | None = None) -> list[tuple[str, str, int, int]]:
    """(kind, value, start, end) of each visible fact that the clip's truth says its reference
    narration states, found in ``text`` (default: that narration) as ``visual_attr_acc`` finds it;
    a fact whose words the text does not contain is left out."""
    text = clip.narration if text is None else text
    truth, out = clip.truth or {}, []
    for kind, vocab in VISUAL_VOCAB.items():
        value = truth.get(kind)
        if kind not in truth.get("stated", []) or value not in vocab:
            continue
        found = phrase_pattern(value).search(text)
        if found:
            out.append((kind, value, *found.span()))
    return out


def clip_values(clip: Clip) -> tuple[int, ...] | None:
    """The clip's visible values as indices into :data:`VISUAL_VOCAB`, kind by kind in the order of
    :data:`VISUAL_ATTRS`, from the generator's truth; None for a clip without that truth (real
    data).  Stage 1 of training (``train.qformer_steps``, :mod:`videonarrator.pretrain`) learns them."""
    truth = clip.truth or {}
    if any(truth.get(kind) not in VISUAL_VOCAB[kind] for kind in VISUAL_ATTRS):
        return None
    return tuple(VISUAL_VOCAB[kind].index(truth[kind]) for kind in VISUAL_ATTRS)


def clip_caption(clip: Clip) -> str | None:
    """What the clip shows, all four visible values in one fixed phrase ("red round, held in a
    hand, in the kitchen"), from the generator's truth; None for a clip without that truth (real
    data).  The caption warm-up of training (``train.caption_steps``) learns to write it."""
    if clip_values(clip) is None:
        return None
    truth = clip.truth
    return f"{truth['colour']} {truth['shape']}, {truth['action']}, {truth['setting']}"


def chance_levels(videos: list[Video]) -> dict[str, float]:
    """Expected accuracy of a text-only guesser that knows the generator's rules.

    Per fact kind: the mean of 1 / (values not yet stated in the video) over the
    stated facts of that kind; ``visual_facts``: the same over all facts;
    ``label``: a uniform guess among the 12 labels.
    """
    per_kind: dict[str, list[float]] = {a: [] for a in VISUAL_ATTRS}
    for v in videos:
        for c in v.clips:
            for a in c.truth.get("stated", ()):
                per_kind[a].append(1.0 / c.truth["options"][a])
    every = [x for xs in per_kind.values() for x in xs]
    out = {a: float(np.mean(xs)) if xs else math.nan for a, xs in per_kind.items()}
    out["visual_facts"] = float(np.mean(every)) if every else math.nan
    out["label"] = 1.0 / len(LABELS)
    return out


def template_narrations(videos: list[Video], seed: int, oracle: bool) -> dict[str, list[str]]:
    """Narrations by the generator's own grammar, learning nothing: {video id: [text per clip]}.

    It knows each clip's label, duration and the knowledge (as a model in
    given-storyline mode does).  ``oracle``: it also knows the true visible
    values; otherwise it guesses each value uniformly among those its own earlier
    narrations of the video have not stated (the rule the references follow).
    Its wording is drawn afresh (``seed``), so even the oracle does not copy the
    reference's phrasing.
    """
    rng = np.random.default_rng([seed, 1 + oracle])
    out = {}
    for v in videos:
        said: dict[str, set[str]] = {a: set() for a in VISUAL_ATTRS}
        texts = []
        for c in v.clips:
            if oracle:
                values = {a: c.truth[a] for a in VISUAL_ATTRS}
            else:
                values, _ = draw_values(rng, said, None)
            new = [a for a in VISUAL_ATTRS if values[a] not in said[a]]
            target = max(4, round(WORDS_PER_SECOND * c.duration))
            text, stated, _ = compose_narration(rng, c.labels[0], v.product.name, v.product.knowledge,
                                                values, new, target)
            for a in stated:
                said[a].add(values[a])
            texts.append(text)
        out[v.id] = texts
    return out


# -- pixels ------------------------------------------------------------------------

@lru_cache(maxsize=4)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) float32 coordinate grids, computed once per frame size."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


def background(pattern: str, tint: tuple[int, int, int], size: int, shift: float) -> np.ndarray:
    """(size, size, 3) uint8 scene background; ``shift`` scrolls the pattern (motion)."""
    y, x = pixel_grid(size)
    x = x + shift
    if pattern == "solid":
        m = np.zeros_like(x)
    elif pattern == "hstripes":
        m = (np.floor((y + shift) / 8) % 2)
    elif pattern == "vstripes":
        m = (np.floor(x / 8) % 2)
    elif pattern == "checker":
        m = (np.floor(x / 16) + np.floor(y / 16)) % 2
    elif pattern == "dots":
        m = (((x % 16) - 8) ** 2 + ((y % 16) - 8) ** 2 < 9).astype(np.float32)
    elif pattern == "diagonal":
        m = (np.floor((x + y) / 10) % 2)
    elif pattern == "gradient":
        m = y / size
    elif pattern == "grid":
        m = ((x % 16 < 2) | (y % 16 < 2)).astype(np.float32)
    elif pattern == "rings":
        m = (np.floor(np.hypot(x - size / 2 - shift, y - size / 2) / 8) % 2)
    else:
        raise ValueError(f"unknown scene pattern {pattern!r}")
    base = np.array(tint, np.float32)
    img = base[None, None, :] * (0.75 + 0.5 * m[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask of the product, always at the same place and size."""
    y, x = pixel_grid(size)
    cx, cy, r = size * 0.5, size * 0.45, size * 0.2
    if shape == "round":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(x - cx) <= r * 0.9) & (np.abs(y - cy) <= r * 0.9)
    if shape == "triangular":
        top, bottom = cy - r, cy + r
        half = (y - top) / (2 * r) * r * 1.15
        return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}")


def draw_action(img: np.ndarray, action: str, t: float) -> None:
    """Draw the on-screen action around the product (in place)."""
    s = img.shape[0]
    y, x = pixel_grid(s)
    if action == "held in a hand":
        palm = ((x - s * 0.5) / (s * 0.22)) ** 2 + ((y - s * 0.8) / (s * 0.12)) ** 2 <= 1
        img[palm] = (230, 180, 140)
    elif action == "on a table":
        img[int(s * 0.66):int(s * 0.74), int(s * 0.1):int(s * 0.9)] = (120, 70, 30)
        img[int(s * 0.74):, int(s * 0.15):int(s * 0.2)] = (120, 70, 30)
        img[int(s * 0.74):, int(s * 0.8):int(s * 0.85)] = (120, 70, 30)
    elif action == "with sparkles":
        for k in range(6):
            a = 2 * math.pi * k / 6 + t
            px, py = s * 0.5 + s * 0.36 * math.cos(a), s * 0.45 + s * 0.36 * math.sin(a)
            star = (np.abs(x - px) + np.abs(y - py)) <= s * 0.04
            img[star] = (255, 255, 255)
    elif action == "in its box":
        x0, x1, y0, y1 = int(s * 0.22), int(s * 0.78), int(s * 0.58), int(s * 0.92)
        img[y0:y1, x0:x1] = (235, 235, 225)
        img[y0:y0 + 3, x0 - 6:x1 + 6] = (200, 200, 190)
    else:
        raise ValueError(f"unknown action {action!r}")


def draw_prop(img: np.ndarray, prop: str | None) -> None:
    """Draw a label cue in the top-left corner (in place); white or black, so it never
    competes with the product colour."""
    if prop is None:
        return
    s = img.shape[0]
    y, x = pixel_grid(s)
    white, black = (255, 255, 255), (20, 20, 20)
    cx, cy = s * 0.12, s * 0.12
    if prop == "badge":
        img[(x - cx) ** 2 + (y - cy) ** 2 <= (s * 0.08) ** 2] = white
        img[(x - cx) ** 2 + (y - cy) ** 2 <= (s * 0.04) ** 2] = black
    elif prop == "tag":
        img[int(s * 0.06):int(s * 0.16), int(s * 0.04):int(s * 0.22)] = white
        img[(x - s * 0.07) ** 2 + (y - s * 0.11) ** 2 <= (s * 0.015) ** 2] = black
    elif prop == "stars":
        for px in (0.07, 0.15, 0.23):
            img[(np.abs(x - s * px) + np.abs(y - s * 0.08)) <= s * 0.035] = white
    elif prop == "arrow":
        img[int(s * 0.11):int(s * 0.14), int(s * 0.03):int(s * 0.15)] = black
        img[(x >= s * 0.15) & (x - s * 0.15 <= s * 0.07 - np.abs(y - s * 0.125))] = black
    elif prop == "cross":
        d1, d2 = np.abs((x - cx) - (y - cy)), np.abs((x - cx) + (y - cy))
        box = (np.abs(x - cx) <= s * 0.08) & (np.abs(y - cy) <= s * 0.08)
        img[box & ((d1 <= s * 0.02) | (d2 <= s * 0.02))] = black
    elif prop == "gear":
        r = np.hypot(x - cx, y - cy)
        img[(r <= s * 0.08) & (r >= s * 0.04)] = white
        img[((np.abs(x - cx) <= s * 0.015) | (np.abs(y - cy) <= s * 0.015)) & (r <= s * 0.11) & (r >= s * 0.04)] = white
    elif prop == "drop":
        img[(x - cx) ** 2 + (y - s * 0.14) ** 2 <= (s * 0.05) ** 2] = black
        img[(y >= s * 0.03) & (y <= s * 0.14) & (np.abs(x - cx) <= (y - s * 0.03) * 0.45)] = black
    elif prop == "brackets":
        for x0, y0, dx, dy in ((0.03, 0.03, 1, 1), (0.22, 0.22, -1, -1)):
            xs, ys = int(s * x0), int(s * y0)
            x_lo, x_hi = sorted((xs, xs + dx * int(s * 0.08)))
            y_lo, y_hi = sorted((ys, ys + dy * int(s * 0.08)))
            img[y_lo:y_hi + 1, min(xs, xs + dx * 2):max(xs, xs + dx * 2) + 1] = white
            img[min(ys, ys + dy * 2):max(ys, ys + dy * 2) + 1, x_lo:x_hi + 1] = white
    else:
        raise ValueError(f"unknown prop {prop!r}; props: {', '.join(PROPS)}")


def render_clip(clip: Clip, size: int, fps: int) -> np.ndarray:
    """(n_frames, size, size, 3) uint8 frames of one clip, from its visible truth."""
    truth = clip.truth
    pattern, tint = SETTINGS[truth["setting"]]
    mask = shape_mask(truth["shape"], size)
    n = round(clip.duration * fps)
    frames = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        t = k / fps
        img = background(pattern, tint, size, shift=truth["motion"] * t * 4)
        draw_action(img, truth["action"], t)
        draw_prop(img, truth.get("prop"))
        img[mask] = COLOURS[truth["colour"]]  # the product sits in front of hand, table or box
        frames[k] = img
    return frames


def write_mp4(path: Path, frames_iter, size: int, fps: int) -> None:
    """Encode RGB frames to H.264 mp4, atomically."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for frames in frames_iter:
                for img in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def render_video(video: Video, root: Path, size: int, fps: int) -> Path:
    path = root / video.video_path
    write_mp4(path, (render_clip(c, size, fps) for c in video.clips), size, fps)
    return path


def generate(cfg: SyntheticConfig, out_dir: str | Path, progress: bool = True) -> list[Video]:
    """Write ``out_dir/videos/*.mp4`` and ``out_dir/annotations.json``; return the records."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    videos = [make_video_record(rng, i, cfg) for i in range(cfg.n_videos)]
    assign_splits(videos, cfg, rng)
    for video in progress_bar(videos, desc="render synthetic ads", disable=not progress):
        render_video(video, out_dir, cfg.frame_size, cfg.fps)
    save_dataset(videos, out_dir / "annotations.json",
                 meta={"source": "synthetic", "benchmark": 2, "config": vars(cfg), "visual_vocab": VISUAL_VOCAB})
    return videos
