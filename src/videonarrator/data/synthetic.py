"""Synthetic product advertisements: the embedded default dataset.

A seeded generator writes real mp4 files (H.264 through PyAV) of product ads:
each video has 4-8 clips of 2-8 s joined by hard cuts, a product with a
category, name and knowledge items, one script label per clip and a reference
English narration per clip whose length fits the clip's word window.

It is built so that *seeing matters*:

* the product's colour and shape and each clip's on-screen action are drawn in
  the frames and never written into the knowledge (the text inputs), yet many
  reference narrations state them;
* every script label has its own scene type (background pattern and tint), so
  the storyline can be read off the frames.

A model that ignores the video can copy knowledge items but must guess
colour, shape and action, and can only guess labels from position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..labels import LABELS
from ..schema import UNITS_PER_SECOND, Clip, Product, Video, save_dataset, split_by_rank, text_length, window_around

# -- what can be seen ----------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40), "green": (40, 190, 60), "blue": (40, 80, 230),
    "yellow": (240, 215, 30), "purple": (150, 50, 200), "orange": (250, 130, 20),
}
SHAPES = ("round", "square", "triangular")
ACTIONS = ("held in a hand", "on a table", "with sparkles", "in its box")

# Every phrase a narration can use to state a visible fact (metrics use it).
VISUAL_VOCAB: dict[str, list[str]] = {
    "colour": list(COLOURS), "shape": list(SHAPES), "action": list(ACTIONS),
}

# One scene type per label: a background pattern and a muted tint.  Tints sit
# 30 degrees apart on the hue wheel with alternating brightness, so any two
# labels differ clearly (every cut is a visible scene change) while the
# saturated product colour stays the most salient colour in the frame.
PATTERNS = ("solid", "hstripes", "checker", "vstripes", "dots", "diagonal",
            "gradient", "grid", "rings", "hstripes", "checker", "dots")


def _tint(k: int) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(k / 12, 0.35, 0.45 if k % 2 else 0.75)
    return round(r * 255), round(g * 255), round(b * 255)


SCENES: dict[str, tuple[str, tuple[int, int, int]]] = {
    label: (PATTERNS[k], _tint((5 * k) % 12)) for k, label in enumerate(LABELS)
}

# -- what is written -------------------------------------------------------------

BRANDS = ("Lumo", "Vexa", "Norra", "Kiro", "Sela", "Dawn", "Mira", "Tovi", "Paxo", "Rhea",
          "Ombra", "Zeni", "Calo", "Brio", "Nuvo", "Teka")

# category -> knowledge field -> item pool.  No item names a colour or shape.
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

# Per label: the opening clause (may state visible facts) and the knowledge
# fields its extension clauses draw from.  {colour} {shape} {action} are seen,
# {name} and the {field} slots are read from the knowledge.
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "product_recommendation": ("Meet the {colour} {name}.", ("efficacy", "quality")),
    "pain_point": ("Tired of {pain_point}?", ("pain_point", "efficacy")),
    "purchase_guidance": ("Grab it now with {promotion}.", ("promotion",)),
    "appearance_design": ("Look at this {colour} {shape} design.", ("appearance",)),
    "texture_material": ("It is made with {ingredients}.", ("ingredients",)),
    "product_trial": ("Here it is {action}.", ("efficacy", "quality")),
    "product_efficacy": ("It gives you {efficacy}.", ("efficacy",)),
    "quality_feature": ("This {name} {quality}.", ("quality",)),
    "appraisal_display": ("Testers love the {shape} {name}.", ("quality", "efficacy")),
    "safety_certification": ("It is {certification}.", ("certification",)),
    "production_process": ("Each {colour} piece is made with care.", ("ingredients",)),
    "other_selling_points": ("Plus it comes {action}.", ("appearance", "quality")),
}
# Extension clauses, one per knowledge field, appended to reach the length.
EXTENSIONS: dict[str, str] = {
    "ingredients": "It has {item}.", "efficacy": "Enjoy {item}.", "appearance": "It has {item}.",
    "quality": "It {item}.", "pain_point": "No more {item}.", "promotion": "Get {item}.",
    "certification": "It is {item}.",
}
FILLERS = ("Truly.", "Worth it.", "Try it today.", "You will love it.", "Really.", "So good.")

WORDS_PER_SECOND = UNITS_PER_SECOND["en"]


@dataclass
class SyntheticConfig:
    n_videos: int = 80
    seed: int = 0
    min_clips: int = 4
    max_clips: int = 8
    min_clip_s: int = 2
    max_clip_s: int = 8
    fps: int = 10
    frame_size: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.15


# -- storyline and text --------------------------------------------------------

def sample_storyline(rng: np.random.Generator, n_clips: int) -> list[str]:
    """Ads open with a recommendation or pain point and close with purchase guidance;
    neighbours never share a label (so every cut changes the scene)."""
    middle = [l for l in LABELS if l not in ("product_recommendation", "pain_point", "purchase_guidance")]
    story = [str(rng.choice(["product_recommendation", "pain_point"]))]
    for _ in range(n_clips - 2):
        choices = [l for l in middle + ["product_recommendation"] if l != story[-1]]
        story.append(str(rng.choice(choices)))
    story.append("purchase_guidance")
    return story


def fill(template: str, slots: dict[str, str]) -> str:
    return template.format(**slots)


def compose_narration(rng: np.random.Generator, label: str, slots: dict[str, str],
                      knowledge: dict[str, list[str]], target: int) -> tuple[str, list[str], list[str]]:
    """Opening clause plus knowledge clauses (and short fillers) until the length
    is within ±1 word of ``target``.  Returns (text, visible attrs stated, knowledge items used)."""
    opening, fields = TEMPLATES[label]
    stated = [a for a in ("colour", "shape", "action") if "{" + a + "}" in opening]
    sentences = [fill(opening, slots)]
    used = [slots[f] for f in KNOWLEDGE_FIELDS if "{" + f + "}" in opening]
    extensions = [(f, item) for f in fields for item in knowledge[f] if item not in used]
    rng.shuffle(extensions)

    def length() -> int:
        return text_length(" ".join(sentences), "en")

    for field_name, item in extensions:
        clause = fill(EXTENSIONS[field_name], {"item": item})
        if length() + text_length(clause, "en") > target + 1:
            continue
        sentences.append(clause)
        used.append(item)
    for filler in sorted(FILLERS, key=lambda s: -text_length(s, "en")):
        if length() + text_length(filler, "en") <= target + 1 and length() < target - 1:
            sentences.append(filler)
    return " ".join(sentences), stated, used


def sample_product(rng: np.random.Generator, index: int) -> tuple[Product, dict[str, str]]:
    category = str(rng.choice(list(CATEGORIES)))
    brand = BRANDS[index % len(BRANDS)] if index < len(BRANDS) else str(rng.choice(BRANDS))
    name = f"{brand} {category}"
    pools = CATEGORIES[category]
    knowledge = {f: [str(x) for x in rng.choice(pools[f], size=2, replace=False)] for f in KNOWLEDGE_FIELDS}
    visible = {"colour": str(rng.choice(list(COLOURS))), "shape": str(rng.choice(SHAPES)),
               "category": category}
    return Product(name=name, knowledge=knowledge), visible


def make_video_record(rng: np.random.Generator, index: int, cfg: SyntheticConfig) -> Video:
    """One video's annotation (true clip spans, labels, narrations, visible facts)."""
    product, visible = sample_product(rng, index)
    n_clips = int(rng.integers(cfg.min_clips, cfg.max_clips + 1))
    story = sample_storyline(rng, n_clips)
    clips, t = [], 0
    for i, label in enumerate(story):
        seconds = int(rng.integers(cfg.min_clip_s, cfg.max_clip_s + 1))
        action = str(rng.choice(ACTIONS))
        slots = {"name": product.name, "colour": visible["colour"], "shape": visible["shape"],
                 "action": action}
        slots.update({f: str(rng.choice(product.knowledge[f])) for f in KNOWLEDGE_FIELDS})
        target = max(4, round(WORDS_PER_SECOND * seconds))
        text, stated, used = compose_narration(rng, label, slots, product.knowledge, target)
        n = text_length(text, "en")
        clips.append(Clip(
            index=i, start=float(t), end=float(t + seconds),
            window=window_around(n), labels=[label], narration=text,
            truth={"colour": visible["colour"], "shape": visible["shape"], "action": action,
                   "stated": stated, "knowledge_used": used,
                   "motion": float(rng.choice([0.0, 0.0, 2.0, 5.0]))}))
        t += seconds
    return Video(id=f"syn{index:04d}", product=product, clips=clips, language="en",
                 video_path=f"videos/syn{index:04d}.mp4", truth={**visible, "fps": cfg.fps})


