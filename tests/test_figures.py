"""Figure layouts a reader complained about: the last top-5 panel's 100 % tick, and axis titles
that ran into the next panel on the removal maps."""

import pandas as pd

from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score
from prunekit.report import figures


def test_every_top_bars_panel_shows_the_100_percent_tick():
    top = pd.DataFrame({"label": ["yes", "no"], "probability": [0.9, 0.1]})
    fig = figures.top_bars({"Original": top, "Pruned": top, "Other": top})
    axes = [fig.layout[name] for name in fig.layout if name.startswith("xaxis")]
    assert len(axes) == 3
    assert all(list(axis.range) == [0, 1] and 1 in axis.tickvals for axis in axes)
    assert fig.layout.margin.r >= 40  # room for the last panel's "100%" label


def test_removal_maps_title_only_the_outer_axes(tiny_model):
    plan = make_plan(score(tiny_model, "magnitude", cache=False), "per-head", "global", 0.5)
    fig = figures.removal_maps({"a": plan, "b": plan, "c": plan})
    axes = {name: fig.layout[name] for name in fig.layout if name.startswith(("xaxis", "yaxis"))}
    titled = sorted(name for name, axis in axes.items() if axis.title.text)
    # 3 rows x 2 columns: "layer" on the first column's y axes, "head" on the last row's x axes
    assert titled == ["xaxis5", "xaxis6", "yaxis", "yaxis3", "yaxis5"]
