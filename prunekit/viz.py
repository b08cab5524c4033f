"""Plotly figures built from the scorers' tidy frames. Scorers never draw; pages never pivot.

The head map is a scatter of square markers rather than a ``go.Heatmap``: plotly reports point
selections (what ``st.plotly_chart(on_select=...)`` returns) for scatter traces, not heatmaps,
and clicking a head is how a user opens its channels.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# What a person picks -> (group, matrix) rows of the score frame.
VIEWS: dict[str, tuple[str, str]] = {
    "Whole head": ("head", "pair"),
    "QK pair": ("qk", "pair"),
    "VO pair": ("vo", "pair"),
    "W_q": ("qk", "q"),
    "W_k": ("qk", "k"),
    "W_v": ("vo", "v"),
    "W_o": ("vo", "o"),
}


def head_grid(scores: pd.DataFrame, group: str, matrix: str) -> pd.DataFrame:
    """Head-level scores of one (group, matrix) as a layers x heads table (NaN where a pruned
    layer has fewer heads)."""
    rows = scores[(scores["group"] == group) & (scores["matrix"] == matrix) & scores["channel"].isna()]
    if rows.empty:
        raise ValueError(f"The score table has no head rows for group={group!r}, matrix={matrix!r}")
    return rows.pivot(index="layer", columns="head", values="score").sort_index()


def head_map(scores: pd.DataFrame, view: str, *, title: str | None = None) -> go.Figure:
    """Layers (rows, layer 0 at the top) x heads (columns), coloured by the view's score."""
    group, matrix = VIEWS[view]
    grid = head_grid(scores, group, matrix)
    cells = grid.stack().rename("score").reset_index()  # layer, head, score
    scorer = ", ".join(sorted(scores["scorer"].unique()))
    fig = go.Figure(go.Scatter(
        x=cells["head"], y=cells["layer"], mode="markers",
        marker={"symbol": "square", "size": 34, "color": cells["score"], "colorscale": "Viridis",
                "colorbar": {"title": "score"}, "line": {"width": 1, "color": "white"}},
        customdata=cells[["layer", "head"]].to_numpy(),
        hovertemplate="layer %{y}, head %{x}<br>score %{marker.color:.4g}<extra></extra>",
    ))
    fig.update_layout(
        title=title or f"{view}: {scorer} score per head (click a head for its channels)",
        xaxis={"title": "head", "dtick": 1}, yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"},
        height=120 + 48 * len(grid), margin={"t": 60, "b": 40}, clickmode="event+select",
    )
    return fig


def picked_head(event) -> tuple[int, int] | None:
    """(layer, head) of the first point selected on a ``head_map`` (a Streamlit selection event)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    if not points:
        return None
    point = points[0]
    return int(point["y"]), int(point["x"])


def channel_scores(scores: pd.DataFrame, layer: int, head: int) -> pd.DataFrame:
    """One head's channel rows: columns group, matrix, channel, score."""
    rows = scores[(scores["layer"] == layer) & (scores["head"] == head) & scores["channel"].notna()]
    return rows[["group", "matrix", "channel", "score"]].reset_index(drop=True)


def channel_bars(scores: pd.DataFrame, layer: int, head: int) -> go.Figure:
    """Per-channel scores of one head: Q/K channels (W_q, W_k, pair) beside V/O (W_v, W_o, pair)."""
    rows = channel_scores(scores, layer, head)
    if rows.empty:
        raise ValueError(f"Layer {layer} has no head {head} in this score table")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Q/K channels", "V/O channels"))
    names = {"q": "W_q", "k": "W_k", "v": "W_v", "o": "W_o", "pair": "pair"}
    for col, group in ((1, "qk"), (2, "vo")):
        part = rows[rows["group"] == group]
        for matrix, sub in part.groupby("matrix", sort=False):
            fig.add_trace(go.Bar(x=sub["channel"], y=sub["score"], name=f"{group.upper()} {names[matrix]}"),
                          row=1, col=col)
    fig.update_layout(barmode="group", height=360, title=f"Layer {layer}, head {head}: score per channel",
                      margin={"t": 70, "b": 40})
    fig.update_xaxes(title_text="channel")
    return fig
