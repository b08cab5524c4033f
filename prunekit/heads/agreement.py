"""Comparing two scorers: rank-normalised scores, what each would remove, and where they disagree.

Raw scores of different scorers live on unrelated scales (an L1 norm against a sum of squared
gradients), so they are compared by rank: within each (group, matrix) a unit's score becomes
its percentile among the units of the same kind, 0 the least important, 1 the most.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from prunekit.errors import ConfigurationError, ScoresError
from prunekit.heads.plan import PruningPlan
from prunekit.heads.scores import ScoreTable

__all__ = [
    "disagreements",
    "head_scores",
    "paired_heads",
    "plan_overlap",
    "rank_agreement",
    "rank_normalise",
    "removal_grid",
    "removed_units",
]


def rank_normalise(table: ScoreTable) -> ScoreTable:
    """``table`` with ``score`` replaced by its percentile rank in (0, 1] among the rows of the
    same (group, matrix) and level (head rows against head rows, channels against channels)."""
    scores = table.frame
    level = scores["channel"].isna().map({True: "head", False: "channel"})
    ranked = scores.copy()
    ranked["score"] = scores.groupby([scores["group"], scores["matrix"], level])["score"].rank(pct=True)
    return table.with_frame(ranked)


def removal_grid(plan: PruningPlan, group: str) -> pd.DataFrame:
    """Layers x heads of the plan's base: the fraction of each head's Q/K (``group="qk"``) or
    V/O (``"vo"``) channels the plan removes; 1 for a removed head, NaN where a layer has no
    such head."""
    if group not in ("qk", "vo"):
        raise ConfigurationError(f"group must be 'qk' or 'vo', got {group!r}")
    width = max((s.heads for s in plan.base), default=0)
    grid = np.full((len(plan.base), width), np.nan)
    for layer, (lp, shape) in enumerate(zip(plan.layers, plan.base)):
        dim = shape.qk_dim if group == "qk" else shape.v_dim
        grid[layer, : shape.heads] = 1.0
        for head, channels in zip(lp.heads, lp.qk if group == "qk" else lp.vo):
            grid[layer, head] = 1.0 - len(channels) / dim if dim else 0.0
    return pd.DataFrame(
        grid, index=pd.Index(range(len(plan.base)), name="layer"), columns=pd.Index(range(width), name="head")
    )


def removed_units(plan: PruningPlan) -> set[tuple[int, str, int, int]]:
    """Every (layer, group, head, channel) the plan removes."""
    gone = set()
    for layer, (lp, shape) in enumerate(zip(plan.layers, plan.base)):
        kept = {("qk", h): set(c) for h, c in zip(lp.heads, lp.qk)} | {
            ("vo", h): set(c) for h, c in zip(lp.heads, lp.vo)
        }
        for group, dim in (("qk", shape.qk_dim), ("vo", shape.v_dim)):
            for head in range(shape.heads):
                left = kept.get((group, head), set())
                gone.update((layer, group, head, c) for c in range(dim) if c not in left)
    return gone


def plan_overlap(a: PruningPlan, b: PruningPlan) -> float:
    """Jaccard overlap of the channels two plans remove (1: the same units; 0: none in common)."""
    gone_a, gone_b = removed_units(a), removed_units(b)
    union = gone_a | gone_b
    return len(gone_a & gone_b) / len(union) if union else 1.0


def head_scores(scores: ScoreTable | pd.DataFrame, group: str, matrix: str) -> pd.Series:
    """Head-level scores of one (group, matrix), indexed by (layer, head)."""
    scores = scores.frame if isinstance(scores, ScoreTable) else scores
    rows = scores[(scores["group"] == group) & (scores["matrix"] == matrix) & scores["channel"].isna()]
    if rows.empty:
        raise ScoresError(f"The score table has no head rows for group={group!r}, matrix={matrix!r}")
    return rows.set_index(["layer", "head"])["score"].sort_index()


def paired_heads(a: ScoreTable, b: ScoreTable, group: str = "head", matrix: str = "pair") -> pd.DataFrame:
    """Head scores of two scorers side by side: index (layer, head), columns a, b."""
    joined = pd.concat({"a": head_scores(a, group, matrix), "b": head_scores(b, group, matrix)}, axis=1)
    if joined.isna().any().any():
        raise ScoresError("The two score tables are for different model shapes")
    return joined


def rank_agreement(a: ScoreTable, b: ScoreTable, group: str = "head", matrix: str = "pair") -> pd.DataFrame:
    """Per layer, and over all heads ("all"): Spearman rho and Kendall tau between two scorers'
    head scores. NaN where a layer has fewer than two heads (no ranking to agree on)."""
    joined = paired_heads(a, b, group, matrix)
    rows = []
    for layer, part in [*joined.groupby(level="layer"), ("all", joined)]:
        enough = len(part) >= 2 and part["a"].nunique() > 1 and part["b"].nunique() > 1
        rows.append(
            {
                "layer": str(layer),
                "heads": len(part),
                "spearman": stats.spearmanr(part["a"], part["b"]).statistic if enough else np.nan,
                "kendall": stats.kendalltau(part["a"], part["b"]).statistic if enough else np.nan,
            }
        )
    return pd.DataFrame(rows)


def disagreements(
    a: ScoreTable, b: ScoreTable, group: str = "head", matrix: str = "pair", top: int = 10
) -> pd.DataFrame:
    """The ``top`` heads whose percentile rank (over all heads) differs most between two scorers:
    columns layer, head, rank_a, rank_b, gap (rank_a - rank_b; positive: ``a`` values it more)."""
    joined = paired_heads(a, b, group, matrix).rank(pct=True)
    out = joined.rename(columns={"a": "rank_a", "b": "rank_b"}).reset_index()
    out["gap"] = out["rank_a"] - out["rank_b"]
    order = out["gap"].abs().sort_values(ascending=False, kind="stable").index
    return out.loc[order].head(top).reset_index(drop=True)
