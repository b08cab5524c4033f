"""make_plan and the hand-made plans: property tests over random score tables (no model needed),
brute-force references for the nearest achievable sparsity, the per-head greedy and the exact
per-head planner (unequal head counts), separate and joint budgets, and the error messages."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.errors import ScoresError
from prunekit.heads.pipeline import describe_plan
from prunekit.heads.plan import PruningPlan
from prunekit.heads.planner import (
    BUDGETS,
    PATTERNS,
    THRESHOLDS,
    make_plan,
    max_sparsity,
    plan_from_heads,
    plan_from_units,
)
from prunekit.heads.scores import COLUMNS, ScoreTable
from prunekit.heads.scoring import scorer_names
from prunekit.models import anatomy
from prunekit.models.anatomy import AttentionShape

HIDDEN = 4
SCORERS = scorer_names()
COMBOS = list(itertools.product(PATTERNS, THRESHOLDS))
GROUPS = ("qk", "vo")
EPS = 1e-6


# --- score tables --------------------------------------------------------------------------------
@dataclass
class Case:
    shapes: tuple[AttentionShape, ...]
    qk: list[np.ndarray]  # per layer (H, qk_dim)
    vo: list[np.ndarray]  # per layer (H, v_dim)
    head: list[np.ndarray]  # per layer (H,)
    scorer: str = "fisher"

    @property
    def dense(self) -> int:
        return sum(s.weights for s in self.shapes)

    def channels(self, group):
        return self.qk if group == "qk" else self.vo


def table(case: Case, seed: int = 0) -> ScoreTable:
    """The scorers' long table, shuffled, with the rows make_plan must ignore (per-matrix rows and
    head-level q/k/v/o/qk/vo rows) carrying random scores that would change any plan using them."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in case.shapes:
        for h in range(s.heads):
            rows.append((s.layer, "head", "pair", h, None, case.head[s.layer][h]))
            for group, matrices in (("qk", "qk"), ("vo", "vo")):
                scores = case.channels(group)[s.layer][h]
                for m in (*matrices, "pair"):
                    rows.append((s.layer, group, m, h, None, rng.random()))
                for c, value in enumerate(scores):
                    rows.append((s.layer, group, "pair", h, c, value))
                    rows.extend((s.layer, group, m, h, c, rng.random()) for m in matrices)
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "scorer"])
    frame.insert(5, "scorer", case.scorer)
    frame["channel"] = frame["channel"].astype("Int64")
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # row order must not matter
    return ScoreTable(frame, case.shapes, case.scorer)


@st.composite
def cases(draw, equal: bool = False, layers: int = 4, heads: int = 4, dim: int = 6) -> Case:
    """Random shapes (equal: every layer alike, so every unit of a pattern has one size) and scores
    with few distinct values (many ties) or continuous ones."""
    n = draw(st.integers(1, layers))
    shape = st.tuples(st.integers(1 if equal else 0, heads), st.integers(1, dim), st.integers(1, dim))
    dims = [draw(shape)] * n if equal else [draw(shape) for _ in range(n)]
    if not equal and dims[0][0] == 0:
        dims[0] = (1, *dims[0][1:])  # at least one head: an empty model has nothing to plan
    shapes = tuple(AttentionShape(i, h, q, v, HIDDEN) for i, (h, q, v) in enumerate(dims))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.sampled_from([2, 3, 10, 0]))  # 0: continuous scores

    def scores(size):
        return rng.random(size) if levels == 0 else rng.integers(0, levels, size).astype(float)

    qk = [scores((s.heads, s.qk_dim)) for s in shapes]
    vo = [scores((s.heads, s.v_dim)) for s in shapes]
    return Case(shapes, qk, vo, [scores(s.heads) for s in shapes], draw(st.sampled_from(SCORERS)))


# --- independent references ----------------------------------------------------------------------
def half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)


def head_size(s: AttentionShape) -> int:
    return s.hidden * (2 * s.qk_dim + 2 * s.v_dim)


def dim(s: AttentionShape, group: str) -> int:
    return s.qk_dim if group == "qk" else s.v_dim


def group_dense(case: Case, groups=GROUPS) -> int:
    """Weights of the channels of ``groups`` in the whole model."""
    return sum(s.heads * 2 * s.hidden * dim(s, g) for s in case.shapes for g in groups)


def budget_groups(pattern: str, threshold: str, budget: str) -> list[tuple[str, ...]]:
    """The groups that share one budget: both, unless separate budgets apply (global channels)."""
    separate = budget == "separate" and pattern != "entire-head" and threshold == "global"
    return [(g,) for g in GROUPS] if separate else [GROUPS]


