"""Dataset statistics shared by every source (synthetic ads, E-SyncVidStory)."""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from .labels import LABELS
from .schema import Video, text_length


def dataset_statistics(videos: list[Video]) -> dict[str, Any]:
    """Counts and rates for a dataset card and ``reports/prepare.json``.

    Lengths are in the dataset's unit (words for English, characters for
    Chinese: schema.text_length).  ``units_per_second`` is total narration
    length over total clip seconds; ``units_per_second_clip_mean`` averages the
    per-clip ratio.  Label counts count each label of a multi-label clip;
    ``knowledge_field_counts`` is the number of videos having each field.
    """
    if not videos:
        raise ValueError("dataset_statistics needs at least one video")
    clips = [c for v in videos for c in v.clips]
    per_video = [len(v.clips) for v in videos]
    units = [text_length(c.narration, v.language) for v in videos for c in v.clips]
    seconds = [c.duration for c in clips]
    labels = Counter(k for c in clips for k in c.labels)
    fields = Counter(f for v in videos for f in v.product.knowledge)
    return {
        "videos": len(videos),
        "clips": len(clips),
        "frames": sum(len(c.frames) for c in clips),
        "videos_per_split": dict(sorted(Counter(v.split for v in videos).items())),
        "clips_per_video": {"mean": statistics.fmean(per_video), "min": min(per_video), "max": max(per_video)},
        "clip_seconds_mean": statistics.fmean(seconds),
        "units_per_second": sum(units) / sum(seconds),
        "units_per_second_clip_mean": statistics.fmean(n / s for n, s in zip(units, seconds)),
        "reference_in_window": statistics.fmean(c.window[0] <= n <= c.window[1] for c, n in zip(clips, units)),
        "label_counts": {k: labels[k] for k in LABELS},
        "multi_label_share": statistics.fmean(len(c.labels) > 1 for c in clips),
        "knowledge_field_counts": dict(fields.most_common()),
    }
