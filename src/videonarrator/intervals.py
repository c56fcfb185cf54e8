"""Uncertainty of evaluation figures: intervals that resample test videos.

Clips of one video are not independent (same product, same story), so every
interval here resamples whole test videos with replacement (a cluster
bootstrap) and recomputes the statistic on the resampled set.  A rate is a
ratio of sums (hits over counts across the chosen videos), and every rate is
reported with the count behind it.  The resampling is seeded: the same inputs
give the same interval on every run.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import numpy as np

Statistic = Callable[[Sequence[int]], float]   # video indices (with repeats) -> value

N_BOOT = 1000
LEVEL = 0.95


def _check(n_videos: int, n_boot: int, level: float) -> None:
    if n_videos < 1:
        raise ValueError("an interval needs at least one test video")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resamples(n_videos: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` x ``n_videos`` video indices drawn with replacement (seeded)."""
    _check(n_videos, n_boot, LEVEL)
    return np.random.default_rng(seed).integers(0, n_videos, size=(n_boot, n_videos))


def _percentiles(values: Sequence[float], level: float) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(n_videos: int, statistic: Statistic, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over video resamples.

    Resamples where the statistic is undefined (NaN, e.g. no clip of a kind was
    drawn) are left out of the percentiles.
    """
    _check(n_videos, n_boot, level)
    draws = resamples(n_videos, n_boot, seed)
    return _percentiles([statistic(list(idx)) for idx in draws], level)


def ratio(hits: Sequence[float], counts: Sequence[float]) -> Statistic:
    """The statistic sum(hits) / sum(counts) over the chosen videos (NaN when no count)."""
    if len(hits) != len(counts):
        raise ValueError(f"hits and counts must have one entry per video ({len(hits)} != {len(counts)})")
    h, c = np.asarray(hits, dtype=float), np.asarray(counts, dtype=float)

    def stat(idx: Sequence[int]) -> float:
        total = c[list(idx)].sum()
        return float(h[list(idx)].sum() / total) if total else math.nan
    return stat


def rate_ci(hits: Sequence[float], counts: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
            level: float = LEVEL) -> dict[str, float]:
    """A rate over test videos with its count and bootstrap interval.

    ``hits[v]`` / ``counts[v]``: the successes and trials of video ``v``.
    Returns ``{"value", "lo", "hi", "k", "n"}`` (k successes of n trials).
    """
    stat = ratio(hits, counts)
    k, n = float(sum(hits)), float(sum(counts))
    lo, hi = bootstrap_ci(len(hits), stat, n_boot, seed, level)
    return {"value": k / n if n else math.nan, "lo": lo, "hi": hi, "k": k, "n": n}


def paired_difference_ci(stat_a: Statistic, stat_b: Statistic, n_videos: int, n_boot: int = N_BOOT,
                         seed: int = 0, level: float = LEVEL) -> dict[str, float]:
    """``stat_a - stat_b`` on the same test videos, with an interval from shared resamples.

    Both systems see the same resampled videos in each draw, so the interval
    reflects the difference between them, not the spread of the videos.
    """
    _check(n_videos, n_boot, level)
    every = list(range(n_videos))
    draws = resamples(n_videos, n_boot, seed)
    lo, hi = _percentiles([stat_a(list(idx)) - stat_b(list(idx)) for idx in draws], level)
    return {"value": stat_a(every) - stat_b(every), "lo": lo, "hi": hi}


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of k successes in n independent trials."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation over training seeds (sd NaN for one seed)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("seed_summary needs at least one value")
    sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return {"mean": statistics.fmean(vals), "sd": sd, "seeds": len(vals)}


def format_ci(value: float, lo: float, hi: float, digits: int = 2) -> str:
    """``0.81 [0.74, 0.87]`` for tables."""
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