def ceiling(case: Case, pattern: str, threshold: str, budget: str = "separate") -> float:
    """Most sparsity reachable: EH global removes everything, EH local keeps one head per layer,
    channel patterns keep one Q/K and one V/O channel per head, and with separate budgets each
    group must lose the target share of its own weights."""
    if pattern == "entire-head":
        kept = 0 if threshold == "global" else sum(head_size(s) for s in case.shapes if s.heads)
        return 1 - kept / case.dense
    return min(1 - sum(s.heads * 2 * s.hidden * len(groups) for s in case.shapes) / group_dense(case, groups)
               for groups in budget_groups(pattern, threshold, budget))


def unit_sizes(case: Case, pattern: str, groups=GROUPS) -> list[int]:
    """Sizes in weights of the global threshold's units (EH: heads) or moves (PH, SC: a channel
    index in every head of the layer) in ``groups``, counting only units that can go."""
    if pattern == "entire-head":
        return [head_size(s) for s in case.shapes for _ in range(s.heads)]
    return [s.heads * 2 * s.hidden for s in case.shapes for g in groups if s.heads and dim(s, g) > 1]


def achievable(case: Case, pattern: str, groups=GROUPS) -> set[int]:
    """Every removed-weight total of ``groups`` the pattern can reach with a global threshold
    (subset sums)."""
    reach = {0}
    for s in case.shapes:
        if pattern == "entire-head":
            options = [[k * head_size(s) for k in range(s.heads + 1)]]
        else:
            move = s.heads * 2 * s.hidden  # one channel index in every head
            options = [[k * move for k in range(dim(s, g))] for g in groups] if s.heads else []
        for sizes in options:
            reach = {a + b for a in reach for b in sizes}
    return reach


def removed_in(plan: PruningPlan, group: str) -> int:
    """Weights of ``group``'s channels the plan removes."""
    return sum(2 * s.hidden * (s.heads * dim(s, group) - (lp.qk_channels if group == "qk" else lp.vo_channels))
               for s, lp in zip(plan.base, plan.layers))


def combined(case: Case, layer: int, group: str) -> np.ndarray:
    values = case.channels(group)[layer]
    return values.mean(0) if case.scorer in ("magnitude", "random") else values.sum(0)


def removed_weights(plan: PruningPlan) -> int:
    return plan.dense_weights() - plan.kept_weights()


def check_structure(case: Case, plan: PruningPlan, pattern: str, threshold: str, target: float,
                    budget: str = "separate") -> None:
    """The pattern's constraints, the lowest-scored-first rule and the local counts."""
    plan.validate()
    assert plan.base == case.shapes
    metadata = (plan.scorer, plan.pattern, plan.threshold, plan.target_sparsity, plan.budget)
    recorded = budget if pattern != "entire-head" and threshold == "global" else None
    assert metadata == (case.scorer, pattern, threshold, target, recorded)
    for s, lp in zip(case.shapes, plan.layers):
        l, heads = s.layer, range(s.heads)
        if pattern == "entire-head":
            assert all(qk == tuple(range(s.qk_dim)) for qk in lp.qk)
            assert all(vo == tuple(range(s.v_dim)) for vo in lp.vo)
            gone = [h for h in heads if h not in lp.heads]
            if threshold == "local":
                assert len(lp.heads) >= min(1, s.heads)
                assert len(gone) == min(half_up(target * s.heads), max(s.heads - 1, 0))
                if gone and lp.heads:
                    assert max(case.head[l][gone]) <= min(case.head[l][list(lp.heads)])
            continue
        assert lp.heads == tuple(heads)  # channel patterns remove no head
        for group, kept_lists, d in (("qk", lp.qk, s.qk_dim), ("vo", lp.vo, s.v_dim)):
            counts = {len(c) for c in kept_lists}
            assert len(counts) <= 1  # every head of a layer keeps as many channels
            if threshold == "local" and s.heads:
                assert counts == {d - min(half_up(target * d), d - 1)}
            for h, kept in zip(heads, kept_lists):
                gone = sorted(set(range(d)) - set(kept))
                scores = case.channels(group)[l][h] if pattern == "per-head" else combined(case, l, group)
                if gone:
                    assert max(scores[gone]) <= min(scores[list(kept)])
            if pattern == "same-channel":
                assert len(set(kept_lists)) <= 1  # the same indices in every head


# --- properties ------------------------------------------------------------------------------------
fractions = st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 1.0])), min_size=6, max_size=6)


