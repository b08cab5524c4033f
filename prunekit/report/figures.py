"""Plotly figures built from the scorers' tidy frames. Scorers never draw; pages never pivot.

The head map is a scatter of square markers rather than a ``go.Heatmap``: plotly reports point
selections (what ``st.plotly_chart(on_select=...)`` returns) for scatter traces, not heatmaps,
and clicking a head is how a user opens its channels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from prunekit.errors import ConfigurationError
from prunekit.heads.agreement import head_scores, removal_grid
from prunekit.heads.plan import PruningPlan
from prunekit.heads.scores import ScoreTable
from prunekit.store import atomic_write_bytes, atomic_write_text

__all__ = [
    "FIGURE_HTML",
    "FIGURE_PNG",
    "VIEWS",
    "agreement_bars",
    "attention_maps",
    "channel_bars",
    "channel_scores",
    "class_change_bars",
    "confusion_map",
    "head_grid",
    "head_map",
    "key_prior_maps",
    "picked_head",
    "plan_map",
    "removal_grids",
    "removal_maps",
    "spectrogram",
    "square_map",
    "sweep_curves",
    "sweep_structure_maps",
    "top_bars",
    "variants_chart",
    "write_sweep_figure",
]

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


SCALES = {
    "linear": "the scores as they are",
    "log": "log10 of the scores: for Fisher-like scores that span orders of magnitude across layers",
    "per layer": "each layer's scores divided by that layer's largest: which heads matter within a layer",
}


def head_grid(scores: ScoreTable, group: str, matrix: str, scale: str = "linear") -> pd.DataFrame:
    """Head-level scores of one (group, matrix) as a layers x heads table (NaN where a pruned
    layer has fewer heads), on one of ``SCALES``."""
    grid = head_scores(scores, group, matrix).unstack("head")
    if scale == "log":
        return np.log10(grid.where(grid > 0))  # a zero or negative score has no log: left blank
    if scale == "per layer":
        return grid.div(grid.abs().max(axis=1).replace(0, np.nan), axis=0)
    if scale != "linear":
        raise ConfigurationError(f"Unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return grid


def square_map(
    grid: pd.DataFrame,
    *,
    title: str,
    value: str = "score",
    colorscale: str = "Viridis",
    zrange: tuple[float, float] | None = None,
    marks: dict[tuple[int, int], str] | None = None,
    fmt: str = ".4g",
) -> go.Figure:
    """A layers x heads grid (layer 0 at the top) drawn as clickable squares; NaN cells are left
    out. ``marks`` puts a symbol on chosen (layer, head) cells (e.g. forced keep/remove)."""
    cells = grid.stack().rename(value).reset_index()  # layer, head, value
    cmin, cmax = zrange if zrange else (None, None)
    fig = go.Figure(
        go.Scatter(
            x=cells["head"],
            y=cells["layer"],
            mode="markers",
            showlegend=False,
            marker={
                "symbol": "square",
                "size": 34,
                "color": cells[value],
                "colorscale": colorscale,
                "cmin": cmin,
                "cmax": cmax,
                "colorbar": {"title": value},
                "line": {"width": 1, "color": "white"},
            },
            customdata=cells[["layer", "head"]].to_numpy(),
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{value} %{{marker.color:{fmt}}}<extra></extra>",
        )
    )
    for (layer, head), text in (marks or {}).items():
        fig.add_annotation(x=head, y=layer, text=text, showarrow=False, font={"size": 18, "color": "white"})
    fig.update_layout(
        title=title,
        xaxis={"title": "head", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"},
        height=120 + 48 * len(grid),
        margin={"t": 60, "b": 40},
        clickmode="event+select",
    )
    return fig


def head_map(
    scores: ScoreTable,
    view: str,
    *,
    title: str | None = None,
    zrange: tuple[float, float] | None = None,
    scale: str = "linear",
) -> go.Figure:
    """Layers x heads, coloured by the view's score (e.g. "W_q" or "Whole head") on ``scale``."""
    group, matrix = VIEWS[view]
    value = {"log": "log10 score", "per layer": "share of layer max"}.get(scale, "score")
    return square_map(
        head_grid(scores, group, matrix, scale),
        zrange=zrange,
        value=value,
        title=title or f"{view}: {scores.scorer} score per head (click a head for its channels)",
    )


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


