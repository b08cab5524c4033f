"""Streamlit glue of the Tokens page: settings checked with a message, evaluations kept in the
session, one clip traced through the token-pruned model, the patch analysis.

Shared resources come from ``prunekit.ui`` (the cached base model is never modified:
``prune_tokens`` copies it). What one session evaluated lives in its ``st.session_state``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import streamlit as st
import torch

from prunekit.data import audio
from prunekit.data.datasets import AudioDataset
from prunekit.evaluation.cost import count_macs
from prunekit.evaluation.metrics import evaluate
from prunekit.heads.scoring import scoring_data
from prunekit.models.anatomy import patch_grid
from prunekit.models.family import PatchGrid
from prunekit.models.loading import LoadedModel
from prunekit.models.token_rules import TokenPruning, default_blocks, kept_counts
from prunekit.tokens import patches
from prunekit.tokens.topk import prune_tokens, trace_tokens
from prunekit.ui import (
    REPORTED,
    bar,
    bar_into,
    cached_model,
    current_variants,
    data_key,
    dense_evaluation,
    dense_macs,
)

__all__ = [
    "ClipTrace",
    "PatchReport",
    "at_keep",
    "default_drop_blocks",
    "evaluate_settings",
    "evaluated",
    "patch_counts",
    "patch_report",
    "points",
    "settings_or_report",
    "trace_clip",
]


def default_drop_blocks(depth: int) -> list[int]:
    return list(default_blocks(depth))


def settings_or_report(keep: float, blocks: list[int], rule: str, depth: int) -> TokenPruning | None:
    """The settings, or None after showing what is wrong with them."""
    try:
        return TokenPruning(keep, tuple(blocks), rule).check_depth(depth)
    except REPORTED as exc:
        st.error(f"These token-pruning settings cannot be used: {exc}")
        return None


def patch_counts(settings: TokenPruning, loaded: LoadedModel) -> str:
    """'45 -> 32 -> 23 ...': patch tokens the MLP of each block sees."""
    grid = patch_grid(loaded.model)
    counts = kept_counts(settings, grid.patches, loaded.model.config.num_hidden_layers)
    return " → ".join([str(grid.patches), *(str(c) for c in counts)])


def _evaluations() -> dict:
    return st.session_state.setdefault("_prunekit_token_evaluations", {})


def at_keep(settings: TokenPruning, keep: float) -> TokenPruning:
    """The same settings at another keep rate."""
    return replace(settings, keep=keep)


def evaluated(source: str, split: str, settings: TokenPruning) -> dict | None:
    """What ``evaluate_settings`` found for these settings in this session (None: not yet)."""
    return _evaluations().get((source, data_key(), split, settings))


def evaluate_settings(source: str, dataset: AudioDataset, split: str, settings: TokenPruning) -> dict | None:
    """Accuracy and MACs per clip of the token-pruned model on ``split`` (once per session and
    settings, with a progress bar), or None after a message."""
    key = (source, data_key(), split, settings)
    seen = _evaluations()
    if key not in seen:
        loaded = cached_model(source)
        widget, progress = bar(f"Evaluating keep {settings.keep:g} ({settings.rule}) on the {split} split:")
        try:
            pruned = prune_tokens(loaded.model, settings.keep, settings.blocks, settings.rule, settings.seed)
            result = evaluate(
                pruned, loaded.feature_extractor, loaded.labels, dataset, split, progress=progress
            )
            seen[key] = {"accuracy": result.accuracy, "macs": count_macs(pruned), "settings": settings}
        except REPORTED as exc:
            st.error(f"Could not evaluate the token-pruned model: {exc}")
            return None
        finally:
            widget.empty()
    return seen[key]


def points(source: str, dataset: AudioDataset, split: str) -> pd.DataFrame:
    """Accuracy and MACs of the dense model, of every token setting this session evaluated and
    of the head-pruned variants applied on the Prune page (same split): kind, label, macs, accuracy."""
    rows = []
    dense = dense_evaluation(source, dataset, split)
    if dense is not None:
        rows.append(
            {"kind": "original", "label": "original", "macs": dense_macs(source), "accuracy": dense.accuracy}
        )
    for (src, data, sp, s), r in _evaluations().items():
        if (src, data, sp) == (source, data_key(), split):
            rows.append(
                {
                    "kind": f"tokens ({s.rule}, blocks {','.join(map(str, s.blocks))})",
                    "label": f"keep {s.keep:g}",
                    "macs": r["macs"],
                    "accuracy": r["accuracy"],
                }
            )
    for v in current_variants(source):
        if v.split == split:
            rows.append(
                {
                    "kind": "head pruning",
                    "label": v.name,
                    "macs": float(v.cost.loc["pruned", "macs_per_clip"]),
                    "accuracy": v.accuracy,
                }
            )
    return pd.DataFrame(rows, columns=["kind", "label", "macs", "accuracy"])


@dataclass(frozen=True)
class ClipTrace:
    """One clip through the dense and the token-pruned model: the model input (frames, mels), the
    patch grid, the patches surviving each drop block and the top-5 of each model."""

    features: np.ndarray
    grid: PatchGrid
    kept: dict[int, list[int]]
    top: dict[str, pd.DataFrame]


def _top(logits: torch.Tensor, labels: list[str], k: int = 5) -> pd.DataFrame:
    probs = logits.softmax(-1)[0]  # (C,)
    values, index = probs.topk(min(k, len(labels)))
    return pd.DataFrame({"label": [labels[i] for i in index.tolist()], "probability": values.numpy()})


def trace_clip(loaded: LoadedModel, settings: TokenPruning, wave: np.ndarray) -> ClipTrace:
    """Features of a 16 kHz waveform (the model's first window) traced through both models."""
    features = audio.features([wave], loaded.feature_extractor)  # (1, frames, mels)
    pruned = prune_tokens(loaded.model, settings.keep, settings.blocks, settings.rule, settings.seed)
    run = trace_tokens(pruned, features)
    dense = trace_tokens(loaded.model, features)
    return ClipTrace(
        features[0].numpy(),
        patch_grid(loaded.model),
        {b: k[0].tolist() for b, k in run.kept.items()},
        {"Original": _top(dense.logits, loaded.labels), "Token-pruned": _top(run.logits, loaded.labels)},
    )


@dataclass(frozen=True)
class PatchReport:
    """Patch statistics (statistic -> all values), their clusters and the per-block correlations."""

    values: dict[str, np.ndarray]
    clusters: dict[str, pd.DataFrame]
    correlations: pd.DataFrame


def patch_report(source: str, dataset: AudioDataset, clips: int) -> PatchReport | None:
    """The patch analysis on up to ``clips`` validation clips (once per session and count)."""
    key = (source, data_key(), clips)
    seen = st.session_state.setdefault("_prunekit_patch_reports", {})
    if key not in seen:
        loaded = cached_model(source)
        widget, progress = bar("Features of the validation clips:")
        try:
            data = scoring_data(
                dataset, loaded.feature_extractor, loaded.labels, "validation", clips=clips, progress=progress
            )
            stats = patches.patch_statistics(loaded.model, data.features)
            clusters = {name: patches.cluster_ranks(v) for name, v in stats.items()}
            _, progress = bar_into(widget, "Attention scores per block:")
            scores = patches.block_scores(loaded.model, data.features, progress=progress)
            table = patches.correlations(scores, {name: c.ranks for name, c in clusters.items()})
        except REPORTED as exc:
            st.error(f"Could not analyse the patches: {exc}")
            return None
        finally:
            widget.empty()
        seen[key] = PatchReport(
            {n: v.flatten().numpy() for n, v in stats.items()},
            {n: c.table for n, c in clusters.items()},
            table,
        )
    return seen[key]