@settings(max_examples=150, deadline=None)
@given(cases(), fractions, st.sampled_from(BUDGETS))
def test_every_pattern_and_threshold_respects_its_constraints(case, fracs, budget):
    frame = table(case)
    for (pattern, threshold), u in zip(COMBOS, fracs):
        top = ceiling(case, pattern, threshold, budget)
        assert max_sparsity(frame, pattern, threshold, budget=budget) == pytest.approx(top)
        target = u * top
        plan = make_plan(frame, pattern, threshold, target, budget=budget)
        check_structure(case, plan, pattern, threshold, target, budget)
        if threshold == "global":
            # Per budget, units are taken lowest first while they end at most half the smallest
            # unit past that budget's target; one that does not fit was at most the largest away.
            for groups in budget_groups(pattern, threshold, budget):
                sizes = unit_sizes(case, pattern, groups)
                t = target * (case.dense if pattern == "entire-head" else group_dense(case, groups))
                got = removed_weights(plan) if pattern == "entire-head" else sum(removed_in(plan, g) for g in groups)
                if sizes:
                    assert got <= t + min(sizes) / 2 + EPS
                    assert (got > t + min(sizes) / 2 - max(sizes) - EPS
                            or got == max(achievable(case, pattern, groups)))
        if top < 0.99:
            message = rf"can remove at most {top:.2%} .*asked for {top + 0.01:.2%}"
            with pytest.raises(ValueError, match=message):
                make_plan(frame, pattern, threshold, top + 0.01, budget=budget)


@settings(max_examples=150, deadline=None)
@given(cases(equal=True), st.floats(0, 1), st.sampled_from(PATTERNS), st.sampled_from(BUDGETS))
def test_global_threshold_reaches_the_nearest_achievable_sparsity(case, u, pattern, budget):
    frame = table(case)
    target = u * ceiling(case, pattern, "global", budget)
    plan = make_plan(frame, pattern, "global", target, budget=budget)
    for groups in budget_groups(pattern, "global", budget):
        t = target * (case.dense if pattern == "entire-head" else group_dense(case, groups))
        got = removed_weights(plan) if pattern == "entire-head" else sum(removed_in(plan, g) for g in groups)
        (step,) = set(unit_sizes(case, pattern, groups)) or {0}
        assert abs(got - t) <= step / 2 + EPS  # within half a granularity step of its own target
        best = min(abs(a - t) for a in achievable(case, pattern, groups))  # brute force over every total
        assert abs(got - t) <= best + EPS
    assert plan.attention_sparsity() == pytest.approx(removed_weights(plan) / case.dense)
    if pattern == "entire-head":  # equal heads: every removed head scores <= every kept head
        removed = [case.head[s.layer][h] for s, lp in zip(case.shapes, plan.layers) for h in range(s.heads)
                   if h not in lp.heads]
        kept = [case.head[s.layer][h] for s, lp in zip(case.shapes, plan.layers) for h in lp.heads]
        if removed and kept:
            assert max(removed) <= min(kept)


def per_head_optimum(case: Case, plan: PruningPlan, budget: str, target: float, alive) -> None:
    """Check a global per-head plan against exhaustive search: per budget, the most removed
    weight that fits (target share + half the smallest move, less the forced heads' weights),
    and among the allocations removing exactly that, the least removed score."""
    forced = {s.layer: s.heads - len(a) for s, a in zip(case.shapes, alive)}
    kept_lists = {(s.layer, g): (lp.qk if g == "qk" else lp.vo) for s, lp in zip(case.shapes, plan.layers)
                  for g in GROUPS}
    for groups in budget_groups("per-head", "global", budget):
        moves = [(s.layer, g) for s in case.shapes for g in groups if alive[s.layer] and dim(s, g) > 1]
        size = {(l, g): len(alive[l]) * 2 * HIDDEN for l, g in moves}
        forced_weights = sum(n * 2 * HIDDEN * dim(case.shapes[l], g) for l, n in forced.items() for g in groups)
        room = target * group_dense(case, groups) - forced_weights + min(size.values(), default=0) / 2

        def cost(l, g, k):  # sum over the remaining heads of their k smallest scores
            return float(np.sort(case.channels(g)[l][alive[l]], axis=1)[:, :k].sum())

        options = [ks for ks in itertools.product(*(range(dim(case.shapes[l], g)) for l, g in moves))
                   if sum(k * size[m] for k, m in zip(ks, moves)) <= max(room, 0) + EPS]  # 0: none
        most = max(sum(k * size[m] for k, m in zip(ks, moves)) for ks in options)
        best = min(sum(cost(*m, k) for k, m in zip(ks, moves)) for ks in options
                   if sum(k * size[m] for k, m in zip(ks, moves)) == most)
        taken = {m: dim(case.shapes[m[0]], m[1]) - len(kept_lists[m][0]) for m in moves}
        assert sum(k * size[m] for m, k in taken.items()) == most
        removed = sum(float(case.channels(g)[l][h][sorted(set(range(dim(case.shapes[l], g))) - set(kept))].sum())
                      for l, g in moves for h, kept in zip(alive[l], kept_lists[l, g]))
        assert removed == pytest.approx(best, abs=1e-9)  # each head removed its own lowest channels