def channel_scores(table: ScoreTable, layer: int, head: int) -> pd.DataFrame:
    """One head's channel rows: columns group, matrix, channel, score."""
    scores = table.frame
    rows = scores[(scores["layer"] == layer) & (scores["head"] == head) & scores["channel"].notna()]
    return rows[["group", "matrix", "channel", "score"]].reset_index(drop=True)


def channel_bars(scores: ScoreTable, layer: int, head: int) -> go.Figure:
    """Per-channel scores of one head: Q/K channels (W_q, W_k, pair) beside V/O (W_v, W_o, pair)."""
    rows = channel_scores(scores, layer, head)
    if rows.empty:
        raise ConfigurationError(f"Layer {layer} has no head {head} in this score table")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Q/K channels", "V/O channels"))
    names = {"q": "W_q", "k": "W_k", "v": "W_v", "o": "W_o", "pair": "pair"}
    for col, group in ((1, "qk"), (2, "vo")):
        part = rows[rows["group"] == group]
        for matrix, sub in part.groupby("matrix", sort=False):
            fig.add_trace(
                go.Bar(x=sub["channel"], y=sub["score"], name=f"{group.upper()} {names[matrix]}"),
                row=1,
                col=col,
            )
    fig.update_layout(
        barmode="group",
        height=360,
        title=f"Layer {layer}, head {head}: score per channel",
        margin={"t": 70, "b": 40},
    )
    fig.update_xaxes(title_text="channel")
    return fig


def removal_maps(plans: dict[str, PruningPlan]) -> go.Figure:
    """For each named plan (a row), the fraction of each head's Q/K and V/O channels it removes
    (two columns), on one 0-1 scale: the layer-wise sparsity of what a scorer would cut."""
    return removal_grids(
        {name: (removal_grid(plan, "qk"), removal_grid(plan, "vo")) for name, plan in plans.items()}
    )


def removal_grids(grids: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> go.Figure:
    """Rows of (Q/K, V/O) layers x heads grids of the share removed, named, on one 0-1 scale."""
    names = list(grids)
    titles = [f"{name}: {part} removed" for name in names for part in ("Q/K", "V/O")]
    fig = make_subplots(
        rows=len(names),
        cols=2,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=min(0.16, 0.6 / len(names)) if len(names) > 1 else 0.0,
    )
    for row, name in enumerate(names, start=1):
        for col, grid in enumerate(grids[name], start=1):
            fig.add_trace(
                go.Heatmap(
                    z=grid.to_numpy(),
                    x=list(grid.columns),
                    y=list(grid.index),
                    coloraxis="coloraxis",
                    hovertemplate="layer %{y}, head %{x}<br>removed %{z:.0%}<extra></extra>",
                ),
                row=row,
                col=col,
            )
    # axis titles on the outer panels only: inner ones ran into the next panel and its title
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text="head", row=len(names))
    fig.update_layout(
        coloraxis={
            "colorscale": "Reds",
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": "removed", "tickformat": ".0%"},
        },
        height=80 + 330 * len(names),
        margin={"t": 60, "b": 40},
    )
    return fig


def config_name(scorer: str, pattern: str, threshold: str, seed: int | None = None) -> str:
    """A sweep configuration in words: "Fisher, per-head, global (seed 0)"."""
    return f"{scorer.capitalize()}, {pattern}, {threshold}" + ("" if seed is None else f" (seed {seed})")


def sweep_structure_maps(structure: pd.DataFrame, step: int) -> go.Figure:
    """Per configuration of a sweep (``structure.csv``), the share of each original head's Q/K
    and V/O channels removed after ``step``."""
    grids = {}
    at_step = structure[structure["step"] == step]
    for key, rows in at_step.groupby(["scorer", "pattern", "threshold", "seed"], sort=False):
        scorer, pattern, threshold, seed = key
        name = config_name(scorer, pattern, threshold, seed)
        qk = 1 - rows.pivot(index="layer", columns="head", values="qk_kept") / rows.pivot(
            index="layer", columns="head", values="qk_dim"
        )
        vo = 1 - rows.pivot(index="layer", columns="head", values="vo_kept") / rows.pivot(
            index="layer", columns="head", values="v_dim"
        )
        grids[name] = (qk, vo)
    if not grids:
        raise ConfigurationError(f"No configuration has finished step {step}")
    return removal_grids(grids)


