"""Key priors on a model, read as data: add them, tabulate them, and the scores of the baselines
that need no learning (the plain model's mean received attention, random).

Scores are a list with one (h, N) tensor per layer: higher = more important, one value per head
and patch key (N patches; the CLS and distillation keys are never scored or pruned).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunekit.errors import ConfigurationError, ModelError
from prunekit.models import anatomy
from prunekit.models.key_priors import (
    EXTRA_KEYS,
    KEY_FIELD,
    KeyPriorASTForAudioClassification,
    KeySettings,
    install_key_priors,
)
from prunekit.progress import Progress

__all__ = [
    "add_key_priors",
    "check_patches",
    "key_priors_of",
    "prior_table",
    "random_scores",
    "received_attention_scores",
]


def add_key_priors(model: nn.Module) -> KeyPriorASTForAudioClassification:
    """A copy of ``model`` (any AST prunekit loads, dense or head-pruned) with a uniform log-prior
    (zeros) per layer, head and patch key; its outputs equal ``model``'s exactly. A model that
    already has priors is copied as it is."""
    anatomy.ensure_prunable(model)
    work = copy.deepcopy(model)
    if isinstance(work, KeyPriorASTForAudioClassification):
        return work
    return install_key_priors(work, KeySettings(anatomy.patch_grid(work).patches))


def check_patches(model: nn.Module, patches: int, what: str = "the priors") -> None:
    """ModelError naming both counts when ``model`` sees another number of patch tokens than
    ``patches`` (another input length or patch grid)."""
    have = anatomy.patch_grid(model).patches
    if have != patches:
        grid = anatomy.patch_grid(model)
        raise ModelError(
            f"The model has {have} patch tokens ({grid.frequency} x {grid.time}, input "
            f"{' x '.join(map(str, anatomy.input_shape(model)))}) but {what} cover {patches}: "
            "they belong to another input length"
        )


def key_priors_of(model: nn.Module) -> list[torch.Tensor]:
    """The learned prior of every layer as probabilities over the patch keys, per head: one
    (h, N) tensor per layer, each row summing to 1 (``softmax`` of the log-prior: our choice of
    reading, since the log-prior is relative to the CLS and distillation keys' fixed 0)."""
    if not isinstance(model, KeyPriorASTForAudioClassification):
        raise ModelError(f"{type(model).__name__} has no key priors; add them with add_key_priors")
    return [keys.log_prior.detach().float().softmax(-1) for keys in model.key_priors]


def _kept_mask(model: nn.Module) -> list[torch.Tensor]:
    """(h, N) booleans per layer: True where the key is kept."""
    masks = []
    for keys in model.key_priors:
        heads, patches = keys.log_prior.shape
        if hasattr(keys, "key_mask"):
            masks.append(keys.key_mask.clone())
        elif hasattr(keys, "key_index"):
            row = torch.zeros(patches, dtype=torch.bool)
            row[keys.key_index[EXTRA_KEYS:].cpu() - EXTRA_KEYS] = True
            masks.append(row.expand(heads, patches).clone())
        else:
            masks.append(torch.ones(heads, patches, dtype=torch.bool))
    return masks


def prior_table(model: nn.Module) -> pd.DataFrame:
    """The priors as a tidy frame, one row per layer, head and patch key: ``layer, head, key,
    frequency, time, prior, log_prior, kept``. ``frequency`` and ``time`` place the key on the
    spectrogram's patch grid (``anatomy.patch_grid``: frequency-major token order); ``prior``
    sums to 1 over a head's keys; ``kept`` is False for a key the model pruned."""
    priors = key_priors_of(model)
    grid = anatomy.patch_grid(model)
    masks = _kept_mask(model)
    frames = []
    for layer, (prior, keys, mask) in enumerate(zip(priors, model.key_priors, masks)):
        heads, patches = prior.shape
        if heads == 0:
            continue
        head, key = np.meshgrid(np.arange(heads), np.arange(patches), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": head.ravel(),
                    "key": key.ravel(),
                    "frequency": key.ravel() // grid.time,
                    "time": key.ravel() % grid.time,
                    "prior": prior.numpy().ravel(),
                    "log_prior": keys.log_prior.detach().float().numpy().ravel(),
                    "kept": mask.numpy().ravel(),
                }
            )
        )
    columns = ["layer", "head", "key", "frequency", "time", "prior", "log_prior", "kept"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@torch.no_grad()
def received_attention_scores(
    model: nn.Module, features: torch.Tensor, *, batch_size: int = 32, progress: Progress | None = None
) -> list[torch.Tensor]:
    """The plain model's mean received attention, the untrained baseline: for each layer, head
    and patch key, the attention it receives averaged over every query token and every clip of
    ``features`` (N_clips, frames, mels). One (h, N) tensor per layer. Runs a copy with eager
    attention (the only kernel that returns the weights); ``model`` is not changed."""
    if getattr(model.config, KEY_FIELD, None) is not None:
        raise ModelError("Received-attention scores are read from the plain model, not one with key priors")
    if len(features) == 0:
        raise ConfigurationError("Received-attention scores need at least one clip, got 0")
    probe = copy.deepcopy(model).eval()
    probe.set_attn_implementation("eager")
    shapes = anatomy.attention_shapes(probe)
    patches = anatomy.patch_grid(probe).patches
    sums = [torch.zeros(s.heads, patches) for s in shapes]
    for start in range(0, len(features), batch_size):
        out = probe(features[start : start + batch_size], output_attentions=True)
        for total, weights in zip(sums, out.attentions):  # weights: (B, h, T, T)
            if weights.shape[1]:
                total += weights[..., EXTRA_KEYS:].float().mean(2).sum(0)  # (h, N)
        if progress is not None:
            progress(min(start + batch_size, len(features)), len(features))
    return [total / len(features) for total in sums]


def random_scores(model: nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """Uniform random scores (h, N) per layer from a generator seeded by ``seed``: the baseline
    that knows nothing."""
    generator = torch.Generator().manual_seed(seed)
    patches = anatomy.patch_grid(model).patches
    return [torch.rand(s.heads, patches, generator=generator) for s in anatomy.attention_shapes(model)]