@settings(max_examples=100, deadline=None)
@given(cases(equal=True, layers=3, dim=4), st.floats(0, 1), st.sampled_from(BUDGETS))
def test_per_head_greedy_equals_exhaustive_search(case, u, budget):
    target = u * ceiling(case, "per-head", "global", budget)
    plan = make_plan(table(case), "per-head", "global", target, budget=budget)
    per_head_optimum(case, plan, budget, target, [list(range(s.heads)) for s in case.shapes])


@settings(max_examples=150, deadline=None)
@given(cases(layers=3, heads=3, dim=4), st.floats(0, 1), st.sampled_from(BUDGETS), st.data())
def test_per_head_with_unequal_head_counts_equals_exhaustive_search(case, u, budget, data):
    """Layers with different head counts, or heads forced out, make moves of different sizes:
    the greedy is no longer optimal and the exact planner must match the brute-force optimum."""
    heads = [(s.layer, h) for s in case.shapes for h in range(s.heads)]
    gone = data.draw(st.sets(st.sampled_from(heads), max_size=len(heads) - 1) if len(heads) > 1 else st.just(set()))
    alive = [[h for h in range(s.heads) if (s.layer, h) not in gone] for s in case.shapes]
    frame = table(case)
    top = max_sparsity(frame, "per-head", "global", force_remove=gone, budget=budget)
    target = u * top
    plan = make_plan(frame, "per-head", "global", target, force_remove=gone, budget=budget)
    per_head_optimum(case, plan, budget, target, alive)


def test_exact_planner_beats_the_greedy_where_heads_differ():
    """Head (0, 1) is forced out, so a Q/K move in layer 0 is 8 weights and in layer 1 (3 heads)
    24. Half the 96 Q/K weights is 48: the forced head's 24, then 24 + 4 of room. The greedy takes
    layer 0's moves cheapest per channel first (1, then 1.5) and has 12 weights left, too few for
    layer 1's move (1.2 per channel): 16 weights removed. The exact planner removes the most
    weight that fits, layer 1's move: 24 weights, 3 x 1.2 of score."""
    shapes = (AttentionShape(0, 2, 3, 2, HIDDEN), AttentionShape(1, 3, 2, 2, HIDDEN))
    qk = [np.array([[1.0, 1.5, 9.0], [0.0, 0.0, 0.0]]), np.array([[1.2, 9.0]] * 3)]
    case = Case(shapes, qk, [np.ones((2, 2)), np.ones((3, 2))], [np.ones(2), np.ones(3)])
    assert group_dense(case, ("qk",)) == 96
    plan = make_plan(table(case), "per-head", "global", 0.5, force_remove=[(0, 1)])
    assert plan.layers[0].qk == ((0, 1, 2),) and plan.layers[1].qk == ((1,),) * 3
    assert removed_in(plan, "qk") == 24 + 24  # the forced head's Q/K weights and layer 1's move
    assert plan.budget == "separate"


# --- hand-checked cases ------------------------------------------------------------------------------
def small_case(scorer="fisher") -> Case:
    """2 layers x 2 heads, qk_dim 3, v_dim 2, hidden 4: a head is 4 * (6 + 4) = 40 weights."""
    shapes = tuple(AttentionShape(i, 2, 3, 2, HIDDEN) for i in range(2))
    qk = [np.array([[5.0, 1.0, 3.0], [2.0, 4.0, 0.5]]), np.array([[9.0, 8.0, 7.0], [1.0, 1.0, 1.0]])]
    vo = [np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([[3.0, 0.0], [4.0, 0.1]])]
    head = [np.array([0.1, 0.9]), np.array([0.5, 0.2])]
    return Case(shapes, qk, vo, head, scorer)


