import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from videonarrator.compression import TOL, compress_frames, kept_ratio


def at_angles(degrees, scales=None):
    """2-D frame embeddings on the unit circle: cos(frame i, frame j) = cos(angle_i - angle_j)."""
    scales = scales or [1.0] * len(degrees)
    return torch.tensor([[s * math.cos(math.radians(a)), s * math.sin(math.radians(a))]
                         for a, s in zip(degrees, scales)])


def test_identical_frames_collapse_to_one():
    pooled = torch.randn(1, 16).repeat(5, 1)
    assert compress_frames(pooled, 0.9) == [0]
    # duplicates are dropped at tau = 1.0 too (cosine 1 up to round-off)
    assert compress_frames(pooled, 1.0) == [0]


def test_orthogonal_frames_all_kept():
    assert compress_frames(torch.eye(5) * 3.0, 0.5) == [0, 1, 2, 3, 4]


def test_only_adjacent_pairs_count():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # frames 0 and 2 are identical but not adjacent: nothing is dropped
    assert compress_frames(torch.stack([a, b, a]), 0.9) == [0, 1, 2]


def test_chain_drop_order_and_redundancy_rule():
    # Angles 0, 10, 30, 32, 60 degrees (magnitudes vary: cosine ignores them).
    # tau = 0.9 = cos(25.84 deg): a pair is merged while its angle gap is <= 25.84.
    # Adjacent gaps: 10, 20, 2, 28.
    # 1) top pair (2, 3), gap 2. Redundancy: frame 2 vs its other neighbour 1 is cos 20,
    #    frame 3 vs its other neighbour 4 is cos 28; cos 20 > cos 28 -> drop 2. Kept 0, 1, 3, 4.
    # 2) gaps 10, 22, 28: top pair (0, 1), gap 10. Frame 0 has no other neighbour (-inf),
    #    frame 1 vs 3 is cos 22 -> drop 1. Kept 0, 3, 4.
    # 3) gaps 32, 28: cos 28 = 0.883 < 0.9 -> stop.
    # (Always dropping the later frame would give [0, 2, 4]; the earlier, [3, 4]; a
    # left-to-right "drop if similar to the last kept" scan, [0, 2, 4].)
    pooled = at_angles([0, 10, 30, 32, 60], scales=[1.0, 2.0, 0.5, 3.0, 1.0])
    assert compress_frames(pooled, 0.9) == [0, 3, 4]


def test_ties_drop_the_later_frame():
    # Two identical frames: neither has another neighbour (tie) -> keep the first.
    assert compress_frames(at_angles([5, 5]), 0.9) == [0]
    # Frames at 0, 10, 20: pairs (0,1) and (1,2) both have gap 10. Either way frame 1 is the
    # more redundant (cos 10 to its other neighbour vs -inf for the end frame) -> drop 1.
    # Then pair (0, 2): cos 20 = 0.940 >= 0.9, both ends have no other neighbour (tie) ->
    # drop the later, 2. At tau = 0.95 the pair (0, 2) stays.
    assert compress_frames(at_angles([0, 10, 20]), 0.9) == [0]
    assert compress_frames(at_angles([0, 10, 20]), 0.95) == [0, 2]


def test_tau_above_one_keeps_all_and_negative_tau_keeps_one():
    pooled = torch.randn(1, 8).repeat(4, 1)
    assert compress_frames(pooled, 1.01) == [0, 1, 2, 3]
    assert compress_frames(torch.randn(6, 8), -1.0 - 2 * TOL) == [0]


def test_single_frame_and_bad_input():
    assert compress_frames(torch.randn(1, 8), 0.0) == [0]
    with pytest.raises(ValueError, match="non-empty"):
        compress_frames(torch.zeros(0, 8), 0.9)
    with pytest.raises(ValueError, match="non-empty"):
        compress_frames(torch.zeros(8), 0.9)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), dim=st.integers(2, 6), tau=st.floats(-1.0, 1.05), seed=st.integers(0, 10_000))
def test_properties(n, dim, tau, seed):
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(n, dim, generator=g)
    pooled[n // 2:] += 2.0 * torch.randn(1, dim, generator=g)  # some near-duplicates
    kept = compress_frames(pooled, tau)
    assert kept, "at least one frame is kept"
    assert kept == sorted(set(kept)) and set(kept) <= set(range(n))
    # the loop stopped for a reason: every remaining adjacent pair is below tau
    x = torch.nn.functional.normalize(pooled.double(), dim=-1)
    for a, b in zip(kept, kept[1:]):
        assert float(x[a] @ x[b]) < tau - TOL + 1e-12
    if tau > 1:
        assert kept == list(range(n))


def test_kept_ratio():
    assert kept_ratio([1, 3], [4, 4]) == 0.5
    with pytest.raises(ValueError, match="entries"):
        kept_ratio([1], [2, 3])
    with pytest.raises(ValueError, match="clip 1"):
        kept_ratio([1, 5], [2, 3])
    with pytest.raises(ValueError, match="at least one frame"):
        kept_ratio([], [])