def sweep_curves(results: pd.DataFrame) -> go.Figure:
    """Accuracy after recovery against attention sparsity (mAP for a sweep on multi-label data):
    one line per scorer x threshold, one panel per pattern (means over seeds, with error bars of
    one standard deviation over seeds when there are several)."""
    import plotly.express as px

    from prunekit.recovery.iterative import quality_column

    column = quality_column(results)
    multilabel = column.startswith("map")
    axis = "mAP after recovery" if multilabel else "accuracy after recovery (%)"
    keys = ["pattern", "threshold", "scorer", "step"]
    groups = results.groupby(keys, sort=False)
    curves = groups[["attention_sparsity", column]].mean().reset_index()
    curves["attention sparsity (%)"] = 100 * curves["attention_sparsity"]
    curves[axis] = curves[column] * (1 if multilabel else 100)
    spread = groups[column].std(ddof=1).to_numpy() * (1 if multilabel else 100)  # NaN for one seed
    curves["sd over seeds"] = spread
    seeds = results["seed"].nunique() if "seed" in results else 1
    curves["configuration"] = curves["scorer"].str.capitalize() + ", " + curves["threshold"]
    fig = px.line(
        curves,
        x="attention sparsity (%)",
        y=axis,
        color="configuration",
        facet_col="pattern",
        markers=True,
        error_y="sd over seeds" if seeds > 1 else None,
        hover_data=["step"],
        title="Iterative pruning with LoRA recovery: "
        + ("mAP" if multilabel else "accuracy")
        + " against attention sparsity"
        + (f" (mean of {seeds} seeds, bars: one standard deviation)" if seeds > 1 else ""),
    )
    fig.update_layout(height=450, margin={"t": 80, "b": 40})
    return fig


def agreement_bars(agreement: pd.DataFrame) -> go.Figure:
    """Per-layer Spearman and Kendall rank correlation between two scorers (``compare.rank_agreement``)."""
    fig = go.Figure(
        [go.Bar(x=agreement["layer"], y=agreement[k], name=k.capitalize()) for k in ("spearman", "kendall")]
    )
    fig.update_layout(
        barmode="group",
        height=320,
        yaxis={"range": [-1, 1], "title": "rank correlation"},
        xaxis={"title": "layer", "type": "category"},
        margin={"t": 30, "b": 40},
    )
    return fig