def test_entire_head_global_by_hand():
    plan = make_plan(table(small_case()), "entire-head", "global", 0.5)
    assert [lp.heads for lp in plan.layers] == [(1,), (0,)]  # heads (0, 0) and (1, 1) score lowest
    assert plan.attention_sparsity() == 0.5
    # 0.6 of 4 heads = 2.4 heads: nearest is 2; 0.65 = 2.6 heads: 3, and layer 0 may empty.
    assert make_plan(table(small_case()), "entire-head", "global", 0.6).attention_sparsity() == 0.5
    more = make_plan(table(small_case()), "entire-head", "global", 0.65)
    assert [lp.heads for lp in more.layers] == [(1,), ()]


def test_per_head_and_same_channel_by_hand():
    frame = table(small_case())
    ph = make_plan(frame, "per-head", "local", 0.5)  # round(1.5) = 2 Q/K, round(1.0) = 1 V/O per head
    assert ph.layers[0].qk == ((0,), (1,)) and ph.layers[0].vo == ((1,), (0,))
    assert ph.layers[1].qk == ((0,), (2,))  # ties in head 1 of layer 1: the lower channels go first
    sc = make_plan(frame, "same-channel", "local", 0.5)  # sums over heads: qk [7, 5, 3.5], [10, 9, 8]
    assert sc.layers[0].qk == ((0,), (0,)) and sc.layers[1].qk == ((0,), (0,))
    # V/O sums: [3, 3] (a tie: the lower channel goes) and [7, 0.1].
    assert sc.layers[0].vo == ((1,), (1,)) and sc.layers[1].vo == ((0,), (0,))


def test_same_channel_mean_or_sum_over_heads_matters_across_layers():
    """Layer 0 has 1 head, layer 1 has 4: summing favours layer 1's channels, averaging does not."""
    shapes = (AttentionShape(0, 1, 2, 2, HIDDEN), AttentionShape(1, 4, 2, 2, HIDDEN))
    qk = [np.array([[3.0, 9.0]]), np.full((4, 2), 1.0) + np.array([0.0, 5.0])]
    vo = [np.array([[9.0, 9.0]]), np.full((4, 2), 9.0)]
    head = [np.ones(1), np.ones(4)]
    unit = 4 * 2 * HIDDEN  # one channel index in layer 1's four heads
    target = unit / sum(s.weights for s in shapes) - 1e-4
    fisher = make_plan(table(Case(shapes, qk, vo, head, "fisher")), "same-channel", "global", target,
                       budget="joint")
    magnitude = make_plan(table(Case(shapes, qk, vo, head, "magnitude")), "same-channel", "global", target,
                          budget="joint")
    assert fisher.layers[0].qk == ((1,),) and fisher.layers[1].qk == ((0, 1),) * 4  # 3 < sum 4
    assert magnitude.layers[1].qk == ((1,),) * 4 and magnitude.layers[0].qk == ((0, 1),)  # mean 1 < 3


def test_separate_and_joint_budgets_by_hand():
    """Per-head global at 30 % of small_case (a move is 16 weights; Q/K 96, V/O 64 of 160). Per
    channel, moves cost Q/K 0.75, 2.5 (layer 0), 4 (layer 1) and V/O 0.05 (layer 1), 1.0 (layer 0).
    Joint: 48 + 8 weights take the three cheapest moves, V/O 0.05, Q/K 0.75, V/O 1.0: 17 % of
    Q/K and 50 % of V/O. Separate: Q/K 28.8 + 8 takes two moves (33 %), V/O 19.2 + 8 one (25 %)."""
    frame = table(small_case())
    joint = make_plan(frame, "per-head", "global", 0.3, budget="joint")
    assert joint.layers[0].qk == ((0, 2), (0, 1)) and joint.layers[1].qk == ((0, 1, 2),) * 2
    assert joint.layers[0].vo == ((1,), (0,)) and joint.layers[1].vo == ((0,), (0,))
    separate = make_plan(frame, "per-head", "global", 0.3)  # the default
    assert separate.layers[0].qk == ((0,), (1,)) and separate.layers[1].qk == ((0, 1, 2),) * 2
    assert separate.layers[0].vo == ((0, 1),) * 2 and separate.layers[1].vo == ((0,), (0,))
    assert (removed_in(joint, "qk"), removed_in(joint, "vo")) == (16, 32)
    assert (removed_in(separate, "qk"), removed_in(separate, "vo")) == (32, 16)
    assert (joint.budget, separate.budget) == ("joint", "separate")
    assert removed_weights(joint) == removed_weights(separate) == 48  # 30 % of 160
    # Budgets do not apply to entire-head or to local thresholds: the same plan, budget None.
    for pattern, threshold in (("entire-head", "global"), ("per-head", "local"), ("same-channel", "local")):
        a, b = (make_plan(frame, pattern, threshold, 0.3, budget=x) for x in BUDGETS)
        assert a == b and a.budget is None


