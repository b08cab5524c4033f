"""Pruning keys from scores (the learned priors by default), per layer or per head.

``choose_keys`` decides, ``prune_keys`` returns a new model that drops them. The unit is one
patch key of one layer (granularity ``layer``: scored by its mean over the layer's heads) or of
one head (``head``). A ``global`` threshold drops the ``round(sparsity x units)`` lowest-scored
units of the whole model; a ``local`` one drops ``round(sparsity x N)`` of every layer
(``layer``) or of every head (``head``). Ties: the unit that comes first in (layer, head, key)
order is dropped first (a stable sort). The CLS and distillation keys are never units.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from prunekit.errors import ConfigurationError, ModelError
from prunekit.keys.priors import add_key_priors, check_patches, key_priors_of, prior_table
from prunekit.models import anatomy
from prunekit.models.key_priors import (
    EXTRA_KEYS,
    KeyPriorASTForAudioClassification,
    KeySettings,
    install_key_priors,
)

__all__ = [
    "PRUNE_GRANULARITIES",
    "THRESHOLDS",
    "check_sparsity",
    "choose_keys",
    "kept_fraction",
    "prune_keys",
    "unprune_keys",
]

PRUNE_GRANULARITIES = ("layer", "head")
THRESHOLDS = ("global", "local")


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` as a float in [0, 1), else a ConfigurationError naming it."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ConfigurationError(f"Key sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise ConfigurationError(
            f"Key sparsity must lie in [0, 1) (the share of patch keys dropped; the CLS and "
            f"distillation keys always stay), got {sparsity}"
        )
    return value


def _check_options(granularity: str, threshold: str) -> None:
    if granularity not in PRUNE_GRANULARITIES:
        raise ConfigurationError(
            f"Key pruning granularity must be one of {', '.join(PRUNE_GRANULARITIES)}, got {granularity!r}"
        )
    if threshold not in THRESHOLDS:
        raise ConfigurationError(f"Key pruning threshold must be global or local, got {threshold!r}")


def _units(scores: Sequence[torch.Tensor], granularity: str) -> list[torch.Tensor]:
    """Per layer, the scores of its units: (h, N) per head, or (1, N) per layer (head mean). A
    layer with no heads has no units (its keys cost nothing)."""
    return [s.float().mean(0, keepdim=True) if granularity == "layer" else s.float() for s in scores]


def _lowest_first(values: torch.Tensor) -> torch.Tensor:
    """Indices of ``values`` (1-D), lowest first; equal values in a fixed pseudo-random order
    (seed 0), not by position. Uniform or near-uniform scores (priors that learned nothing) tie
    everywhere, and a positional tie-break would then drop the first layers' keys wholesale
    (under a global budget, every patch key of the first half of the layers at 50 %)."""
    shuffle = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))
    return shuffle[torch.sort(values[shuffle], stable=True).indices]


def _drop(units: list[torch.Tensor], sparsity: float, threshold: str) -> list[torch.Tensor]:
    """Per layer, booleans shaped like its units: True where the unit is dropped (the lowest
    scores; ties broken by ``_lowest_first``)."""
    dropped = [torch.zeros(u.shape, dtype=torch.bool) for u in units]
    if threshold == "local":
        for u, d in zip(units, dropped):
            n = round(sparsity * u.shape[-1])
            for row in range(u.shape[0] if n else 0):
                d[row, _lowest_first(u[row])[:n]] = True
        return dropped
    flat = torch.cat([u.reshape(-1) for u in units])
    n = round(sparsity * flat.numel())
    flags = torch.zeros(flat.numel(), dtype=torch.bool)
    flags[_lowest_first(flat)[:n]] = True
    start = 0
    for u, d in zip(units, dropped):
        d.copy_(flags[start : start + u.numel()].view(u.shape))
        start += u.numel()
    return dropped


def _scores_for(model: nn.Module, scores: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    shapes = anatomy.attention_shapes(model)
    patches = anatomy.patch_grid(model).patches
    if scores is None:
        return key_priors_of(model)
    scores = [torch.as_tensor(s).detach().cpu() for s in scores]
    if len(scores) != len(shapes):
        raise ConfigurationError(f"Key scores for {len(scores)} layers given; the model has {len(shapes)}")
    for shape, s in zip(shapes, scores):
        if s.ndim == 2 and s.shape[-1] != patches:
            check_patches(model, s.shape[-1], "the key scores")
        if tuple(s.shape) != (shape.heads, patches):
            raise ConfigurationError(
                f"Key scores of layer {shape.layer} have shape {tuple(s.shape)}; the model's is "
                f"({shape.heads} heads, {patches} patch keys)"
            )
    return scores


def choose_keys(
    model: nn.Module,
    sparsity: float,
    granularity: str = "layer",
    threshold: str = "global",
    scores: Sequence[torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Which keys a key sparsity removes, without pruning: ``prior_table``'s rows (layer, head,
    key, frequency, time, prior, log_prior) with ``kept`` saying the choice. ``scores``: one (h,
    N) tensor per layer, higher = kept (default: the model's learned priors)."""
    sparsity = check_sparsity(sparsity)
    _check_options(granularity, threshold)
    work = model if isinstance(model, KeyPriorASTForAudioClassification) else add_key_priors(model)
    dropped = _drop(_units(_scores_for(work, scores), granularity), sparsity, threshold)
    table = prior_table(work)
    shapes = anatomy.attention_shapes(work)
    kept = [(~d).expand(s.heads, -1).reshape(-1) for d, s in zip(dropped, shapes) if s.heads]
    return table.assign(kept=torch.cat(kept).numpy()) if len(table) else table


