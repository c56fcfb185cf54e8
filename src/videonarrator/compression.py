"""Frame compression inside a clip (the paper's reference code: tau = 0.9).

Consecutive 1-fps frames of a clip are often near duplicates.  Following the
reference, we repeatedly look at the most similar *adjacent* pair among the
frames still kept (cosine similarity of the pooled CLIP embeddings) and, while
that similarity is >= tau, drop one frame of the pair.

Which frame of the pair (a, b) is dropped: the more redundant one, i.e. the one
whose similarity to its *other* kept neighbour is higher (a's left neighbour,
b's right neighbour); a frame with no other neighbour counts as -inf (so the end
frames of a clip are kept over an interior duplicate); ties drop the later frame
b.  Among several pairs with the same top similarity the earliest pair goes
first.  At least one frame is always kept; tau > 1 keeps every frame.
"""
from __future__ import annotations

from typing import Sequence

import torch

# Similarities are compared as sim >= tau - TOL so that duplicate frames (cosine 1
# up to float round-off) are dropped at tau = 1.0 too.
TOL = 1e-6


def compress_frames(pooled: torch.Tensor, tau: float) -> list[int]:
    """pooled (F, D) frame embeddings -> sorted indices of the frames to keep."""
    if pooled.ndim != 2 or pooled.shape[0] == 0:
        raise ValueError(f"pooled must be a non-empty (frames, dim) tensor; got shape {tuple(pooled.shape)}")
    n = pooled.shape[0]
    if tau > 1 or n == 1:
        return list(range(n))
    x = torch.nn.functional.normalize(pooled.detach().double(), dim=-1)  # (F, D), unit rows
    sim = (x @ x.T).clamp(-1.0, 1.0)                                     # (F, F) cosine
    kept = list(range(n))
    neg_inf = float("-inf")
    while len(kept) > 1:
        idx = torch.tensor(kept)
        adjacent = sim[idx[:-1], idx[1:]]           # (K-1,) similarity of kept[j], kept[j+1]
        j = int(torch.argmax(adjacent))             # first max = earliest pair on ties
        if adjacent[j].item() < tau - TOL:
            break
        a, b = kept[j], kept[j + 1]
        red_a = sim[kept[j - 1], a].item() if j > 0 else neg_inf
        red_b = sim[b, kept[j + 2]].item() if j + 2 < len(kept) else neg_inf
        kept.pop(j if red_a > red_b else j + 1)     # ties -> drop the later frame
    return kept


def kept_ratio(kept_counts: Sequence[int], total_counts: Sequence[int]) -> float:
    """Share of frames kept over many clips: sum(kept) / sum(total)."""
    if len(kept_counts) != len(total_counts):
        raise ValueError(f"kept_counts has {len(kept_counts)} entries but total_counts has {len(total_counts)}")
    for i, (k, t) in enumerate(zip(kept_counts, total_counts)):
        if not 0 <= k <= t:
            raise ValueError(f"clip {i}: kept {k} frames out of {t}; expected 0 <= kept <= total")
    total = sum(total_counts)
    if total == 0:
        raise ValueError("kept_ratio needs at least one frame in total_counts")
    return sum(kept_counts) / total


def kept_ratio_curve(pooled_per_clip: Sequence[torch.Tensor], taus: Sequence[float]) -> list[float]:
    """Kept ratio over all clips at each threshold (for the 'kept ratio vs tau' plot)."""
    totals = [len(p) for p in pooled_per_clip]
    return [kept_ratio([len(compress_frames(p, tau)) for p in pooled_per_clip], totals) for tau in taus]