def test_global_entire_head_accepts_what_max_sparsity_reports():
    """max_sparsity says 1.0 for global entire-head, and make_plan accepts it: every head goes."""
    frame = table(small_case())
    assert max_sparsity(frame, "entire-head", "global") == 1.0
    everything = make_plan(frame, "entire-head", "global", 1.0)
    assert [lp.heads for lp in everything.layers] == [(), ()] and everything.attention_sparsity() == 1.0
    for pattern, threshold in COMBOS:
        top = max_sparsity(frame, pattern, threshold)
        assert make_plan(frame, pattern, threshold, top).attention_sparsity() == pytest.approx(top)


def test_ties_go_to_the_lowest_layer_head_and_channel():
    flat = small_case()
    flat = Case(flat.shapes, [np.ones_like(a) for a in flat.qk], [np.ones_like(a) for a in flat.vo],
                [np.ones_like(a) for a in flat.head])
    frame = table(flat)
    assert [lp.heads for lp in make_plan(frame, "entire-head", "global", 0.25).layers] == [(1,), (0, 1)]
    assert [lp.heads for lp in make_plan(frame, "entire-head", "local", 0.5).layers] == [(1,), (1,)]
    # One move / unit is a channel index in both heads of a layer: 2 * 8 of 160 weights.
    for pattern in ("per-head", "same-channel"):
        plan = make_plan(frame, pattern, "global", 0.1)
        assert plan.layers[0].qk == ((1, 2),) * 2 and plan.layers[0].vo == ((0, 1),) * 2
        assert plan.layers[1] == make_plan(frame, pattern, "global", 0.0).layers[1]


def test_units_that_do_not_fit_are_skipped_not_the_end():
    """With unequal sizes the lowest-scored unit may not fit the budget; smaller ones still can."""
    # Entire-head: layer 0's one head (64 weights, lowest score) is too big for 0.3 * 96 weights.
    shapes = (AttentionShape(0, 1, 4, 4, HIDDEN), AttentionShape(1, 2, 1, 1, HIDDEN))
    case = Case(shapes, [np.ones((1, 4)), np.ones((2, 1))], [np.ones((1, 4)), np.ones((2, 1))],
                [np.array([0.1]), np.array([0.5, 0.6])])
    plan = make_plan(table(case), "entire-head", "global", 0.3)
    assert [lp.heads for lp in plan.layers] == [(0,), ()] and removed_weights(plan) == 32
    # Per-head: a move in layer 1 (3 heads: 24 weights) is cheaper per channel (mean 1 < 2) but
    # does not fit 16 weights; layer 0's moves (8 weights) do, until its head keeps one channel.
    shapes = (AttentionShape(0, 1, 3, 1, HIDDEN), AttentionShape(1, 3, 3, 1, HIDDEN))
    case = Case(shapes, [np.full((1, 3), 2.0), np.ones((3, 3))], [np.ones((1, 1)), np.ones((3, 1))],
                [np.ones(1), np.ones(3)])
    small = make_plan(table(case), "per-head", "global", 16 / 128, budget="joint")
    assert small.layers[0].qk == ((2,),) and small.layers[1].qk == ((0, 1, 2),) * 3
    # With room for 24 weights the cheaper-per-channel layer 1 move wins (by the sum, 3 > 2, it would not).
    large = make_plan(table(case), "per-head", "global", 24 / 128, budget="joint")
    assert large.layers[0].qk == ((0, 1, 2),) and large.layers[1].qk == ((1, 2),) * 3


