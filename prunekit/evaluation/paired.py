"""Paired comparison of two models on the same clips: McNemar's test and a bootstrap interval.

Two models evaluated on the same clips are paired: most clips are right (or wrong) for both, and
only the clips where they disagree say which is better. McNemar's test asks whether the
disagreements split evenly (b clips only the reference gets right, c only the candidate); the
bootstrap resamples clips (pairs kept together) to give an interval for the accuracy difference.
On 1,330 clips a one-point difference is 13 clips, so without them a "holds" or "does not hold"
rests on noise.

``compare_evaluations(dense, pruned)`` takes two ``Evaluation``s (their per-clip ``correct``
column); ``compare_correct`` takes the two boolean arrays. ``pack_correct`` / ``unpack_correct``
write such an array as a short hex string (one bit per clip), as a sweep's results keep them.

Multi-label data has no per-clip "right or wrong": mAP is a statistic of the whole split (each
class's ranking of every clip). ``compare_map`` resamples clips with replacement, the same
draws for both models, recomputes both mAPs on each draw and gives the percentile interval of
their difference (``bootstrap_map_difference``); a draw without a positive clip for a class
leaves that class out of both means, as ``multilabel_metrics`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, chi2

from prunekit.errors import ConfigurationError
from prunekit.evaluation.metrics import Evaluation, MultilabelEvaluation

__all__ = [
    "MAP_RESAMPLES",
    "MAP_WORK",
    "TESTS",
    "MapComparison",
    "PairedComparison",
    "average_precisions",
    "bootstrap_difference",
    "bootstrap_map_difference",
    "bootstrap_mean",
    "compare",
    "compare_correct",
    "compare_evaluations",
    "compare_map",
    "map_resamples",
    "mcnemar",
    "pack_correct",
    "unpack_correct",
]

TESTS = ("exact", "chi-square")


@dataclass(frozen=True)
class PairedComparison:
    """Candidate against reference on the same clips. Accuracies and the interval are fractions;
    ``ci`` bounds ``difference`` (candidate minus reference)."""

    names: tuple[str, str]  # (reference, candidate)
    clips: int
    accuracy: tuple[float, float]  # (reference, candidate)
    only_reference: int  # clips only the reference gets right (McNemar's b)
    only_candidate: int  # clips only the candidate gets right (c)
    test: str  # "exact" (binomial) or "chi-square" (with continuity correction)
    p_value: float
    ci: tuple[float, float]
    confidence: float
    resamples: int
    seed: int

    @property
    def difference(self) -> float:
        return self.accuracy[1] - self.accuracy[0]

    def describe(self) -> str:
        """One line for people: 'pruned is 0.8 points lower, 95 % CI -1.6 to -0.1, McNemar p = 0.03'."""
        reference, candidate = self.names
        points = 100 * self.difference
        if round(points, 1) == 0:
            change = f"{candidate} is as accurate as {reference} (0.0 points)"
        else:
            change = f"{candidate} is {abs(points):.1f} points {'lower' if points < 0 else 'higher'}"
        low, high = (100 * v for v in self.ci)
        p = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.2g}"
        return (
            f"{change}, {100 * self.confidence:.0f} % CI {low:.1f} to {high:.1f}, McNemar {p} "
            f"({self.only_reference} clips only {reference} gets right, {self.only_candidate} only "
            f"{candidate}, of {self.clips})"
        )


def mcnemar(reference: np.ndarray, candidate: np.ndarray, test: str = "exact") -> tuple[int, int, float]:
    """(b, c, two-sided p) for per-clip correctness ``reference`` and ``candidate`` (N,) bool.

    "exact": the binomial test of b against b + c trials at 1/2 (valid at any count).
    "chi-square": (|b - c| - 1)^2 / (b + c) against chi-square with 1 degree of freedom, the
    continuity-corrected form statsmodels uses. No disagreement at all gives p = 1.
    """
    if test not in TESTS:
        raise ConfigurationError(f"Unknown McNemar test {test!r}; choose one of {', '.join(TESTS)}")
    a, b_ = _pair(reference, candidate)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    if b + c == 0:
        return b, c, 1.0
    if test == "exact":
        return b, c, float(binomtest(b, b + c, 0.5).pvalue)
    return b, c, float(chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))


def bootstrap_difference(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(candidate) - accuracy(reference): ``resamples``
    draws of N clips with replacement, each clip's pair kept together (the same draws and
    quantiles as ``scipy.stats.bootstrap(..., method="percentile")`` with this seed)."""
    a, b = _pair(reference, candidate)
    change = b.astype(np.float64) - a.astype(np.float64)  # (N,) in {-1, 0, 1}
    return bootstrap_mean(change, resamples=resamples, confidence=confidence, seed=seed)