def prune_keys(
    model: nn.Module,
    sparsity: float,
    granularity: str = "layer",
    threshold: str = "global",
    scores: Sequence[torch.Tensor] | None = None,
    scores_name: str | None = None,
) -> KeyPriorASTForAudioClassification:
    """A NEW model that drops the ``sparsity`` share of patch keys with the lowest ``scores``
    (default: the learned priors of ``model``; a model without priors gets uniform ones, which
    leave the outputs unchanged). ``granularity``: ``layer`` (physical: K and V computed only for
    the kept keys) or ``head`` (a -inf mask per head). The priors of the kept keys stay.

    Raises ConfigurationError for a sparsity outside [0, 1), an unknown granularity or threshold,
    or scores of the wrong shape; ModelError for a model whose keys were pruned already.
    """
    sparsity = check_sparsity(sparsity)
    _check_options(granularity, threshold)
    work = add_key_priors(model)  # a copy; priors kept when there are some
    if work.key_settings().granularity != "none":
        raise ModelError(
            f"This model's keys are pruned already ({work.key_settings().granularity}, sparsity "
            f"{work.key_settings().sparsity:g}); prune the unpruned key-prior model instead"
        )
    name = scores_name or ("learned priors" if scores is None else "given scores")
    dropped = _drop(_units(_scores_for(work, scores), granularity), sparsity, threshold)
    patches = work.key_settings().patches
    kept = tuple(int((~d).sum()) for d in dropped) if granularity == "layer" else None
    if granularity == "layer":  # a layer with no heads keeps every key (it has no K or V)
        kept = tuple(k if d.numel() else patches for k, d in zip(kept, dropped))
    settings = KeySettings(patches, granularity, kept, sparsity, threshold, name)
    pruned = install_key_priors(copy.deepcopy(work), settings)
    with torch.no_grad():
        for keys, d in zip(pruned.key_priors, dropped):
            if granularity == "layer":
                stay = (~d[0]).nonzero().flatten() if d.numel() else torch.arange(patches)
                extras = torch.arange(EXTRA_KEYS)
                keys.key_index.copy_(torch.cat([extras, stay + EXTRA_KEYS]).to(keys.key_index.device))
            else:
                keys.key_mask.copy_(~d)
    return pruned.eval()


def kept_fraction(model: nn.Module) -> float:
    """Share of (layer, head, patch key) units the model keeps (1.0 before pruning)."""
    table = prior_table(model)
    return float(table["kept"].mean()) if len(table) else 1.0


def unprune_keys(model: nn.Module) -> KeyPriorASTForAudioClassification:
    """A NEW model with the priors of ``model`` and every key kept again (a key-pruned model
    keeps the priors of the keys it dropped, so the choice can be made afresh)."""
    if not isinstance(model, KeyPriorASTForAudioClassification):
        raise ModelError(f"{type(model).__name__} has no key priors to keep")
    work = copy.deepcopy(model)
    return install_key_priors(work, KeySettings(work.key_settings().patches)).eval()