def confusion_map(confusion: pd.DataFrame, title: str) -> go.Figure:
    """A true x predicted count matrix, rows normalised to fractions for colour, counts on hover."""
    fractions = confusion.div(confusion.sum(axis=1).replace(0, 1), axis=0)
    fig = go.Figure(
        go.Heatmap(
            z=fractions.to_numpy(),
            x=list(confusion.columns),
            y=list(confusion.index),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            customdata=confusion.to_numpy(),
            hovertemplate="true %{y}, predicted %{x}<br>%{customdata} clips (%{z:.0%})<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=560,
        xaxis={"title": "predicted", "tickangle": -60},
        yaxis={"title": "true", "autorange": "reversed"},
        margin={"t": 50, "b": 80},
    )
    return fig


def class_change_bars(changes: pd.DataFrame, metric: str = "accuracy") -> go.Figure:
    """Per-class change, pruned minus dense, worst first: accuracy in points
    (``evaluation.changes.class_changes``) or, with ``metric="AP"``, average precision
    (``class_ap_changes``)."""
    colours = ["#d62728" if c < 0 else "#2ca02c" for c in changes["change"]]
    points = metric == "accuracy"
    fig = go.Figure(
        go.Bar(
            x=changes["label"],
            y=(100 if points else 1) * changes["change"],
            marker_color=colours,
            hovertemplate="%{x}: %{y:+.1f} points<extra></extra>"
            if points
            else "%{x}: %{y:+.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        height=320,
        yaxis={"title": "accuracy change (points)" if points else f"{metric} change"},
        xaxis={"tickangle": -60},
        margin={"t": 30, "b": 80},
    )
    return fig


def variants_chart(table: pd.DataFrame, x: str = "MACs per clip (M)") -> go.Figure:
    """Accuracy against cost, one named point per variant and a star for the original: ``table``
    has columns Variant, Accuracy (%) (or mAP, for multi-label data) and ``x`` (e.g. "MACs per
    clip (M)" or "Latency b1 (ms)")."""
    y = "mAP" if "mAP" in table else "Accuracy (%)"
    original = table["Variant"] == "original"
    fig = go.Figure()
    for mask, name, symbol in ((original, "original", "star"), (~original, "pruned variants", "circle")):
        part = table[mask]
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="markers+text",
                name=name,
                text=part["Variant"],
                textposition="top center",
                marker={"symbol": symbol, "size": 14 if symbol == "star" else 10},
                hovertemplate="%{text}<br>%{x:.4g}, "
                + ("%{y:.3f}" if y == "mAP" else "%{y:.1f} %")
                + "<extra></extra>",
            )
        )
    fig.update_layout(
        height=380,
        xaxis={"title": x},
        yaxis={"title": "mAP" if y == "mAP" else "accuracy (%)"},
        margin={"t": 30, "b": 40},
        legend={"orientation": "h"},
    )
    return fig


def attention_maps(maps: dict[str, np.ndarray], *, title: str, hop_ms: int = 10) -> go.Figure:
    """Side by side, one (mels, frames) map per model (``attention.paint``): where the attention
    goes on the spectrogram, time across and mel bins up, brighter = more attention."""
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(maps), horizontal_spacing=0.08)
    for col, values in enumerate(maps.values(), start=1):
        fig.add_trace(
            go.Heatmap(
                z=values,
                x=[i * hop_ms / 1000 for i in range(values.shape[1])],
                colorscale="Viridis",
                showscale=col == len(maps),
                colorbar={"title": "attention"},
                hovertemplate="%{x:.2f} s, mel bin %{y}: %{z:.3g}<extra></extra>",
            ),
            1,
            col,
        )
        fig.update_xaxes(title_text="time (s)", row=1, col=col)
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_layout(title=title, height=300, margin={"t": 70, "b": 40})
    return fig