def assign_splits(videos: list[Video], cfg: SyntheticConfig, rng: np.random.Generator) -> None:
    """Split by video (never by clip), at least one video each for val and test."""
    for i, split in split_by_rank(rng.permutation(len(videos)), cfg.val_fraction, cfg.test_fraction).items():
        videos[i].split = split


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


def render_clip(clip: Clip, colour: str, shape: str, size: int, fps: int) -> np.ndarray:
    """(n_frames, size, size, 3) uint8 frames of one clip."""
    pattern, tint = SCENES[clip.labels[0]]
    mask = shape_mask(shape, size)
    n = round(clip.duration * fps)
    frames = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        t = k / fps
        img = background(pattern, tint, size, shift=clip.truth["motion"] * t * 4)
        draw_action(img, clip.truth["action"], t)
        img[mask] = COLOURS[colour]  # the product sits in front of hand, table or box
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
    colour, shape = video.truth["colour"], video.truth["shape"]
    write_mp4(path, (render_clip(c, colour, shape, size, fps) for c in video.clips), size, fps)
    return path


def generate(cfg: SyntheticConfig, out_dir: str | Path, progress: bool = True) -> list[Video]:
    """Write ``out_dir/videos/*.mp4`` and ``out_dir/annotations.json``; return the records."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    videos = [make_video_record(rng, i, cfg) for i in range(cfg.n_videos)]
    assign_splits(videos, cfg, rng)
    for video in tqdm(videos, desc="render synthetic ads", disable=not progress):
        render_video(video, out_dir, cfg.frame_size, cfg.fps)
    save_dataset(videos, out_dir / "annotations.json",
                 meta={"source": "synthetic", "config": vars(cfg), "visual_vocab": VISUAL_VOCAB})
    return videos
