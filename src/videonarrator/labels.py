"""The 12 script labels (storyline tags) of E-SyncVidStory.

Each label has a stable English key used throughout the package, an English
phrase used in English prompts, and the Chinese name used in the official
annotations (``label_definition.txt``).  A clip may carry several labels.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

# key, English phrase, Chinese name (exactly as in the annotations)
LABEL_TABLE: tuple[tuple[str, str, str], ...] = (
    ("product_recommendation", "product recommendation", "产品推荐"),
    ("pain_point", "pain point", "痛点铺垫"),
    ("purchase_guidance", "purchase guidance", "引导购买"),
    ("appearance_design", "appearance design", "外观设计"),
    ("texture_material", "texture/ingredients/material", "质地/成分/材质"),
    ("product_trial", "product trial", "产品试用"),
    ("product_efficacy", "product efficacy", "产品功效"),
    ("quality_feature", "quality/feature", "质量/特性介绍"),
    ("appraisal_display", "appraisal display", "鉴定展示"),
    ("safety_certification", "safety certification", "安全认证"),
    ("production_process", "production process", "生产过程"),
    ("other_selling_points", "other selling points", "其他/通用卖点"),
)

LABELS: tuple[str, ...] = tuple(key for key, _, _ in LABEL_TABLE)
LABEL_EN: dict[str, str] = {key: en for key, en, _ in LABEL_TABLE}
LABEL_ZH: dict[str, str] = {key: zh for key, _, zh in LABEL_TABLE}
LABEL_FROM_ZH: dict[str, str] = {zh: key for key, _, zh in LABEL_TABLE}
LABEL_FROM_EN: dict[str, str] = {en: key for key, en, _ in LABEL_TABLE}

# Multi-labels are joined with "+" in the annotations and in prompts.
LABEL_SEP = "+"

# Spellings the release's label line can carry besides the canonical names.  Its building code
# copies each clip's annotated label string verbatim (``剧本类型：{label}``), and annotators type on
# Chinese keyboards, which give full-width "／" and "＋" as readily as "/" and "+".  The loader
# keeps the line's exact text for writing it back; these only say which label it names.
# Two labels are named like knowledge fields plus a qualifier (质量/特性 + 介绍, 其他/ + 通用卖点); the
# field's bare name names the label unambiguously and is read as it.  (None of these variants occurs
# in the 400 shared records; they are accepted, not required.)
LABEL_SPELLINGS_ZH: dict[str, str] = {
    **LABEL_FROM_ZH,
    **{zh.replace("/", "／"): key for key, _, zh in LABEL_TABLE if "/" in zh},
    "质量/特性": "quality_feature", "质量／特性": "quality_feature", "通用卖点": "other_selling_points",
}
_SEPARATORS_ZH = re.compile(r"\s*[+＋]\s*")


def check_label(key: str, where: str = "") -> str:
    """Return ``key`` if it is a known label key, else raise naming ``where``."""
    if key not in LABEL_EN:
        at = f" in {where}" if where else ""
        raise ValueError(f"unknown script label {key!r}{at}; known labels: {', '.join(LABELS)}")
    return key


def format_labels(keys: list[str], language: str = "en") -> str:
    """Render label keys as the text a prompt or annotation carries."""
    names = LABEL_ZH if language == "zh" else LABEL_EN
    return LABEL_SEP.join(names[k] for k in keys)


def parse_labels(text: str, language: str = "en", where: str = "") -> list[str]:
    """Parse ``a+b`` label text (English phrases or Chinese names) into keys.

    English phrases are matched whole after splitting on ``+``.  Chinese text
    takes the release's spellings (:data:`LABEL_SPELLINGS_ZH`) joined by ``+`` or
    ``＋``, with or without spaces around them.
    """
    if language == "zh":
        lookup, parts = LABEL_SPELLINGS_ZH, _SEPARATORS_ZH.split(text.strip())
    else:
        lookup, parts = LABEL_FROM_EN, [p.strip() for p in text.strip().split(LABEL_SEP)]
    keys = []
    for part in parts:
        if part not in lookup:
            at = f" in {where}" if where else ""
            names = LABEL_FROM_ZH if language == "zh" else LABEL_FROM_EN
            raise ValueError(
                f"unknown script label {part!r}{at}; expected one of: {', '.join(names)}"
            )
        keys.append(lookup[part])
    return keys


def label_candidates(seen: Iterable[Sequence[str]] = ()) -> tuple[tuple[str, ...], ...]:
    """The label sets a generated storyline chooses among: every single label, then each
    multi-label combination in ``seen`` (e.g. the training clips' labels), in first-seen order."""
    out = [(key,) for key in LABELS]
    for keys in seen:
        keys = tuple(check_label(k, "label_candidates") for k in keys)
        if keys and keys not in out:
            out.append(keys)
    return tuple(out)