def bootstrap_mean(
    change: np.ndarray, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-clip values ``change`` (N,), clips drawn
    with replacement: one clip's change in accuracy, or its change averaged over seeds (so the
    seeds' results for a clip stay together when clips are resampled)."""
    if resamples < 1:
        raise ConfigurationError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must be in (0, 1), got {confidence}")
    change = np.asarray(change, dtype=np.float64)
    if change.ndim != 1 or change.size == 0:
        raise ConfigurationError(f"need a non-empty 1-D array of per-clip values, got shape {change.shape}")
    draws = np.random.default_rng(seed).integers(0, len(change), (resamples, len(change)))  # (R, N)
    means = change[draws].mean(axis=1)  # (R,)
    tail = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def compare_correct(
    reference: Sequence[bool] | np.ndarray,
    candidate: Sequence[bool] | np.ndarray,
    *,
    names: tuple[str, str] = ("dense", "pruned"),
    test: str = "exact",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """McNemar's test and the bootstrap interval for two models' per-clip correctness (N,)."""
    a, b = _pair(reference, candidate)
    only_a, only_b, p = mcnemar(a, b, test)
    ci = bootstrap_difference(a, b, resamples=resamples, confidence=confidence, seed=seed)
    return PairedComparison(
        tuple(names),
        len(a),
        (float(a.mean()), float(b.mean())),
        only_a,
        only_b,
        test,
        p,
        ci,
        confidence,
        resamples,
        seed,
    )


def compare_evaluations(
    reference: Evaluation, candidate: Evaluation, *, names: tuple[str, str] = ("dense", "pruned"), **options
) -> PairedComparison:
    """``compare_correct`` on two evaluations of the same clips (same paths and labels, in order);
    ``options`` are its test, resamples, confidence and seed."""
    a, b = reference.predictions, candidate.predictions
    if len(a) != len(b) or not (
        a["path"].astype(str).equals(b["path"].astype(str)) and a["label"].equals(b["label"])
    ):
        raise ConfigurationError(
            f"A paired comparison needs both evaluations on the same clips in the same order; "
            f"{names[0]} has {len(a)} clips, {names[1]} {len(b)}"
            + ("" if len(a) != len(b) else " and they differ in paths or labels")
        )
    return compare_correct(a["correct"].to_numpy(), b["correct"].to_numpy(), names=names, **options)


@dataclass(frozen=True)
class MapComparison:
    """Candidate against reference on the same multi-label clips: both mAPs and the paired
    bootstrap interval ``ci`` of the difference (candidate minus reference), in mAP units."""

    names: tuple[str, str]  # (reference, candidate)
    clips: int
    mean_average_precision: tuple[float, float]  # (reference, candidate)
    ci: tuple[float, float]
    confidence: float
    resamples: int
    seed: int

    @property
    def difference(self) -> float:
        return self.mean_average_precision[1] - self.mean_average_precision[0]

    def describe(self) -> str:
        """One line: 'pruned mAP is D lower (P against O), 95 % CI L to H (paired bootstrap over N
        clips, R resamples)'; an interval covering 0 says the difference is not established."""
        reference, candidate = self.names
        a, b = self.mean_average_precision
        if round(self.difference, 3) == 0:
            change = f"{candidate} mAP is as high as {reference}'s ({b:.3f} against {a:.3f})"
        else:
            way = "lower" if self.difference < 0 else "higher"
            change = f"{candidate} mAP is {abs(self.difference):.3f} {way} ({b:.3f} against {a:.3f})"
        low, high = self.ci
        return (
            f"{change}, {100 * self.confidence:.0f} % CI {low:+.3f} to {high:+.3f} (paired bootstrap "
            f"over {self.clips:,} clips, {self.resamples:,} resamples)"
        )


def average_precisions(
    scores: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Average precision of every class under clip weights: (R, C) for ``weights`` (R, N) (how
    often each clip is drawn in each of R resamples), (C,) without them. scores, targets: (N, C).

    The same value as ``sklearn.metrics.average_precision_score(targets[:, c], scores[:, c],
    sample_weight=w)``: precision at each distinct score (tied clips enter together) times the
    recall it adds. NaN where a class has no (weighted) positive."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, np.float64)
    single = weights is None
    w = np.ones((1, len(scores))) if single else np.asarray(weights, np.float64)  # (R, N)
    out = np.full((len(w), scores.shape[1]), np.nan)
    for c in range(scores.shape[1]):
        order = np.argsort(-scores[:, c], kind="stable")
        s, y = scores[order, c], targets[order, c] > 0
        if not y.any():
            continue
        group_end = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last clip of each distinct score
        end = group_end[np.searchsorted(group_end, np.arange(len(s)))]  # (N,) each clip's group end
        pos = np.flatnonzero(y)  # sorted positions of the positives
        last = np.searchsorted(pos, end[pos], side="right") - 1  # last positive of each one's group
        ranked = w[:, order]  # (R, N)
        seen = np.cumsum(ranked, axis=1)[:, end[pos]]  # (R, P) weight scored at or above the group
        wp = ranked[:, pos]  # (R, P)
        tp = np.cumsum(wp, axis=1)  # (R, P)
        # Each positive adds its weight of recall at its group's precision (tied clips enter together).
        gained = wp * np.divide(tp[:, last], seen, out=np.zeros_like(seen), where=seen > 0)
        positives = tp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(positives > 0, gained.sum(1) / positives, np.nan)
    return out[0] if single else out


def bootstrap_map_difference(
    reference: np.ndarray,
    candidate: np.ndarray,
    targets: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mAP(candidate) - mAP(reference): ``resamples`` draws of N
    clips with replacement, the same draws for both models. reference, candidate: (N, C) scores;
    targets: (N, C) in {0, 1}. A class without a positive in a draw is left out of both means,
    and a draw without any positive clip (no mAP at all; only on tiny splits) is left out."""
    if resamples < 1:
        raise ConfigurationError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ConfigurationError(f"confidence must be in (0, 1), got {confidence}")
    a, b, y = (np.asarray(v, np.float64) for v in (reference, candidate, targets))
    if not (a.shape == b.shape == y.shape and a.ndim == 2 and len(a)):
        raise ConfigurationError(
            f"A paired mAP comparison needs scores and targets of one shape (N, C), N >= 1; got "
            f"{a.shape}, {b.shape} and targets {y.shape}"
        )
    n = len(y)
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))  # (R, N)
    changes = []
    for start in range(0, resamples, chunk):
        part = draws[start : start + chunk]
        counts = np.zeros((len(part), n))
        np.add.at(counts, (np.arange(len(part))[:, None], part), 1.0)  # (r, N) times drawn
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw without any positive: NaN
            changes.append(
                np.nanmean(average_precisions(b, y, counts), axis=1)
                - np.nanmean(average_precisions(a, y, counts), axis=1)
            )
    drawn = np.concatenate(changes)
    drawn = drawn[np.isfinite(drawn)]  # draws where no class has a positive clip define no mAP
    if not len(drawn):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.percentile(drawn, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


MAP_RESAMPLES = 1000  # the paired mAP bootstrap's draws, on splits up to MAP_WORK clips x classes
MAP_WORK = 200_000  # above it the draws shrink in proportion (never below 200), bounding the time


def map_resamples(clips: int, classes: int) -> int:
    """How many draws ``compare_map`` makes by default: 1,000, or on larger splits fewer, in
    proportion to clips x classes, but at least 200. Each draw costs time in proportion to
    clips x classes (bench/multilabel.py: about 5 s per 1,000 draws at 1,330 x 35 and several
    minutes at FSD50K's 10,231 x 200), so an Apply on a large tagging set stays within a minute
    or two; the interval's ends are then a little noisier, and ``describe`` says how many draws."""
    return max(200, min(MAP_RESAMPLES, MAP_RESAMPLES * MAP_WORK // max(clips * classes, 1)))


def compare_map(
    reference: MultilabelEvaluation,
    candidate: MultilabelEvaluation,
    *,
    names: tuple[str, str] = ("dense", "pruned"),
    resamples: int | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> MapComparison:
    """Both mAPs and the paired bootstrap interval of their difference, for two multi-label
    evaluations of the same clips (same paths and true tags, in order). ``resamples``: by
    default ``map_resamples`` of the split's size."""
    a, b = reference.predictions, candidate.predictions
    if len(a) != len(b) or not (
        a["path"].astype(str).equals(b["path"].astype(str)) and a["labels"].equals(b["labels"])
    ):
        raise ConfigurationError(
            f"A paired comparison needs both evaluations on the same clips in the same order; "
            f"{names[0]} has {len(a)} clips, {names[1]} {len(b)}"
            + ("" if len(a) != len(b) else " and they differ in paths or tags")
        )
    if resamples is None:
        resamples = map_resamples(*reference.targets.shape)
    ci = bootstrap_map_difference(
        reference.scores,
        candidate.scores,
        reference.targets,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )
    return MapComparison(
        tuple(names),
        len(a),
        (reference.mean_average_precision, candidate.mean_average_precision),
        ci,
        confidence,
        resamples,
        seed,
    )


def compare(
    reference: Evaluation | MultilabelEvaluation,
    candidate: Evaluation | MultilabelEvaluation,
    *,
    names: tuple[str, str] = ("dense", "pruned"),
) -> PairedComparison | MapComparison:
    """The paired comparison that fits the data: McNemar and an accuracy interval for
    single-label evaluations, the mAP interval for multi-label ones."""
    if reference.multilabel != candidate.multilabel:
        raise ConfigurationError("A paired comparison needs two single-label or two multi-label evaluations")
    if reference.multilabel:
        return compare_map(reference, candidate, names=names)
    return compare_evaluations(reference, candidate, names=names)


def _pair(reference, candidate) -> tuple[np.ndarray, np.ndarray]:
    """Both as (N,) bool arrays of one length N >= 1."""
    a, b = np.asarray(reference), np.asarray(candidate)
    if a.ndim != 1 or a.shape != b.shape or not len(a):
        raise ConfigurationError(
            f"Per-clip correctness must be two non-empty (N,) arrays of one length, "
            f"got shapes {a.shape} and {b.shape}"
        )
    for name, values in (("reference", a), ("candidate", b)):
        if not np.isin(values, (0, 1)).all():
            raise ConfigurationError(
                f"{name} correctness must be booleans (or 0/1), got values "
                f"{sorted(set(np.unique(values).tolist()) - {0, 1})[:5]}"
            )
    return a.astype(bool), b.astype(bool)


def pack_correct(correct: np.ndarray) -> str:
    """Per-clip right/wrong (N,) as hex, one bit per clip in order (``unpack_correct`` reverses it)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_correct(packed: str, clips: int) -> np.ndarray:
    """The (clips,) boolean array ``pack_correct`` wrote."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(packed), dtype=np.uint8))
    if len(bits) < clips or bits[clips:].any():
        raise ConfigurationError(f"The packed results hold {len(bits)} bits, not {clips} clips")
    return bits[:clips].astype(bool)
