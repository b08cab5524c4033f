"""What the attention looks at, for one clip: a head's CLS attention and attention rollout, on
the patch grid of the spectrogram.

``clip_attention`` runs one clip through a copy of the model with eager attention (the only
kernel that returns attention weights; the model passed in keeps its own) and keeps every
layer's weights. From them:

* ``cls_map(weights, grid, layer, head)``: the CLS token's attention to each patch in one head
  (what that head gathers into the summary the classifier reads), as a (frequency, time) grid;
* ``rollout_map(weights, grid)``: attention rollout (Abnar & Zuidema, 2020): per layer the
  head-mean attention with the residual added (0.5 A + 0.5 I, rows renormalised), multiplied
  through the layers; the CLS row over the patches says which parts of the input reach the
  summary through all layers. A layer with no heads (pruned away) passes its input on: identity.

``paint`` spreads patch values over (mel bins, frames) so a map can be drawn on the spectrogram
(overlapping patches average).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from prunekit.devices import model_device
from prunekit.errors import ConfigurationError
from prunekit.models.family import PatchGrid

__all__ = ["clip_attention", "cls_map", "paint", "rollout_map"]


@torch.no_grad()
def clip_attention(model: nn.Module, features: torch.Tensor) -> list[np.ndarray]:
    """Attention weights of every layer for one clip: a list of (heads, T, T) arrays (heads may
    be 0 in a pruned layer). ``features``: (frames, mels), as the feature extractor gives them."""
    if features.ndim != 2:
        raise ConfigurationError(
            f"clip_attention takes one clip's features (frames, mels), got {tuple(features.shape)}"
        )
    probe = copy.deepcopy(model).eval()
    probe.set_attn_implementation("eager")
    out = probe(
        features.unsqueeze(0).to(model_device(probe)), output_attentions=True
    )  # runs where the model is
    return [a[0].float().cpu().numpy() for a in out.attentions]  # (h, T, T) each


def _grid_of(row: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """A (T,) row over all tokens -> (frequency, time) over the patches."""
    return row[grid.extra : grid.extra + grid.patches].reshape(grid.frequency, grid.time)


def cls_map(weights: list[np.ndarray], grid: PatchGrid, layer: int, head: int) -> np.ndarray:
    """(frequency, time): head ``head`` of layer ``layer``: the CLS token's attention to each patch."""
    if not 0 <= layer < len(weights) or not 0 <= head < weights[layer].shape[0]:
        heads = [w.shape[0] for w in weights]
        raise ConfigurationError(f"No head {head} in layer {layer}: the model has heads per layer {heads}")
    return _grid_of(weights[layer][head, 0], grid)


def rollout_map(weights: list[np.ndarray], grid: PatchGrid) -> np.ndarray:
    """(frequency, time): attention rollout from the CLS token to each patch (see the module)."""
    tokens = weights[0].shape[-1]
    eye = np.eye(tokens)
    flow = eye
    for layer in weights:
        mixed = 0.5 * layer.mean(0) + 0.5 * eye if layer.shape[0] else eye  # (T, T)
        mixed = mixed / mixed.sum(-1, keepdims=True)
        flow = mixed @ flow
    return _grid_of(flow[0], grid)


def paint(values: np.ndarray, grid: PatchGrid, frames: int, mels: int) -> np.ndarray:
    """(mels, frames): each patch's value spread over the bins and frames it covers; where patches
    overlap, their mean; NaN outside every patch."""
    total, count = np.zeros((mels, frames)), np.zeros((mels, frames))
    for f in range(grid.frequency):
        for t in range(grid.time):
            m0, t0 = f * grid.f_stride, t * grid.t_stride
            total[m0 : m0 + grid.size, t0 : t0 + grid.size] += values[f, t]
            count[m0 : m0 + grid.size, t0 : t0 + grid.size] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
