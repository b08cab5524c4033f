"""Paired comparison: McNemar's test and the bootstrap interval against hand computations and
scipy on hand-made predictions."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from prunekit.errors import ConfigurationError
from prunekit.evaluation.metrics import classification_metrics
from prunekit.evaluation.paired import (
    average_precisions,
    bootstrap_difference,
    bootstrap_map_difference,
    bootstrap_mean,
    compare_correct,
    compare_evaluations,
    mcnemar,
    pack_correct,
    unpack_correct,
)


def _pairs(
    both: int, only_reference: int, only_candidate: int, neither: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip correctness with these counts, shuffled (order must not matter)."""
    reference = [True] * both + [True] * only_reference + [False] * only_candidate + [False] * neither
    candidate = [True] * both + [False] * only_reference + [True] * only_candidate + [False] * neither
    order = np.random.default_rng(1).permutation(len(reference))
    return np.array(reference)[order], np.array(candidate)[order]


def test_packed_correctness_round_trips():
    """A sweep keeps each step's per-clip right/wrong as hex, one bit per clip."""
    correct = np.random.default_rng(0).random(1330) < 0.9
    packed = pack_correct(correct)
    assert len(packed) == 2 * -(-1330 // 8)
    assert np.array_equal(unpack_correct(packed, 1330), correct)
    assert pack_correct([True, False, True]) == "a0"  # 101 then zero padding
    with pytest.raises(ConfigurationError, match="not 1340 clips"):
        unpack_correct(packed, 1340)  # more clips than bits
    with pytest.raises(ConfigurationError, match="not 4 clips"):
        unpack_correct(pack_correct([True] * 8), 4)  # right answers past the 4th clip


def test_mcnemar_by_hand():
    """b = 7, c = 2: the exact p is 2 P(X <= 2) for X ~ Bin(9, 1/2) = 2 (1 + 9 + 36) / 512; the
    corrected chi-square is (5 - 1)^2 / 9 = 16/9, whose tail at 1 degree of freedom is
    erfc(sqrt(8/9))."""
    reference, candidate = _pairs(80, 7, 2, 11)
    assert mcnemar(reference, candidate) == (7, 2, pytest.approx(92 / 512, rel=1e-12))
    assert mcnemar(reference, candidate)[2] == pytest.approx(
        scipy.stats.binomtest(2, 9, 0.5).pvalue, rel=1e-12
    )
    b, c, p = mcnemar(reference, candidate, "chi-square")
    assert (b, c) == (7, 2) and p == pytest.approx(math.erfc(math.sqrt(8 / 9)), rel=1e-12)
    assert p == pytest.approx(scipy.stats.chi2.sf(16 / 9, 1), rel=1e-12)
    assert mcnemar(candidate, reference)[2] == mcnemar(reference, candidate)[2]  # two-sided
    assert mcnemar(*_pairs(5, 0, 0, 5)) == (0, 0, 1.0)  # no disagreement: nothing to test
    with pytest.raises(ValueError, match="Unknown McNemar test 'z'; choose one of exact, chi-square"):
        mcnemar(reference, candidate, "z")


def test_bootstrap_interval_equals_scipys_percentile_bootstrap():
    reference, candidate = _pairs(150, 12, 5, 33)
    low, high = bootstrap_difference(reference, candidate, resamples=2000, seed=7)
    expected = scipy.stats.bootstrap(
        (candidate.astype(float) - reference.astype(float),),
        np.mean,
        n_resamples=2000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert (low, high) == (pytest.approx(expected.low, abs=1e-12), pytest.approx(expected.high, abs=1e-12))
    assert low < -7 / 200 < high  # the observed difference lies inside
    assert bootstrap_difference(reference, candidate, seed=7) == (low, high)  # seeded: repeatable
    # Identical predictions: every resample's difference is 0.
    assert bootstrap_difference(reference, reference) == (0.0, 0.0)
    with pytest.raises(ValueError, match="confidence must be in \\(0, 1\\), got 95"):
        bootstrap_difference(reference, candidate, confidence=95)


def test_bootstrap_mean_keeps_a_clips_seeds_together():
    # Per-clip changes averaged over 3 seeds take values in thirds; the interval resamples clips.
    rng = np.random.default_rng(3)
    per_seed = rng.integers(-1, 2, (3, 300)).astype(float)  # (seeds, clips) in {-1, 0, 1}
    change = per_seed.mean(axis=0)  # (clips,)
    low, high = bootstrap_mean(change, resamples=2000, seed=5)
    expected = scipy.stats.bootstrap(
        (change,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    assert (low, high) == (pytest.approx(expected.low, abs=1e-12), pytest.approx(expected.high, abs=1e-12))
    assert low < change.mean() < high
    # One seed: the same interval as bootstrap_difference on that seed's pair.
    reference, candidate = _pairs(150, 12, 5, 33)
    assert bootstrap_mean(candidate.astype(float) - reference, seed=7) == bootstrap_difference(
        reference, candidate, seed=7
    )
    with pytest.raises(
        ConfigurationError, match="non-empty 1-D array of per-clip values, got shape \\(3, 300\\)"
    ):
        bootstrap_mean(per_seed)
    with pytest.raises(ConfigurationError, match="got shape \\(0,\\)"):
        bootstrap_mean(np.array([]))


def test_comparison_describes_itself_in_plain_words():
    reference, candidate = _pairs(150, 12, 5, 33)
    result = compare_correct(reference, candidate, seed=7)
    assert result.accuracy == (0.81, 0.775) and result.difference == pytest.approx(-0.035)
    assert (result.only_reference, result.only_candidate, result.clips) == (12, 5, 200)
    assert result.p_value == pytest.approx(scipy.stats.binomtest(5, 17, 0.5).pvalue)
    low, high = (100 * v for v in result.ci)
    assert result.describe() == (
        f"pruned is 3.5 points lower, 95 % CI {low:.1f} to {high:.1f}, McNemar "
        f"p = {result.p_value:.2g} (12 clips only dense gets right, 5 only pruned, "
        "of 200)"
    )
    same = compare_correct(reference, reference, names=("a", "b"))
    assert same.describe().startswith(
        "b is as accurate as a (0.0 points), 95 % CI 0.0 to 0.0, McNemar p = 1 "
    )
    better = compare_correct(*_pairs(900, 0, 30, 70))
    assert "pruned is 3.0 points higher" in better.describe() and "McNemar p < 0.001" in better.describe()


def test_evaluations_must_cover_the_same_clips():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    dense = classification_metrics(logits, np.array([0, 1, 1]), ["a", "b"])  # 2 of 3 right
    pruned = classification_metrics(logits.flip(1), np.array([0, 1, 1]), ["a", "b"])  # 1 of 3 right
    result = compare_evaluations(dense, pruned)
    assert (result.only_reference, result.only_candidate) == (2, 1)
    shorter = classification_metrics(logits[:2], np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="same clips in the same order; dense has 3 clips, pruned 2"):
        compare_evaluations(dense, shorter)
    with pytest.raises(
        ValueError, match=r"two non-empty \(N,\) arrays of one length, got shapes \(3,\) and \(2,\)"
    ):
        compare_correct([True, False, True], [True, False])
    with pytest.raises(ValueError, match=r"candidate correctness must be booleans .*\[2\]"):
        compare_correct([1, 0, 1], [1, 2, 0])


def test_resampled_average_precision_by_hand():
    """Three clips, one class, tags 1, 0, 1. Scores ranked 0.9 > 0.8 > 0.1: AP = (1/1 + 2/3) / 2
    = 5/6. A resample drawing clip 1 once and clip 2 twice (weights 0, 1, 2) ranks the negative
    above both copies of the positive: precision 2/3 for each, AP = 2/3. Reversed scores put
    clip 2 first: AP = (1/1 + 2/3) / 2 = 5/6 on the full set, 1 on the resample. So the paired
    mAP difference (reversed minus ranked) is 0 on the full set and +1/3 on that resample."""
    targets = np.array([[1.0], [0.0], [1.0]])
    ranked = np.array([[0.9], [0.8], [0.1]])
    reversed_ = np.array([[0.1], [0.8], [0.9]])
    weights = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])  # (R, N): the full set, the resample
    assert average_precisions(ranked, targets) == pytest.approx([5 / 6])
    assert average_precisions(ranked, targets, weights)[:, 0] == pytest.approx([5 / 6, 2 / 3])
    assert average_precisions(reversed_, targets, weights)[:, 0] == pytest.approx([5 / 6, 1.0])
    draws = average_precisions(reversed_, targets, weights) - average_precisions(ranked, targets, weights)
    assert draws[:, 0] == pytest.approx([0.0, 1 / 3])
    assert bootstrap_map_difference(ranked, ranked, targets, resamples=50) == (0.0, 0.0)