def test_forced_heads():
    frame = table(small_case())
    # Per-head: head (1, 0) goes whole (40 weights of 160); the other 3 heads share the rest.
    plan = make_plan(frame, "per-head", "global", 0.5, force_remove=[(1, 0)])
    assert plan.layers[1].heads == (1,) and plan.layers[0].heads == (0, 1)
    assert plan.attention_sparsity() == pytest.approx(0.5, abs=8 / 160)  # a channel is 8 weights
    assert plan.force_remove == ((1, 0),) and plan.force_keep == ()
    # Entire-head: the lowest head (0, 0) is kept, so (1, 1) and then (1, 0) go instead.
    kept = make_plan(frame, "entire-head", "global", 0.5, force_keep=[(0, 0)])
    assert [lp.heads for lp in kept.layers] == [(0, 1), ()]
    # The pins are part of the plan: its JSON remakes it, and its name tells it from an unpinned one.
    back = PruningPlan.from_json(kept.to_json())
    assert back == kept and back.force_keep == ((0, 0),)
    plain = make_plan(frame, "entire-head", "global", 0.5)
    assert describe_plan(kept) == "fisher entire-head global 50% +L0H0" != describe_plan(plain)
    assert describe_plan(plan).endswith("-L1H0")
    assert make_plan(frame, "entire-head", "local", 0.5, force_keep=[(0, 0)]).layers[0].heads == (0,)
    # Forced removals beyond the target are still made; the plan reports what it reaches.
    over = make_plan(frame, "entire-head", "global", 0.1, force_remove=[(0, 1), (1, 1)])
    assert over.attention_sparsity() == 0.5 and over.target_sparsity == 0.1
    message = r"at most 75.00% .*force_keep keeps heads \[\(0, 0\)\]\); asked for 80.00%"
    with pytest.raises(ValueError, match=message):
        make_plan(frame, "entire-head", "global", 0.8, force_keep=[(0, 0)])
    with pytest.raises(ValueError, match=r"Heads \[\(0, 0\)\] are in both force_keep and force_remove"):
        make_plan(frame, "entire-head", "global", 0.5, force_keep=[(0, 0)], force_remove=[(0, 0)])
    with pytest.raises(ValueError, match=r"removes all 2 heads of layer 1, but a local threshold keeps"):
        make_plan(frame, "entire-head", "local", 0.5, force_remove=[(1, 0), (1, 1)])


def test_force_remove_under_channel_patterns():
    """A forced head counts towards its layer's share (local) or the budget (global), and the
    channels are chosen from the heads that remain."""
    frame = table(small_case())
    # Local 0.5: layer 0 reaches its 40 of 80 weights with the forced head alone.
    local = make_plan(frame, "per-head", "local", 0.5, force_remove=[(0, 0)])
    assert local.layers[0].heads == (1,) and local.layers[0].qk == ((0, 1, 2),)
    # Layer 1 as without forcing: 2 Q/K and 1 V/O channel per head (24 weights), 40 + 2 * 24 in all.
    assert local.layers[1].qk == ((0,), (2,)) and removed_weights(local) == 88
    # Global 0.45 = 72 weights, one joint budget: the forced head (40), then 16 + 8 + 8 of channel
    # units, ranked by head 1 of layer 0 alone: its V/O scores [2, 1] drop channel 1 (both heads'
    # sums are a tie).
    plan = make_plan(frame, "same-channel", "global", 0.45, force_remove=[(0, 0)], budget="joint")
    assert plan.layers[0].heads == (1,) and plan.layers[0].qk == ((0, 1),) and plan.layers[0].vo == ((0,),)
    assert plan.layers[1].vo == ((0,), (0,)) and plan.attention_sparsity() == pytest.approx(0.45)


def test_zero_head_layer_and_base_keyword():
    case = small_case()
    shapes = (case.shapes[0], AttentionShape(1, 0, 3, 2, HIDDEN), AttentionShape(2, 2, 3, 2, HIDDEN))
    three = Case(shapes, [case.qk[0], np.zeros((0, 3)), case.qk[1]],
                 [case.vo[0], np.zeros((0, 2)), case.vo[1]], [case.head[0], np.zeros(0), case.head[1]])
    frame = table(three)
    plan = make_plan(frame, "entire-head", "local", 0.5)
    assert [lp.heads for lp in plan.layers] == [(1,), (), (0,)]
    # The keyword wins over the table's own shape: a table with a wrong base still plans right.
    wrong = ScoreTable(frame.frame, frame.base[:2], frame.scorer)
    assert make_plan(wrong, "entire-head", "local", 0.5, base=shapes) == plan
    extra = r"head scores not in the model for \(layer, head\) \(2, 0\), \(2, 1\)"
    with pytest.raises(ScoresError, match=extra):
        make_plan(wrong, "entire-head", "local", 0.5)


def test_made_plan_round_trips_through_json():
    plan = make_plan(table(small_case()), "per-head", "global", 0.3)
    back = PruningPlan.from_json(plan.to_json())
    assert back == plan and back.target_sparsity == 0.3 and back.pattern == "per-head"
    pd.testing.assert_frame_equal(back.summary(), plan.summary())
    summary = plan.summary()
    assert summary["qk_channels_left"].tolist() == [lp.qk_channels for lp in plan.layers]
    assert summary["weights_left"].sum() == plan.kept_weights()


