"""Make a PruningPlan: from a score table (``make_plan``) or by hand (``plan_from_heads``,
``plan_from_units``).

``make_plan`` implements the patterns and thresholds of docs/methods.md section 1:

* entire-head (EH) removes whole heads, ranked by their head score;
* per-head (PH) removes the same *number* of Q/K (and of V/O) channels from every head of a
  layer, each head its own lowest-scored ones;
* same-channel (SC) removes the same channel indices from every head of a layer, ranked by the
  channel's score combined over heads.

A local threshold removes the same fraction from every layer (of each layer's Q/K and of its
V/O channels). A global one spends a budget across all layers; for the channel patterns it is,
by default, one budget for the Q/K channels and another for the V/O channels, each group losing
the target share of its own weights (``budget="separate"``, the authors' code); ``budget="joint"``
puts both groups into one budget, a different method kept as a named option. The target is the
*attention sparsity* (``PruningPlan.attention_sparsity``): a Q/K or V/O channel is
``2 * hidden`` weights, a head ``hidden * (2 * qk_dim + 2 * v_dim)``. Ties in scores are broken
by layer, then head (or group, Q/K before V/O), then channel.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
from torch import nn

from prunekit.errors import ConfigurationError, PlanError, ScoresError
from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.heads.scorers import SCORERS
from prunekit.heads.scores import COLUMNS, ScoreTable
from prunekit.models import anatomy
from prunekit.models.anatomy import AttentionShape

__all__ = [
    "BUDGETS", "GROUPS", "PATTERNS", "THRESHOLDS", "budget_applies", "make_plan", "max_sparsity",
    "plan_from_heads", "plan_from_units",
]

PATTERNS = ("same-channel", "per-head", "entire-head")
THRESHOLDS = ("global", "local")
BUDGETS = ("separate", "joint")  # how a global threshold spends its budget on Q/K and V/O channels
GROUPS = ("qk", "vo")  # also the tie order between a layer's Q/K and V/O units
_EPS = 1e-9  # float slack when comparing sparsities and rounding halves

Head = tuple[int, int]  # (layer, head)


# --- reading a score table -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Scores:
    """The pair scores of one scorer as arrays, checked against the model shape."""

    shapes: tuple[AttentionShape, ...]
    scorer: str | None
    qk: tuple[np.ndarray, ...]  # per layer: (heads, qk_dim) S_QK
    vo: tuple[np.ndarray, ...]  # per layer: (heads, v_dim) S_VO
    head: tuple[np.ndarray, ...]  # per layer: (heads,) head score

    def channels(self, group: str) -> tuple[np.ndarray, ...]:
        return self.qk if group == "qk" else self.vo


def _over_heads(scorer: str | None) -> str:
    """How same-channel combines a channel's scores over heads: the registered scorer's rule
    ("mean" or "sum"); "sum" for a table from an unknown scorer."""
    spec = SCORERS.get(scorer) if scorer else None
    return spec.over_heads if spec else "sum"


def _dim(shape: AttentionShape, group: str) -> int:
    return shape.qk_dim if group == "qk" else shape.v_dim


def _head_weights(shape: AttentionShape) -> int:
    return shape.hidden * (2 * shape.qk_dim + 2 * shape.v_dim)


def _shapes(source) -> tuple[AttentionShape, ...]:
    """Attention shapes from a model, a ``ScoreTable`` or a sequence of shapes (or their dicts)."""
    if isinstance(source, nn.Module):
        return tuple(anatomy.attention_shapes(source))
    if isinstance(source, ScoreTable):
        return source.base
    if isinstance(source, pd.DataFrame):
        raise ScoresError(
            "A bare score frame does not say which model shape it scores: pass the ScoreTable that "
            "prunekit.heads.scoring.score returns, or base=anatomy.attention_shapes(model)"
        )
    shapes = []
    for i, s in enumerate(source):
        if isinstance(s, Mapping):
            s = AttentionShape(*(int(s[k]) for k in ("layer", "heads", "qk_dim", "v_dim", "hidden")))
        if not isinstance(s, AttentionShape):
            raise ScoresError(f"base entry {i} is a {type(s).__name__}, not an AttentionShape or a dict")
        if s.layer != i:
            raise ScoresError(f"base must list layers 0, 1, ... in order; entry {i} is layer {s.layer}")
        shapes.append(s)
    return tuple(shapes)


def _read_scores(table: ScoreTable | pd.DataFrame, base) -> _Scores:
    """The pair scores of ``table`` (a ScoreTable, or a long frame with ``base`` given)."""
    if isinstance(table, ScoreTable):
        scores = table.frame
    elif isinstance(table, pd.DataFrame):
        scores = table
    else:
        raise ScoresError(f"scores must be a ScoreTable (what scoring.score returns), got {type(table).__name__}")
    lacking = [c for c in COLUMNS if c not in scores.columns]
    if lacking:
        raise ScoresError(f"The score table lacks columns {lacking}; a scorer's has {list(COLUMNS)}")
    shapes = _shapes(table if base is None else base)  # the keyword wins over the table's own
    scorers = sorted({str(s) for s in scores["scorer"].unique()})
    if len(scorers) > 1:
        raise ScoresError(
            f"The score table mixes scorers {scorers}: make a plan from one, "
            f"e.g. scores[scores.scorer == {scorers[0]!r}]"
        )
    # Only the pair rows are units; the per-matrix rows and head-level qk/vo rows are for display.
    layer, head, score = (scores[c].to_numpy() for c in ("layer", "head", "score"))
    group, pair = scores["group"].to_numpy(), scores["matrix"].to_numpy() == "pair"
    has_channel = scores["channel"].notna().to_numpy(dtype=bool)
    channel = scores["channel"].fillna(-1).to_numpy(dtype=np.int64)
    problems: list[str] = []
    grids = {}
    for name in (*GROUPS, "head"):
        rows = pair & (group == name) & (~has_channel if name == "head" else has_channel)
        columns = [layer[rows], head[rows]] + ([] if name == "head" else [channel[rows]])
        keys = zip(*(c.astype(np.int64).tolist() for c in columns))
        grids[name] = _grid(keys, score[rows].astype(float), shapes, name, problems)
    if problems:
        raise ScoresError(
            f"The score table does not match the model shape ({len(shapes)} layers, "
            f"heads {[s.heads for s in shapes]}, qk_dim {[s.qk_dim for s in shapes]}, "
            f"v_dim {[s.v_dim for s in shapes]}): " + "; ".join(problems)
        )
    return _Scores(shapes, scorers[0] if scorers else None, grids["qk"], grids["vo"], grids["head"])


def _grid(keys: Iterable[tuple[int, ...]], values: np.ndarray, shapes, group: str,
          problems: list[str]) -> tuple[np.ndarray, ...]:
    """Per-layer score arrays of ``group`` ("qk", "vo": (heads, dim); "head": (heads,)) from its
    rows' keys ((layer, head, channel) or (layer, head)) and scores, appending to ``problems``
    what is missing, extra, repeated or NaN."""
    columns = ["layer", "head"] if group == "head" else ["layer", "head", "channel"]
    found: dict[tuple[int, ...], float] = {}
    repeated = set()
    for key, value in zip(keys, values):
        if key in found:
            repeated.add(key)
        found[key] = value
    expected = {  # layer -> its keys in (head, channel) order
        s.layer: [(s.layer, h) for h in range(s.heads)] if group == "head"
        else [(s.layer, h, c) for h in range(s.heads) for c in range(_dim(s, group))]
        for s in shapes
    }
    wanted = [k for ks in expected.values() for k in ks]
    what = {"qk": "Q/K channel", "vo": "V/O channel", "head": "head"}[group]
    for problem, bad in (
        ("missing", [k for k in wanted if k not in found]),
        ("not in the model", sorted(set(found) - set(wanted))),
        ("repeated", sorted(repeated)),
        ("NaN", [k for k in wanted if k in found and math.isnan(found[k])]),
    ):
        if bad:
            more = f" ... ({len(bad)} in all)" if len(bad) > 5 else ""
            problems.append(f"{what} scores {problem} for ({', '.join(columns)}) "
                            f"{', '.join(map(str, bad[:5]))}{more}")
    if problems:
        return ()
    return tuple(
        np.array([found[k] for k in expected[s.layer]], dtype=float).reshape(
            (s.heads,) if group == "head" else (s.heads, _dim(s, group)))
        for s in shapes
    )


# --- checks on the arguments ------------------------------------------------------------------
def _check_choice(name: str, value, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigurationError(f"Unknown {name} {value!r}; choose one of {', '.join(valid)}")


def _check_sparsity(sparsity) -> float:
    """A fraction in [0, 1]; whether the pattern can reach it is the ceiling's question, so that
    ``make_plan`` accepts exactly what ``max_sparsity`` reports (1.0 for global entire-head)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigurationError(f"sparsity must be a number in [0, 1], got {sparsity!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigurationError(f"sparsity must be in [0, 1] (a fraction of attention weights), got {sparsity!r}")
    return value


def _heads(name: str, pairs: Iterable, shapes: Sequence[AttentionShape]) -> frozenset[Head]:
    """``pairs`` as a set of (layer, head), each checked to exist in ``shapes``."""
    out = set()
    for pair in pairs:
        try:
            layer, head = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise PlanError(f"{name} takes (layer, head) pairs, got {pair!r}") from None
        if not (0 <= layer < len(shapes) and 0 <= head < shapes[layer].heads):
            raise PlanError(
                f"{name}: layer {layer} head {head} does not exist "
                f"(the model has layers 0..{len(shapes) - 1} with heads {[s.heads for s in shapes]})"
            )
        out.add((layer, head))
    return frozenset(out)


def budget_applies(pattern: str, threshold: str) -> bool:
    """Whether ``budget`` changes a plan: only a global threshold over channels does (see make_plan)."""
    return pattern != "entire-head" and threshold == "global"


def max_sparsity(base, pattern: str, threshold: str, *, force_keep: Iterable[Head] = (),
                 force_remove: Iterable[Head] = (), budget: str = "separate") -> float:
    """The largest attention sparsity ``make_plan`` accepts for this model (a model, a score table
    or a sequence of AttentionShape), pattern, threshold and budget (e.g. a slider's maximum).
    1.0 (global entire-head with nothing kept) is accepted too: it removes every head."""
    _check_choice("pattern", pattern, PATTERNS)
    _check_choice("threshold", threshold, THRESHOLDS)
    _check_choice("budget", budget, BUDGETS)
    shapes = _shapes(base)
    keep, gone = _heads("force_keep", force_keep, shapes), _heads("force_remove", force_remove, shapes)
    return _ceiling(shapes, pattern, threshold, keep, gone, budget)[0]


def _group_weights(shape: AttentionShape, groups: Sequence[str], heads: int) -> int:
    """Weights of ``groups``' channels in ``heads`` heads of a layer (2 * hidden per channel)."""
    return heads * 2 * shape.hidden * sum(_dim(shape, g) for g in groups)


def _budget_groups(budget: str) -> tuple[tuple[str, ...], ...]:
    """The channel groups that share one global budget: both, or each its own."""
    return (GROUPS,) if budget == "joint" else tuple((g,) for g in GROUPS)


def _ceiling(shapes, pattern: str, threshold: str, keep: frozenset[Head], gone: frozenset[Head],
             budget: str) -> tuple[float, str]:
    """(maximum reachable sparsity, why it is not higher)."""
    dense = sum(s.weights for s in shapes)
    if pattern == "entire-head" and threshold == "global":
        left = sum(_head_weights(shapes[layer]) for layer, _ in keep)
        why = f"force_keep keeps heads {sorted(keep)}" if keep else "every head can go"
    elif pattern == "entire-head":
        kept_heads = [max(1, sum(layer == s.layer for layer, _ in keep)) if s.heads else 0 for s in shapes]
        left = sum(n * _head_weights(s) for n, s in zip(kept_heads, shapes))
        why = "a local threshold keeps at least one head in every layer" + (
            f", and force_keep keeps heads {sorted(keep)}" if keep else ""
        )
    else:
        # One Q/K channel (2 * hidden weights) and one V/O channel (2 * hidden) per remaining head.
        alive = [s.heads - sum(layer == s.layer for layer, _ in gone) for s in shapes]
        left = sum(s.hidden * 4 * n for s, n in zip(shapes, alive))
        why = "every head keeps at least one Q/K and one V/O channel"
        if budget_applies(pattern, threshold) and budget == "separate" and dense:
            # Each group must lose the target share of its own weights: the tighter group rules.
            tops = {}
            for g in GROUPS:
                total = sum(_group_weights(s, (g,), s.heads) for s in shapes)
                tops[g] = 1.0 - sum(s.hidden * 2 * n for s, n in zip(shapes, alive)) / total
            group = min(GROUPS, key=tops.get)
            if tops[group] < 1.0 - left / dense - _EPS:
                return tops[group], (f"{why}, and with separate budgets each group loses the target share "
                                     f"of its own weights (Q/K at most {tops['qk']:.2%}, V/O at most "
                                     f"{tops['vo']:.2%})")
    return (1.0 - left / dense if dense else 0.0), why


# --- make_plan --------------------------------------------------------------------------------
def make_plan(scores: ScoreTable, pattern: str, threshold: str, sparsity: float, *,
              base: Sequence[AttentionShape] | None = None, force_keep: Iterable[Head] = (),
              force_remove: Iterable[Head] = (), budget: str = "separate") -> PruningPlan:
    """The plan that removes the lowest-scored units of ``pattern`` to reach ``sparsity``.

    scores: one scorer's ``ScoreTable`` (``scoring.score``), which carries the model shape; a bare
    long frame needs ``base``. pattern: "same-channel", "per-head" or "entire-head";
    threshold: "global" or "local"; sparsity: target fraction of attention weights removed, in
    [0, 1] (1 only where ``max_sparsity`` allows it). The plan reaches the closest sparsity the
    pattern's granularity allows (see ``plan.attention_sparsity()``). ``force_remove`` heads go
    first and count towards the target; ``force_keep`` heads are never removed (entire-head only).

    budget ("separate" or "joint") says how a global threshold over channels (per-head,
    same-channel) spends its budget. "separate" (the default, the authors' code): the Q/K
    channels and the V/O channels each lose ``sparsity`` of their own weights, each group ranked
    on its own. "joint": one budget over both groups, so a scorer whose Q/K scores run lower than
    its V/O scores removes mostly Q/K channels (global Fisher on the demo: 78 % of Q/K, 22 % of
    V/O at 50 %). ``budget`` does not apply, and the plan records ``budget=None``, for

    * entire-head: a head carries its Q/K and its V/O channels together, so there is only one
      ranking (head scores, all layers together) and one budget; with ``qk_dim == v_dim`` in
      every layer removing heads removes the same share of Q/K and V/O weights anyway;
    * a local threshold: it already removes the target share of each layer's Q/K channels and,
      separately, of its V/O channels.
    """
    _check_choice("pattern", pattern, PATTERNS)
    _check_choice("threshold", threshold, THRESHOLDS)
    _check_choice("budget", budget, BUDGETS)
    target = _check_sparsity(sparsity)
    table = _read_scores(scores, base)
    shapes = table.shapes
    keep, gone = _heads("force_keep", force_keep, shapes), _heads("force_remove", force_remove, shapes)
    if keep and pattern != "entire-head":
        raise PlanError(
            f"force_keep {sorted(keep)} needs pattern 'entire-head': under {pattern} every head of a "
            "layer loses the same number of channels, so a head cannot be kept whole"
        )
    if keep & gone:
        raise PlanError(f"Heads {sorted(keep & gone)} are in both force_keep and force_remove")
    if pattern == "entire-head" and threshold == "local":
        for s in shapes:
            if s.heads and all((s.layer, h) in gone for h in range(s.heads)):
                raise PlanError(
                    f"force_remove removes all {s.heads} heads of layer {s.layer}, but a local "
                    "threshold keeps at least one head per layer (use threshold 'global')"
                )
    ceiling, why = _ceiling(shapes, pattern, threshold, keep, gone, budget)
    if target > ceiling + _EPS:
        raise PlanError(
            f"{pattern} / {threshold} can remove at most {ceiling:.2%} of the attention weights of "
            f"this model ({why}); asked for {target:.2%}"
        )
    alive = [[h for h in range(s.heads) if (s.layer, h) not in gone] for s in shapes]
    if pattern == "entire-head":
        layers = _entire_head(table, threshold, target, alive, keep)
    elif pattern == "per-head":
        layers = _per_head(table, threshold, target, alive, budget)
    else:
        layers = _same_channel(table, threshold, target, alive, budget)
    plan = PruningPlan(tuple(layers), shapes, scorer=table.scorer, pattern=pattern, threshold=threshold,
                       target_sparsity=target, budget=budget if budget_applies(pattern, threshold) else None,
                       force_keep=tuple(keep), force_remove=tuple(gone))
    return plan.validate()


def _round(x: float) -> int:
    """Nearest integer, halves up: the global budget's rule (a unit is taken when it ends at most
    half a unit past the target), so local and global agree on ties."""
    return math.floor(x + 0.5 + _EPS)


def _local_fraction(shape: AttentionShape, alive: int, target: float) -> float:
    """Fraction of a layer's remaining heads' weights to remove so that the layer, its
    force-removed heads included, loses ``target`` of its weights (heads of a layer are equal)."""
    if alive == shape.heads:
        return target  # no forced removals: the plain local rule
    return max(0.0, target * shape.heads - (shape.heads - alive)) / alive if alive else 0.0


def _global_budget(shapes, target: float, alive, sizes: Iterable[int], groups: Sequence[str] = GROUPS) -> float:
    """Weights the ranked units of ``groups`` may remove: the target share of those groups'
    weights less what the force-removed heads take of them, plus half the smallest unit, so that
    with equal units the count taken is the nearest to the target."""
    dense = sum(_group_weights(s, groups, s.heads) for s in shapes)
    forced = sum(_group_weights(s, groups, s.heads - len(a)) for s, a in zip(shapes, alive))
    return target * dense - forced + min(sizes, default=0) / 2 + _EPS * dense


def _layer_plan(heads: Sequence[int], qk: Iterable[Iterable[int]], vo: Iterable[Iterable[int]]) -> LayerPlan:
    """Kept ``heads`` and, per kept head, its kept channels (sorted, as validate requires)."""
    return LayerPlan(tuple(heads), tuple(tuple(sorted(c)) for c in qk), tuple(tuple(sorted(c)) for c in vo))


def _whole_heads(shape: AttentionShape, heads: Sequence[int]) -> LayerPlan:
    """Keep ``heads`` with all their channels."""
    return _layer_plan(heads, [range(shape.qk_dim)] * len(heads), [range(shape.v_dim)] * len(heads))


def _entire_head(table: _Scores, threshold: str, target: float, alive, keep) -> list[LayerPlan]:
    shapes = table.shapes
    removed: set[Head] = set()
    if threshold == "global":
        units = [(l, h) for l, hs in enumerate(alive) for h in hs if (l, h) not in keep]
        budget = _global_budget(shapes, target, alive, (_head_weights(shapes[l]) for l, _ in units))
        used = 0.0
        for l, h in sorted(units, key=lambda u: (table.head[u[0]][u[1]], u)):
            size = _head_weights(shapes[l])
            if used + size <= budget:  # a big head that does not fit may leave room for a smaller one
                removed.add((l, h))
                used += size
    else:
        for s, hs in zip(shapes, alive):
            scores = table.head[s.layer]
            units = sorted((h for h in hs if (s.layer, h) not in keep), key=lambda h: (scores[h], h))
            n = max(0, min(_round(_local_fraction(s, len(hs), target) * len(hs)), len(units), len(hs) - 1))
            removed.update((s.layer, h) for h in units[:n])
    return [_whole_heads(s, [h for h in hs if (s.layer, h) not in removed]) for s, hs in zip(shapes, alive)]


def _per_head(table: _Scores, threshold: str, target: float, alive, budget: str) -> list[LayerPlan]:
    shapes = table.shapes
    # (layer, group) -> (remaining heads, dim): each head's channels, lowest score first
    # (a stable sort, so ties go to the lower channel).
    order = {(s.layer, g): np.argsort(table.channels(g)[s.layer][hs], axis=1, kind="stable")
             for s, hs in zip(shapes, alive) for g in GROUPS}
    if threshold == "local":
        cut = {(s.layer, g): _local_count(s, len(hs), target, _dim(s, g)) for s, hs in zip(shapes, alive)
               for g in GROUPS}
    else:
        cut = _per_head_global(table, target, alive, budget)
    # Row i of order[l, g] is head alive[l][i]; it keeps all but its cut[l, g] lowest channels.
    return [_layer_plan(hs, order[l, "qk"][:, cut[l, "qk"]:], order[l, "vo"][:, cut[l, "vo"]:])
            for l, hs in enumerate(alive)]


def _local_count(shape: AttentionShape, alive: int, target: float, dim: int) -> int:
    """Channels a local threshold removes from each of ``dim`` (every head keeps at least one)."""
    return max(0, min(_round(_local_fraction(shape, alive, target) * dim), dim - 1))


Move = tuple[int, str]  # (layer, group): one more channel removed from each remaining head


def _per_head_global(table: _Scores, target: float, alive, budget: str) -> dict[Move, int]:
    """Global per-head allocation: channels k[(layer, group)] removed from each remaining head.

    A move in (l, g) removes one more channel from each of the layer's R_l heads (R_l * 2 * hidden
    weights); removing k costs the sum over heads of their k smallest scores. Each budget (one per
    group, or one for both) takes the most weight that fits it at the least cost: greedily when
    all its moves have one size, exactly (``_exact_moves``) when head counts differ.
    """
    shapes = table.shapes
    ranked = {(s.layer, g): np.sort(table.channels(g)[s.layer][hs], axis=1)  # (R, dim), ascending
              for s, hs in zip(shapes, alive) for g in GROUPS}
    size = {(s.layer, g): len(hs) * 2 * s.hidden for s, hs in zip(shapes, alive) for g in GROUPS}
    cut = dict.fromkeys(ranked, 0)
    for groups in _budget_groups(budget):
        keys = [key for key, r in ranked.items() if key[1] in groups and r.shape[0] and r.shape[1] > 1]
        room = _global_budget(shapes, target, alive, (size[key] for key in keys), groups)
        solve = _greedy_moves if len({size[key] for key in keys}) <= 1 else _exact_moves
        cut |= solve(ranked, size, keys, room)
    return cut


def _greedy_moves(ranked: dict[Move, np.ndarray], size: dict[Move, int], keys: Sequence[Move],
                  budget: float) -> dict[Move, int]:
    """Moves of ``keys`` that fit ``budget``, cheapest per channel first (the mean over heads of
    their (k+1)-th smallest score). Marginal costs never decrease in k, so with moves of one
    size this is optimal (docs/methods.md); with unequal sizes it is not (``_exact_moves``)."""
    cut = dict.fromkeys(keys, 0)
    heap = [(ranked[l, g][:, 0].mean(), l, GROUPS.index(g)) for l, g in keys]
    heapq.heapify(heap)
    used = 0.0
    while heap:
        _, l, gi = heapq.heappop(heap)
        key = (l, GROUPS[gi])
        if used + size[key] > budget:
            continue  # every later move of (l, g) is as big: drop the pair, try cheaper-to-fit ones
        used += size[key]
        cut[key] += 1
        if cut[key] < ranked[key].shape[1] - 1:  # each head keeps at least one channel
            heapq.heappush(heap, (ranked[key][:, cut[key]].mean(), l, gi))
    return cut


def _exact_moves(ranked: dict[Move, np.ndarray], size: dict[Move, int], keys: Sequence[Move],
                 budget: float) -> dict[Move, int]:
    """The allocation that removes the most weight within ``budget`` and, among those, the least
    score: a dynamic programme over the removed weight in units of the moves' common divisor
    (2 * hidden for AST: at most one unit per channel, 18,432 for AST-base), one stage per
    (layer, group) choosing its k in 0..dim-1. Ties go to the smaller k of the later stage."""
    unit = reduce(math.gcd, (size[key] for key in keys), 0)
    if not keys or budget < unit:
        return dict.fromkeys(keys, 0)
    cap = int(min(budget // unit, sum((ranked[k].shape[1] - 1) * size[k] // unit for k in keys)))
    best = np.full(cap + 1, np.inf)  # best[w]: least score removing exactly w units
    best[0] = 0.0
    choices = []  # per stage: (cap + 1,) the k that reaches best[w]
    for key in keys:
        step = size[key] // unit
        cost = np.concatenate([[0.0], np.cumsum(ranked[key].sum(0))])  # cost[k]: k smallest per head
        new, pick = best.copy(), np.zeros(cap + 1, dtype=np.int64)
        for k in range(1, ranked[key].shape[1]):
            shift = k * step
            if shift > cap:
                break
            candidate = best[:cap + 1 - shift] + cost[k]
            better = candidate < new[shift:]
            new[shift:][better] = candidate[better]
            pick[shift:][better] = k
        best = new
        choices.append(pick)
    w = int(np.flatnonzero(np.isfinite(best))[-1])  # the most weight that fits
    cut = {}
    for key, pick in zip(reversed(keys), reversed(choices)):
        cut[key] = int(pick[w])
        w -= cut[key] * (size[key] // unit)
    return cut


def _same_channel(table: _Scores, threshold: str, target: float, alive, budget: str) -> list[LayerPlan]:
    shapes = table.shapes
    combine = np.mean if _over_heads(table.scorer) == "mean" else np.sum
    # (layer, group) -> (dim,) unit score of each channel over the remaining heads.
    unit = {(s.layer, g): combine(table.channels(g)[s.layer][hs], axis=0)
            for s, hs in zip(shapes, alive) if hs for g in GROUPS}
    removed: dict[tuple[int, str], set[int]] = {key: set() for key in unit}
    if threshold == "local":
        for (l, g), u in unit.items():
            n = _local_count(shapes[l], len(alive[l]), target, len(u))
            removed[l, g].update(np.argsort(u, kind="stable")[:n].tolist())  # ties: lower channel goes
    else:
        size = {(l, g): len(alive[l]) * 2 * shapes[l].hidden for l, g in unit}
        for groups in _budget_groups(budget):
            mine = {key: u for key, u in unit.items() if key[1] in groups}
            units = sorted((u[c], l, GROUPS.index(g), c) for (l, g), u in mine.items() for c in range(len(u)))
            room = _global_budget(shapes, target, alive, (size[key] for key, u in mine.items() if len(u) > 1),
                                  groups)
            used = 0.0
            for _, l, gi, c in units:
                key = (l, GROUPS[gi])
                if len(removed[key]) < len(unit[key]) - 1 and used + size[key] <= room:
                    removed[key].add(c)
                    used += size[key]
    layers = []
    for s, hs in zip(shapes, alive):
        if not hs:
            layers.append(LayerPlan())
            continue
        qk = [c for c in range(s.qk_dim) if c not in removed[s.layer, "qk"]]
        vo = [c for c in range(s.v_dim) if c not in removed[s.layer, "vo"]]
        layers.append(_layer_plan(hs, [qk] * len(hs), [vo] * len(hs)))  # every head: the same indices
    return layers


# --- hand-made plans ----------------------------------------------------------------------------
def plan_from_heads(base, kept_heads: Mapping[int, Iterable[int]] | Sequence[Iterable[int]],
                    **metadata) -> PruningPlan:
    """Keep exactly ``kept_heads`` (all their channels) in each layer.

    base: a model, a ``ScoreTable`` or a sequence of AttentionShape.
    kept_heads: {layer: heads} (layers not mentioned keep every head) or one entry per layer.
    metadata: PruningPlan's scorer, pattern, threshold, target_sparsity.
    """
    shapes = _shapes(base)
    if isinstance(kept_heads, Mapping):
        unknown = sorted(set(kept_heads) - set(range(len(shapes))))
        if unknown:
            raise PlanError(f"kept_heads names layers {unknown}; the model has 0..{len(shapes) - 1}")
        per_layer = [kept_heads.get(s.layer, range(s.heads)) for s in shapes]
    else:
        per_layer = list(kept_heads)
        if len(per_layer) != len(shapes):
            raise PlanError(f"kept_heads lists {len(per_layer)} layers; the model has {len(shapes)}")
    layers = [_whole_heads(s, sorted(int(h) for h in hs)) for s, hs in zip(shapes, per_layer)]
    return PruningPlan(tuple(layers), shapes, **metadata).validate()


def plan_from_units(base, qk: Mapping[Head, Iterable[int]], vo: Mapping[Head, Iterable[int]],
                    removed_heads: Iterable[Head] = (), **metadata) -> PruningPlan:
    """Keep, per (layer, head), exactly the Q/K channels ``qk[(layer, head)]`` and the V/O
    channels ``vo[(layer, head)]``; heads not in a mapping keep all of that group's channels;
    ``removed_heads`` are dropped. ``base`` and ``metadata`` as in ``plan_from_heads``.
    """
    shapes = _shapes(base)
    gone = _heads("removed_heads", removed_heads, shapes)
    qk, vo = _channel_map("qk", qk, shapes), _channel_map("vo", vo, shapes)
    both = sorted(gone & (set(qk) | set(vo)))
    if both:
        raise PlanError(f"Heads {both} are in removed_heads and also given channels to keep")
    layers = []
    for s in shapes:
        kept = [h for h in range(s.heads) if (s.layer, h) not in gone]
        layers.append(_layer_plan(kept, [qk.get((s.layer, h), range(s.qk_dim)) for h in kept],
                                  [vo.get((s.layer, h), range(s.v_dim)) for h in kept]))
    return PruningPlan(tuple(layers), shapes, **metadata).validate()


def _channel_map(name: str, mapping: Mapping, shapes) -> dict[Head, list[int]]:
    """``mapping`` keyed by checked (layer, head) pairs, channels as lists of ints."""
    out = {}
    for key, channels in mapping.items():
        (head,) = _heads(name, [key], shapes)
        out[head] = [int(c) for c in channels]
    return out
