"""Plotly figures for token pruning: which patches survive, accuracy against MACs, patch
clusters and the per-block correlation. Built from arrays and tidy frames; nothing is computed here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from prunekit.models.family import PatchGrid
from prunekit.report.figures import MAGMA

__all__ = ["accuracy_macs", "cluster_histogram", "correlation_lines", "survivor_maps"]


def _cell(grid: PatchGrid, patch: int) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) in (frame, mel bin) of the stride cell where patch token ``patch`` starts
    (patches overlap when the stride is below the patch size; the last row and column reach to
    the patch's end)."""
    f, t = divmod(patch, grid.time)
    x0, y0 = t * grid.t_stride, f * grid.f_stride
    x1 = x0 + (grid.size if t == grid.time - 1 else grid.t_stride)
    y1 = y0 + (grid.size if f == grid.frequency - 1 else grid.f_stride)
    return x0 - 0.5, x1 - 0.5, y0 - 0.5, y1 - 0.5


def survivor_maps(features: np.ndarray, grid: PatchGrid, kept: dict[int, list[int]]) -> go.Figure:
    """The model input (frames, mels) with the patch grid drawn on it, once per drop block, the
    patches dropped by that block dimmed. ``kept``: block -> original patch indices that survive."""
    titles = [f"after block {b}: {len(k)} of {grid.patches} patches" for b, k in kept.items()]
    fig = make_subplots(
        rows=1, cols=max(len(kept), 1), subplot_titles=titles or ["input"], horizontal_spacing=0.04
    )
    for col, (_, survivors) in enumerate(kept.items() or [(None, list(range(grid.patches)))], start=1):
        fig.add_trace(
            go.Heatmap(
                z=features.T,
                colorscale=MAGMA,
                showscale=False,
                hovertemplate="frame %{x}, mel bin %{y}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        alive = set(survivors)
        for patch in range(grid.patches):
            x0, x1, y0, y1 = _cell(grid, patch)
            dropped = patch not in alive
            fig.add_shape(
                type="rect",
                x0=x0,
                x1=x1,
                y0=y0,
                y1=y1,
                row=1,
                col=col,
                line={"width": 0.6, "color": "rgba(255,255,255,0.5)"},
                fillcolor="rgba(20,20,30,0.78)" if dropped else "rgba(0,0,0,0)",
            )
    fig.update_layout(height=300, margin={"t": 50, "b": 30})
    fig.update_xaxes(title_text="frame")
    fig.update_yaxes(title_text="mel bin", col=1)
    return fig


def accuracy_macs(points: pd.DataFrame) -> go.Figure:
    """Accuracy against MACs per clip; ``points`` has columns kind, label, macs, accuracy (one
    marker series per kind: dense, token pruning, head pruning)."""
    fig = go.Figure()
    for kind, rows in points.groupby("kind", sort=False):
        rows = rows.sort_values("macs")
        fig.add_trace(
            go.Scatter(
                x=rows["macs"] / 1e6,
                y=rows["accuracy"],
                mode="markers+lines" if len(rows) > 1 else "markers",
                name=kind,
                text=rows["label"],
                hovertemplate="%{text}<br>%{x:.1f} M MACs, %{y:.1%}<extra></extra>",
            )
        )
    fig.update_layout(
        title="accuracy against MACs per clip",
        height=340,
        xaxis={"title": "M MACs per clip"},
        yaxis={"title": "accuracy", "tickformat": ".0%"},
        margin={"t": 50, "b": 40},
    )
    return fig


def cluster_histogram(values: np.ndarray, clusters: pd.DataFrame, statistic: str) -> go.Figure:
    """Histogram of one patch statistic over every patch, coloured by k-means cluster (rows of
    ``clusters``: cluster, low, high, share)."""
    fig = go.Figure()
    for row in clusters.itertuples():
        inside = values[(values >= row.low) & (values <= row.high)]
        fig.add_trace(go.Histogram(x=inside, name=f"cluster {row.cluster} ({row.share:.0%})", nbinsx=30))
    fig.update_layout(
        barmode="overlay",
        title=f"patch {statistic}: 5 k-means clusters",
        height=300,
        xaxis={"title": statistic},
        yaxis={"title": "patches"},
        margin={"t": 50, "b": 40},
    )
    return fig


def correlation_lines(table: pd.DataFrame, paper: dict[str, tuple[float, ...]]) -> go.Figure:
    """Per block, the authors' Kendall count and tau-b for each statistic, with the paper's mean
    (AST on Speech Commands) as a dotted line. ``table``: block, statistic, authors_kendall, tau_b."""
    fig = go.Figure()
    for statistic, rows in table.groupby("statistic"):
        fig.add_trace(
            go.Scatter(
                x=rows["block"],
                y=rows["authors_kendall"],
                mode="lines+markers",
                name=f"{statistic}: authors' count (ties concordant)",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=rows["block"],
                y=rows["tau_b"],
                mode="lines+markers",
                line={"dash": "dash"},
                name=f"{statistic}: tau-b",
            )
        )
        if statistic in paper:
            fig.add_hline(
                y=float(np.mean(paper[statistic])),
                line={"dash": "dot", "width": 1},
                annotation_text=f"paper {statistic} mean",
                annotation_position="top left",
            )
    fig.update_layout(
        title="Kendall: CLS attention vs cluster rank, per block",
        height=340,
        xaxis={"title": "block", "dtick": 1},
        yaxis={"title": "Kendall", "range": [-0.2, 1]},
        margin={"t": 50, "b": 40},
    )
    return fig