# --- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pattern": "heads"}, r"Unknown pattern 'heads'; choose one of same-channel, per-head, entire-head"),
        ({"threshold": "layer"}, r"Unknown threshold 'layer'; choose one of global, local"),
        ({"budget": "half"}, r"Unknown budget 'half'; choose one of separate, joint"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\].*got -0.1"),
        ({"sparsity": 1.1}, r"sparsity must be in \[0, 1\].*got 1.1"),
        ({"sparsity": 1.0}, r"per-head / global can remove at most 50.00% .*asked for 100.00%"),
        ({"sparsity": 0.9}, r"at most 50.00% .*separate budgets .*Q/K at most 66.67%, V/O at most 50.00%.*for 90.00%"),
        ({"sparsity": 0.9, "budget": "joint"},
         r"per-head / global can remove at most 60.00% .*one Q/K and one V/O channel\); asked for 90.00%"),
        ({"force_keep": [(0, 1)]}, r"force_keep \[\(0, 1\)\] needs pattern 'entire-head'.*kept whole"),
        ({"force_remove": [(1, 2)]}, r"force_remove: layer 1 head 2 does not exist"),
        ({"force_remove": [(5, 0)]}, r"force_remove: layer 5 head 0 does not exist"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"pattern": "per-head", "threshold": "global", "sparsity": 0.3} | kwargs
    frame = table(small_case())
    with pytest.raises(ValueError, match=message):
        make_plan(frame, args.pop("pattern"), args.pop("threshold"), args.pop("sparsity"), **args)


def test_bad_tables_are_named():
    table_ = table(small_case())
    frame = table_.frame
    two = ScoreTable(pd.concat([frame, frame.assign(scorer="magnitude")]), table_.base, "fisher")
    with pytest.raises(ScoresError, match=r"mixes scorers \['fisher', 'magnitude'\]"):
        make_plan(two, "per-head", "global", 0.3)
    with pytest.raises(ScoresError, match="does not say which model shape.*base="):
        make_plan(frame, "per-head", "global", 0.3)  # a bare frame, no shape
    # frame.head would be DataFrame.head(); NA channels compare as NA, hence fillna.
    pair = (frame["layer"] == 1) & (frame["head"] == 0) & (frame["channel"] == 2).fillna(False)
    dropped = ScoreTable(frame[~(pair & (frame["matrix"] == "pair"))], table_.base, "fisher")
    missing = r"Q/K channel scores missing for \(layer, head, channel\) \(1, 0, 2\)"
    with pytest.raises(ScoresError, match=missing):
        make_plan(dropped, "per-head", "global", 0.3)
    # A bare frame with its shape given plans exactly like the table.
    assert make_plan(frame, "per-head", "global", 0.3, base=table_.base) == make_plan(table_, "per-head", "global", 0.3)


# --- hand-made plans ------------------------------------------------------------------------------------
def test_plan_from_heads(tiny_model):
    shapes = tuple(anatomy.attention_shapes(tiny_model))  # 2 layers x 4 heads x 8, hidden 32
    by_map = plan_from_heads(tiny_model, {1: [3, 0]}, pattern="manual")
    assert [lp.heads for lp in by_map.layers] == [(0, 1, 2, 3), (0, 3)]
    assert by_map.layers[1].qk == (tuple(range(8)),) * 2 and by_map.pattern == "manual"
    assert by_map.attention_sparsity() == 0.25
    assert plan_from_heads(shapes, [[0, 1, 2, 3], [0, 3]], pattern="manual") == by_map
    with pytest.raises(ValueError, match=r"kept heads \[4\] out of range"):
        plan_from_heads(shapes, {0: [4]})
    with pytest.raises(ValueError, match="lists 1 layers; the model has 2"):
        plan_from_heads(shapes, [[0]])


def test_plan_from_units():
    frame = table(small_case())
    qk = {(0, 0): (1, 0), (0, 1): [2, 0]}  # any order; the plan sorts
    plan = plan_from_units(frame, qk=qk, vo={(1, 0): [1]}, removed_heads=[(1, 1)])
    assert plan.layers[0].qk == ((0, 1), (0, 2)) and plan.layers[0].vo == ((0, 1), (0, 1))
    assert plan.layers[1].heads == (0,) and plan.layers[1].vo == ((1,),)
    assert removed_weights(plan) == 2 * 8 + 8 + 40  # two Q/K channels, one V/O channel, one head
    with pytest.raises(ValueError, match=r"head 1 is kept with 0 Q/K"):
        plan_from_units(frame, qk={(0, 1): []}, vo={})
    with pytest.raises(ValueError, match=r"qk: layer 0 head 7 does not exist"):
        plan_from_units(frame, qk={(0, 7): [0]}, vo={})
