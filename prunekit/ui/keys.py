"""Streamlit glue of the Key priors page: background runs, prior maps on the spectrogram's patch
grid, which keys a key sparsity removes, and dense vs key-pruned accuracy and MACs.

A run's model (the base model with its learned priors) is loaded through the shared
``cached_model`` (read-only); ``prune_keys`` copies it. Evaluations one session made live in its
``st.session_state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from prunekit.data.datasets import AudioDataset
from prunekit.evaluation.attention import paint
from prunekit.evaluation.cost import count_macs
from prunekit.evaluation.metrics import Evaluation, evaluate
from prunekit.evaluation.paired import PairedComparison, compare_evaluations
from prunekit.keys.background import MODEL_DIR, find_runs, learning_status, start_learning, stop_learning
from prunekit.keys.cost import attention_macs
from prunekit.keys.priors import prior_table
from prunekit.keys.prune import choose_keys, prune_keys
from prunekit.models import anatomy
from prunekit.models.loading import LoadedModel, load_model
from prunekit.store import cache_dir
from prunekit.ui import bar, cached_model, data_key, keep_bounded

__all__ = [
    "KEY_CHOICES",
    "KEY_RESULTS",
    "KeyResult",
    "all_runs",
    "finished_runs",
    "kept_image",
    "key_choice",
    "key_result",
    "prior_frame",
    "prior_image",
    "run_model",
    "runs_root",
    "start",
    "status_of",
    "stop",
    "stored_result",
]

KEY_CHOICES = 16  # key choices (sparsity x granularity x budget) a session keeps
KEY_RESULTS = 8  # evaluated key-pruned models a session keeps (tables and per-clip answers)


def runs_root() -> Path:
    return cache_dir() / "keys"


def finished_runs() -> dict[str, Path]:
    """Runs with saved priors (finished or stopped), by name, newest first."""
    return {p.name: p for p in find_runs(runs_root()) if (p / MODEL_DIR / "config.json").is_file()}


def run_model(run: Path) -> LoadedModel:
    """The run's model with its priors (shared, read-only; our own folder, so not confined)."""
    return _run_model(str(run / MODEL_DIR), learning_status(run).get("updated", ""))


@st.cache_resource(show_spinner="Loading the learned priors…", max_entries=4)
def _run_model(folder: str, updated: str) -> LoadedModel:
    """``updated``: the run's status time, so a resumed run's new priors are read again."""
    return load_model(folder)


@st.cache_data(show_spinner=False, max_entries=8)
def prior_frame(run: str, updated: str) -> pd.DataFrame:
    """``prior_table`` of a run's model."""
    return prior_table(run_model(Path(run)).model)


def _image(loaded: LoadedModel, values: np.ndarray) -> np.ndarray:
    """(mels, frames) image of (frequency, time) patch values on the model's input."""
    frames, mels = anatomy.input_shape(loaded.model)
    return paint(values, anatomy.patch_grid(loaded.model), frames, mels)


def _grid(table: pd.DataFrame, column: str, layer: int, head: int | None) -> np.ndarray:
    rows = table[table["layer"] == layer]
    if head is not None:
        rows = rows[rows["head"] == head]
    grid = rows.groupby(["frequency", "time"])[column].sum().unstack("time")  # sum over heads
    return grid.to_numpy(dtype=float)


def prior_image(loaded: LoadedModel, table: pd.DataFrame, layer: int, head: int | None) -> np.ndarray:
    """The prior of ``head`` (None: summed over the layer's heads) relative to uniform (1 = the
    plain model's weight, 2 = twice it), painted on the spectrogram."""
    grid = _grid(table, "prior", layer, head)
    heads = 1 if head is not None else table.loc[table["layer"] == layer, "head"].nunique()
    return _image(loaded, grid * grid.size / max(heads, 1))


def key_choice(
    run: Path, loaded: LoadedModel, sparsity: float, granularity: str, threshold: str
) -> pd.DataFrame:
    seen = st.session_state.setdefault("_prunekit_key_choices", {})
    key = (str(run), sparsity, granularity, threshold)
    if key in seen:
        return seen[key]
    return keep_bounded(seen, key, choose_keys(loaded.model, sparsity, granularity, threshold), KEY_CHOICES)


def kept_image(loaded: LoadedModel, choice: pd.DataFrame, layer: int, head: int | None) -> np.ndarray:
    """Share of the layer's heads (or the head) that keep each patch key, painted."""
    grid = _grid(choice.assign(kept=choice["kept"].astype(float)), "kept", layer, head)
    heads = 1 if head is not None else choice.loc[choice["layer"] == layer, "head"].nunique()
    return _image(loaded, grid / max(heads, 1))


@dataclass(frozen=True)
class KeyResult:
    """Dense, learned-prior and key-pruned models on one split."""

    table: pd.DataFrame  # model, accuracy (%), MACs per clip (M), attention MACs (M)
    comparison: PairedComparison  # key-pruned against the original, clip by clip
    priors_comparison: PairedComparison  # learned priors (nothing pruned) against the original


def key_result(
    source: str,
    run: Path,
    dataset: AudioDataset,
    split: str,
    dense: Evaluation,
    sparsity: float,
    granularity: str,
    threshold: str,
) -> KeyResult:
    """Evaluate the run's priors model and its key-pruned copy (kept in the session)."""
    seen = st.session_state.setdefault("_prunekit_key_results", {})
    key = (source, data_key(), str(run), split, sparsity, granularity, threshold)
    if key in seen:
        return seen[key]
    base = cached_model(source)
    loaded = run_model(run)
    pruned = prune_keys(loaded.model, sparsity, granularity, threshold)
    rows, evaluations = [], {}
    for name, model in (("original", base.model), ("learned priors", loaded.model), ("key-pruned", pruned)):
        if name == "original":
            evaluation = dense
        else:
            widget, progress = bar(f"Evaluating the {name} model on the {split} split:")
            evaluation = evaluate(
                model, loaded.feature_extractor, loaded.labels, dataset, split, progress=progress
            )
            widget.empty()
        evaluations[name] = evaluation
        rows.append(
            {
                "model": name,
                "accuracy (%)": round(100 * evaluation.accuracy, 2),
                "MACs per clip (M)": round(count_macs(model) / 1e6, 3),
                "attention MACs (M)": round(attention_macs(model) / 1e6, 3),
            }
        )
    result = KeyResult(
        pd.DataFrame(rows),
        compare_evaluations(dense, evaluations["key-pruned"], names=("original", "key-pruned")),
        compare_evaluations(dense, evaluations["learned priors"], names=("original", "learned priors")),
    )
    return keep_bounded(seen, key, result, KEY_RESULTS)


def status_of(run: Path) -> dict:
    return learning_status(run)


def all_runs() -> dict[str, dict]:
    """Every run under cache/keys/ (newest first) with its status."""
    return {p.name: learning_status(p) for p in find_runs(runs_root())}


def start(name: str, args: list[str]) -> int:
    return start_learning(runs_root() / name, args)


def stop(name: str) -> bool:
    return stop_learning(runs_root() / name)


def stored_result(
    source: str, run: Path, split: str, sparsity: float, granularity: str, threshold: str
) -> KeyResult | None:
    """The evaluation ``key_result`` made with these settings in this session, if any."""
    seen = st.session_state.get("_prunekit_key_results", {})
    return seen.get((source, data_key(), str(run), split, sparsity, granularity, threshold))
