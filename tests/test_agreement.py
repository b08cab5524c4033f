"""Comparing scorers: rank normalisation, removal grids, rank agreement and disagreements."""

import numpy as np
import pytest
from scipy import stats

from prunekit.heads.agreement import (
    disagreements,
    paired_heads,
    plan_overlap,
    rank_agreement,
    rank_normalise,
    removal_grid,
    removed_units,
)
from prunekit.heads.planner import make_plan, plan_from_heads
from prunekit.heads.scoring import score


@pytest.fixture
def two_scorers(tiny_model):
    return score(tiny_model, "magnitude"), score(tiny_model, "random", seed=3)


def test_rank_normalise_maps_each_kind_of_unit_to_percentiles(two_scorers):
    magnitude, _ = two_scorers
    ranked_table = rank_normalise(magnitude)
    assert ranked_table.base == magnitude.base and ranked_table.scorer == "magnitude"
    ranked = ranked_table.frame
    assert ranked["score"].between(0, 1, inclusive="right").all()
    heads = ranked[(ranked["group"] == "head") & ranked["channel"].isna()]
    assert heads["score"].max() == 1.0 and len(heads) == 8  # 2 layers x 4 heads
    # Ranks follow the raw order within a kind of unit.
    raw = magnitude.frame.loc[heads.index, "score"]
    assert (np.argsort(raw.to_numpy(), kind="stable") == np.argsort(heads["score"].to_numpy(), kind="stable")).all()


def test_removal_grid_counts_removed_channels_and_heads(tiny_model):
    base = score(tiny_model, "magnitude")
    plan = plan_from_heads(base, {0: [0, 1], 1: [0, 1, 2, 3]})
    qk = removal_grid(plan, "qk")
    assert qk.shape == (2, 4)
    assert qk.loc[0].tolist() == [0.0, 0.0, 1.0, 1.0] and qk.loc[1].tolist() == [0.0] * 4
    per_head = make_plan(base, "per-head", "local", 0.5)
    for group in ("qk", "vo"):
        grid = removal_grid(per_head, group)
        assert np.allclose(grid.to_numpy(), 0.5)  # 4 of 8 channels in every head
    with pytest.raises(ValueError, match="group"):
        removal_grid(plan, "heads")


def test_plan_overlap_is_one_for_the_same_plan_and_lower_for_another(two_scorers):
    magnitude, random = two_scorers
    a = make_plan(magnitude, "per-head", "global", 0.5)
    b = make_plan(random, "per-head", "global", 0.5)
    assert plan_overlap(a, a) == 1.0
    gone_a, gone_b = removed_units(a), removed_units(b)
    assert len(gone_a) == 2 * 4 * 8  # half of 2 layers x 4 heads x 8 channels x (QK, VO)
    assert plan_overlap(a, b) == len(gone_a & gone_b) / len(gone_a | gone_b) < 1.0  # Jaccard, by hand


def test_rank_agreement_is_perfect_with_itself_and_measured_against_random(two_scorers):
    magnitude, random = two_scorers
    same = rank_agreement(magnitude, magnitude)
    assert list(same["layer"]) == ["0", "1", "all"]
    assert np.allclose(same[["spearman", "kendall"]].to_numpy(), 1.0)
    other = rank_agreement(magnitude, random)
    joined = paired_heads(magnitude, random)
    for layer, part in [*joined.groupby(level="layer"), ("all", joined)]:  # against scipy directly
        row = other[other["layer"] == str(layer)].iloc[0]
        assert row["spearman"] == pytest.approx(stats.spearmanr(part["a"], part["b"]).statistic)
        assert row["kendall"] == pytest.approx(stats.kendalltau(part["a"], part["b"]).statistic)
    assert not np.allclose(other["spearman"], 1.0)


def test_disagreements_list_the_largest_rank_gaps_first(two_scorers):
    magnitude, random = two_scorers
    gaps = disagreements(magnitude, random, top=3)
    assert len(gaps) == 3 and list(gaps.columns) == ["layer", "head", "rank_a", "rank_b", "gap"]
    assert (gaps["gap"].abs().diff().dropna() <= 0).all()
    assert np.allclose(gaps["gap"], gaps["rank_a"] - gaps["rank_b"])
    assert (disagreements(magnitude, magnitude)["gap"] == 0).all()


def test_head_grid_scales(two_scorers):
    from prunekit.report.figures import head_grid

    magnitude, _ = two_scorers
    linear = head_grid(magnitude, "head", "pair")
    np.testing.assert_allclose(head_grid(magnitude, "head", "pair", "log"), np.log10(linear))
    per_layer = head_grid(magnitude, "head", "pair", "per layer")
    np.testing.assert_allclose(per_layer.max(axis=1), 1.0)
    np.testing.assert_allclose(per_layer.mul(linear.max(axis=1), axis=0), linear)
    with pytest.raises(ValueError, match="Unknown scale 'cubic'"):
        head_grid(magnitude, "head", "pair", "cubic")
