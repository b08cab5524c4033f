"""Score every attention unit of a model: the one entry point, ``score``, and its disk cache.

``score(model, scorer, data) -> ScoreTable`` for any scorer in ``scorers.SCORERS``; the table is
the long frame of ``scores.COLUMNS`` plus the model's attention shape. ``score_split`` is the
whole job the CLI and the app run: featurise clips of a dataset split (when the scorer needs
data), then score. Results are cached on disk, keyed by the model's weights, the clips and the
options; a cached table that does not fit the model is recomputed, never served.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunekit.data.datasets import label_indices, label_targets
from prunekit.data.features import clip_features
from prunekit.devices import model_device, processes, resolve_device
from prunekit.errors import ConfigurationError
from prunekit.heads.scorers import SCORERS, ScorerOptions
from prunekit.heads.scores import COLUMNS, ScoreTable, ScoringData, expected_rows
from prunekit.models import anatomy
from prunekit.progress import Progress
from prunekit.store import atomic_write_bytes, cache_dir, content_key

__all__ = [
    "SCORERS",
    "SCORES_VERSION",
    "ScoreTable",
    "ScoringData",
    "needs_data",
    "score",
    "score_split",
    "scorer_names",
    "scoring_data",
    "seeded_subset",
]

SCORES_VERSION = 3  # bump when a scorer's maths changes, so old cached scores are not reused
# (2: Fisher averages over whole batches only; 3: gradient sums accumulate in float64)


def scorer_names() -> tuple[str, ...]:
    """Every registered scorer, in the order they are offered."""
    return tuple(SCORERS)


def needs_data(scorer: str) -> bool:
    """Whether ``scorer`` reads clips (the gradient scorers do)."""
    return _scorer(scorer).needs_data


def _scorer(name: str):
    if name not in SCORERS:
        raise ConfigurationError(f"Unknown scorer {name!r}; choose one of {', '.join(SCORERS)}")
    return SCORERS[name]


def seeded_subset(pool: Sequence, clips: int, seed: int = 0) -> list:
    """``clips`` items of ``pool`` drawn without replacement by ``seed``, in pool order (all of
    them when there are no more): the clips ``scoring_data`` and recovery's subsets read."""
    if len(pool) <= clips:
        return list(pool)
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), clips, replace=False))
    return [pool[i] for i in pick]


def scoring_data(
    dataset,
    feature_extractor,
    labels: Sequence[str],
    split: str = "validation",
    clips: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> ScoringData:
    """Up to ``clips`` clips of ``split`` (a seeded random subset when there are more), featurised
    with the model's extractor (cached on disk). Targets are class indices (N,), or for a
    multi-label dataset {0, 1} rows (N, C), which make the gradient scorers use BCE."""
    if clips < 1:
        raise ConfigurationError(f"Need at least 1 clip to score with, got clips={clips}")
    pool = seeded_subset(dataset.split(split), clips, seed)  # the split is never empty (DatasetError)
    targets = torch.as_tensor(
        label_targets(pool, labels) if dataset.multilabel else label_indices(pool, labels)
    )
    features = clip_features(pool, feature_extractor, progress=progress)
    return ScoringData(features, targets, name=f"{dataset.name}:{split}:{len(pool)}")


def score(
    model: nn.Module,
    scorer: str,
    data: ScoringData | None = None,
    *,
    batch_size: int = 32,
    norm: str = "l1",
    seed: int = 0,
    progress: Progress | None = None,
    cache: bool = True,
    device: str | torch.device | None = None,
) -> ScoreTable:
    """Score every attention unit of ``model`` with ``scorer`` (see ``scorers``).

    ``data`` is needed by the gradient scorers. ``norm`` ("l1" or "l2") is magnitude's,
    ``seed`` random's. ``progress(done_clips, total_clips)`` is called as batches finish.
    ``device``: where the gradient scorers run, on a copy of the model (None: the model's own
    device). In a data-parallel launch (``prunekit.devices.start_processes``) each rank scores
    its share of the batches and the sums are added across ranks: the scores equal a single
    process's on the same batches.
    """
    spec = _scorer(scorer)
    if norm not in ("l1", "l2"):
        raise ConfigurationError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    if spec.needs_data and data is None:
        raise ConfigurationError(f"The {scorer} scorer needs data (see prunekit.heads.scoring.scoring_data)")
    anatomy.ensure_prunable(model)
    where = model_device(model) if device is None else resolve_device(device)
    options = ScorerOptions(batch_size=batch_size, norm=norm, seed=seed, progress=progress, device=where)
    base = tuple(anatomy.attention_shapes(model))
    keyed = {f.name: getattr(options, f.name) for f in fields(options) if f.name in spec.options}
    key = content_key(
        SCORES_VERSION,
        scorer,
        keyed,
        anatomy.fingerprint(model),
        data.fingerprint() if spec.needs_data else None,
    )
    path = cache_dir() / "scores" / f"{key}.parquet"
    frame = _read_cached(path, base, scorer) if cache else None
    if frame is None:
        frame = spec.compute(model, data if spec.needs_data else None, options)
        if cache and processes().main:  # every rank holds the same table: one writes it
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(path, buffer.getvalue())
    elif progress is not None and spec.needs_data:
        progress(len(data.features), len(data.features))
    return ScoreTable(frame, base, scorer)


def score_split(
    model: nn.Module,
    feature_extractor,
    labels: Sequence[str],
    scorer: str,
    dataset=None,
    *,
    split: str = "validation",
    clips: int = 1000,
    batch_size: int = 32,
    norm: str = "l1",
    seed: int = 0,
    features_progress: Progress | None = None,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
) -> ScoreTable:
    """Score ``model`` with ``scorer`` on ``device`` (see ``score``); a gradient scorer reads up
    to ``clips`` clips of ``split`` of ``dataset`` (featurised and cached first, reported by
    ``features_progress``)."""
    data = None
    if needs_data(scorer):
        if dataset is None:
            raise ConfigurationError(f"The {scorer} scorer needs a dataset to read clips from")
        data = scoring_data(
            dataset, feature_extractor, labels, split, clips=clips, progress=features_progress
        )
    return score(
        model, scorer, data, batch_size=batch_size, norm=norm, seed=seed, progress=progress, device=device
    )


def _read_cached(path, base, scorer: str) -> pd.DataFrame | None:
    """The cached frame, or None when it is missing, damaged, or does not fit the model (then it
    is recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # truncated or corrupt file: never trust it
        return None
    if (
        tuple(frame.columns) != COLUMNS
        or len(frame) != expected_rows(base)
        or frame["scorer"].ne(scorer).any()
    ):
        return None
    if not np.isfinite(frame["score"].to_numpy(dtype=float, na_value=np.nan)).all():
        return None
    heads = frame[frame["group"] == "head"].groupby("layer")["head"].nunique()
    if any(heads.get(s.layer, 0) != s.heads for s in base):
        return None
    frame["channel"] = frame["channel"].astype("Int64")
    return frame