def key_prior_maps(
    prior: np.ndarray, kept: np.ndarray, *, sparsity: float, title: str, hop_ms: int = 10
) -> go.Figure:
    """Two (mels, frames) maps on the spectrogram (``attention.paint``): the learned key prior
    relative to uniform (1 = plain attention's weight; red above, blue below) and the share of
    heads that keep each key at ``sparsity`` (black = dropped by every head), each with its scale."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["learned prior (x uniform)", f"kept at {sparsity:.0%} key sparsity"],
        horizontal_spacing=0.14,
    )
    x = [i * hop_ms / 1000 for i in range(prior.shape[1])]
    fig.add_trace(
        go.Heatmap(
            z=prior,
            x=x,
            colorscale="RdBu_r",
            zmid=1.0,
            colorbar={"title": "x uniform", "x": 0.43},
            hovertemplate="%{x:.2f} s, mel bin %{y}: %{z:.3g} x uniform<extra></extra>",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Heatmap(
            z=kept,
            x=x,
            colorscale="Greys_r",
            zmin=0,
            zmax=1,
            colorbar={"title": "kept", "x": 1.0},
            hovertemplate="%{x:.2f} s, mel bin %{y}: kept by %{z:.0%} of heads<extra></extra>",
        ),
        1,
        2,
    )
    for col in (1, 2):
        fig.update_xaxes(title_text="time (s)", row=1, col=col)
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_layout(title=title, height=320, margin={"t": 70, "b": 40})
    return fig


# plotly's Magma with its darkest stop "#000004" made "#000000": plotly.js, as Streamlit serves it,
# draws "#000004" in a colour of the page's theme (pink, or plotly's purple with theme=None), so
# the quietest bins, silence included, looked loud. Seen in chromium; black draws as black.
MAGMA = [
    ["#000000" if colour == "#000004" else colour for colour in pair]
    for pair in plotly.colors.get_colorscale("Magma")
]


def spectrogram(log_mel, *, title: str = "log-mel spectrogram", hop_ms: int = 10) -> go.Figure:
    """A (frames, mels) log-mel array: time across, mel bins up. The colour scale starts 60 dB
    below the loudest bin (natural log: 13.8), so digital silence (Kaldi's log floor, far below)
    is drawn black like every quiet bin instead of stretching the scale."""
    top = float(np.max(log_mel)) if np.size(log_mel) else 0.0
    fig = go.Figure(
        go.Heatmap(
            z=log_mel.T,
            x=[i * hop_ms / 1000 for i in range(len(log_mel))],
            zmin=top - 13.8,
            zmax=top,
            colorscale=MAGMA,
            colorbar={"title": "log energy"},
            hovertemplate="%{x:.2f} s, mel bin %{y}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=260,
        xaxis={"title": "time (s)"},
        yaxis={"title": "mel bin"},
        margin={"t": 40, "b": 40},
    )
    return fig


def top_bars(tops: dict[str, pd.DataFrame], truth: Sequence[str] | None = None) -> go.Figure:
    """Top-k probabilities of several models (name -> frame with label, probability) side by side.
    ``truth``: the clip's true tags (multi-label), drawn green and marked with a check."""
    true = set(truth or ())
    fig = make_subplots(rows=1, cols=len(tops), subplot_titles=list(tops), horizontal_spacing=0.15)
    for col, frame in enumerate(tops.values(), start=1):
        marked = [f"{label} \u2713" if label in true else label for label in frame["label"]]
        fig.add_trace(
            go.Bar(
                x=frame["probability"],
                y=marked,
                orientation="h",
                showlegend=False,
                marker_color=["#2ca02c" if label in true else "#1f77b4" for label in frame["label"]],
                hovertemplate="%{y}: %{x:.1%}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(range=[0, 1], tickvals=[0, 0.25, 0.5, 0.75, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed")
    # a right margin wide enough for the last panel's "100%" (Streamlit's theme leaves almost none)
    fig.update_layout(height=260, margin={"t": 40, "b": 30, "r": 40})
    return fig


def plan_map(plan: PruningPlan, marks: dict[tuple[int, int], str] | None = None) -> go.Figure:
    """Layers x heads: the share of each head's attention weights the plan removes (Q/K and V/O
    channels together), as clickable squares; ``marks`` labels forced heads."""
    qk, vo = removal_grid(plan, "qk"), removal_grid(plan, "vo")
    dims = {s.layer: (s.qk_dim, s.v_dim) for s in plan.base}
    qk_dim = pd.Series({layer: d[0] for layer, d in dims.items()})
    v_dim = pd.Series({layer: d[1] for layer, d in dims.items()})
    removed = (qk.mul(qk_dim, axis=0) + vo.mul(v_dim, axis=0)).div(qk_dim + v_dim, axis=0)
    return square_map(
        removed,
        value="removed",
        colorscale="Reds",
        zrange=(0, 1),
        marks=marks,
        fmt=".0%",
        title="What goes: share of each head removed (click a head to force it)",
    )


FIGURE_HTML, FIGURE_PNG = "accuracy.html", "accuracy.png"


def write_sweep_figure(out_dir) -> Path | None:
    """Write a sweep folder's accuracy-vs-sparsity figure as ``accuracy.html`` (plotly inlined, so
    it opens offline) and, when kaleido is installed, ``accuracy.png``. None before any step."""
    from prunekit.recovery.sweep import load_results

    out = Path(out_dir)
    results = load_results(out)[0]
    if results.empty:
        return None
    figure = sweep_curves(results)
    atomic_write_text(out / FIGURE_HTML, figure.to_html(include_plotlyjs=True))
    if importlib.util.find_spec("kaleido") is not None:
        atomic_write_bytes(out / FIGURE_PNG, figure.to_image(format="png", width=1100, height=450))
    return out / FIGURE_HTML
