import math

import numpy as np
import pytest

from videonarrator import intervals as I


def test_rate_ci_counts_and_brackets_the_rate():
    hits, counts = [3, 0, 5, 2, 4], [5, 4, 5, 3, 6]
    r = I.rate_ci(hits, counts, n_boot=500, seed=1)
    assert (r["k"], r["n"]) == (14, 23)
    assert r["value"] == pytest.approx(14 / 23)
    assert r["lo"] < r["value"] < r["hi"]
    assert 0 <= r["lo"] and r["hi"] <= 1


def test_interval_is_seeded_and_narrows_with_more_videos():
    few = I.rate_ci([1, 0] * 5, [1, 1] * 5, seed=3)
    assert few == I.rate_ci([1, 0] * 5, [1, 1] * 5, seed=3)
    many = I.rate_ci([1, 0] * 200, [1, 1] * 200, seed=3)
    assert (many["hi"] - many["lo"]) < (few["hi"] - few["lo"]) / 3


def test_cluster_bootstrap_is_wider_than_clip_independence_when_videos_differ():
    # 10 videos of 20 clips: half the videos get everything right, half nothing.
    hits, counts = [20, 0] * 5, [20] * 10
    r = I.rate_ci(hits, counts, seed=0)
    w_lo, w_hi = I.wilson(100, 200)
    assert (r["hi"] - r["lo"]) > 2 * (w_hi - w_lo)


def test_constant_statistic_has_a_point_interval():
    lo, hi = I.bootstrap_ci(7, lambda idx: 0.5)
    assert lo == hi == 0.5


def test_undefined_resamples_are_left_out():
    # only video 0 has trials; resamples without it are NaN and must not poison the interval
    r = I.rate_ci([2, 0, 0], [4, 0, 0], seed=0)
    assert r["lo"] == r["hi"] == 0.5


def test_paired_difference_uses_shared_resamples():
    a = I.ratio([5, 6, 7, 8], [10, 10, 10, 10])
    b = I.ratio([4, 5, 6, 7], [10, 10, 10, 10])
    d = I.paired_difference_ci(a, b, 4, seed=0)
    # b is a minus exactly one hit per video: every resample differs by exactly 0.1
    assert d["value"] == pytest.approx(0.1)
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)


def test_wilson_known_values_and_errors():
    lo, hi = I.wilson(11, 37)
    assert lo == pytest.approx(0.175, abs=0.005) and hi == pytest.approx(0.458, abs=0.005)
    assert all(math.isnan(x) for x in I.wilson(0, 0))
    with pytest.raises(ValueError, match="k must be in"):
        I.wilson(5, 3)


def test_seed_summary_and_format():
    s = I.seed_summary([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["sd"] == pytest.approx(0.1) and s["seeds"] == 3
    assert math.isnan(I.seed_summary([0.5])["sd"])
    assert I.format_ci(0.8123, 0.7, 0.9) == "0.81 [0.70, 0.90]"


@pytest.mark.parametrize("call, match", [
    (lambda: I.rate_ci([], []), "at least one test video"),
    (lambda: I.rate_ci([1], [1, 2]), "one entry per video"),
    (lambda: I.bootstrap_ci(3, lambda i: 0.0, n_boot=0), "n_boot"),
    (lambda: I.bootstrap_ci(3, lambda i: 0.0, level=1.5), "level"),
    (lambda: I.seed_summary([]), "at least one value"),
])
def test_bad_inputs_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_resamples_shape_and_range():
    r = I.resamples(5, n_boot=50, seed=2)
    assert r.shape == (50, 5) and r.min() >= 0 and r.max() <= 4
    assert np.array_equal(r, I.resamples(5, n_boot=50, seed=2))
