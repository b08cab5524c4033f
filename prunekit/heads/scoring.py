"""Importance scores for every head and channel of every attention block, as one tidy frame.

One contract for every scorer: ``score(model, scorer, data=None, **options) -> DataFrame`` in
long form, columns ``layer, group, matrix, head, channel, scorer, score`` (higher = more
important). Per layer and head there are

* channel rows (``channel`` = c): group ``qk`` with matrix ``q`` (row r of W_q), ``k`` (row r of
  W_k) and ``pair`` (the QK unit); group ``vo`` with ``v`` (row r of W_v), ``o`` (column r of
  W_o) and ``pair`` (the VO unit), where r = h * D + c;
* head rows (``channel`` = <NA>): the same six, for the head's whole slice, and group ``head``,
  matrix ``pair``: the whole head.

Scorers (SCIENCE.md section 1): ``magnitude`` (L1, or L2 with ``norm="l2"``), ``fisher`` (the
paper's: squared batch-mean gradients, over whole batches), ``fisher-sample`` (squared per-clip gradients),
``fisher-gate`` (squared per-clip gradient of a multiplicative gate on each unit), ``taylor``
(|sum of weight x gradient| over the unit) and ``random`` (seeded; the floor). The gradient
scorers run on a copy of the model in eval mode, so the model passed in is never changed and
keeps no gradients or hooks. Results are cached on disk keyed by the model's weights, the data
and the options.
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunekit.data.datasets import label_indices
from prunekit.data.features import clip_features
from prunekit.errors import ConfigurationError, DatasetError
from prunekit.models import anatomy
from prunekit.progress import Progress
from prunekit.store import atomic_write_bytes, cache_dir, content_key

SCORERS = ("magnitude", "fisher", "fisher-sample", "fisher-gate", "taylor", "random")
GRADIENT_SCORERS = frozenset({"fisher", "fisher-sample", "fisher-gate", "taylor"})
COLUMNS = ("layer", "group", "matrix", "head", "channel", "scorer", "score")
FISHER_EPS = 1e-6  # added to every weight's Fisher, as in the paper's code
SCORES_VERSION = 2  # bump when a scorer's maths changes, so old cached scores are not reused
# (2: Fisher averages over whole batches only)
_MATRICES = ("q", "k", "v", "o")


@dataclass(frozen=True, eq=False)
class ScoringData:
    """Features and targets of the clips a gradient scorer sees.

    features: (N, frames, mels); targets: (N,) class indices, or (N, C) in {0, 1} for
    multi-label data (the loss is then binary cross-entropy).
    """

    features: torch.Tensor
    targets: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        if self.features.ndim != 3:
            raise ConfigurationError(f"features must be (N, frames, mels), got shape {tuple(self.features.shape)}")
        if len(self.features) != len(self.targets):
            raise ConfigurationError(f"{len(self.features)} feature rows but {len(self.targets)} targets")
        if len(self.features) == 0:
            raise ConfigurationError("No clips to score with: the data is empty")

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for t in (self.features, self.targets):
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.detach().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()[:20]


def scoring_data(dataset, feature_extractor, labels: Sequence[str], split: str = "validation",
                 clips: int = 1000, seed: int = 0, progress: Progress | None = None) -> ScoringData:
    """Up to ``clips`` clips of ``split`` (a seeded random subset when there are more), featurised
    with the model's extractor (cached on disk)."""
    if clips < 1:
        raise ConfigurationError(f"Need at least 1 clip to score with, got clips={clips}")
    pool = dataset.split(split)
    if not pool:
        raise DatasetError(f"The {split!r} split of {dataset.name} has no clips")
    if len(pool) > clips:
        pick = np.sort(np.random.default_rng(seed).choice(len(pool), clips, replace=False))
        pool = [pool[i] for i in pick]
    targets = torch.as_tensor(label_indices(pool, labels))
    features = clip_features(pool, feature_extractor, progress=progress)
    return ScoringData(features, targets, name=f"{dataset.name}:{split}:{len(pool)}")


# --- the public entry point ----------------------------------------------------------------------
def score(model: nn.Module, scorer: str, data: ScoringData | None = None, *, batch_size: int = 32,
          norm: str = "l1", seed: int = 0, progress: Progress | None = None,
          cache: bool = True) -> pd.DataFrame:
    """Score every attention unit of ``model`` with ``scorer``; see the module docstring.

    ``data`` is needed by the gradient scorers. ``norm`` ("l1" or "l2") is magnitude's,
    ``seed`` random's. ``progress(done_clips, total_clips)`` is called as batches finish.
    ``frame.attrs["base"]`` holds the model's attention shape (what ``make_plan`` needs).
    """
    if scorer not in SCORERS:
        raise ConfigurationError(f"Unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}")
    if norm not in ("l1", "l2"):
        raise ConfigurationError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    if scorer in GRADIENT_SCORERS and data is None:
        raise ConfigurationError(f"The {scorer} scorer needs data (see prunekit.scoring.scoring_data)")
    anatomy.ensure_prunable(model)
    options = {"magnitude": {"norm": norm}, "random": {"seed": seed}}.get(scorer, {"batch_size": batch_size})
    uses_data = scorer in GRADIENT_SCORERS
    key = content_key(SCORES_VERSION, scorer, options, model_fingerprint(model),
                      data.fingerprint() if uses_data else None)
    path = cache_dir() / "scores" / f"{key}.parquet"
    frame = _read_cached(path) if cache else None
    if frame is None:
        frame = _compute(model, scorer, data, batch_size=batch_size, norm=norm, seed=seed, progress=progress)
        if cache:
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(path, buffer.getvalue())
    elif progress is not None and uses_data:
        progress(len(data.features), len(data.features))
    frame.attrs["base"] = [
        {"layer": s.layer, "heads": s.heads, "qk_dim": s.qk_dim, "v_dim": s.v_dim, "hidden": s.hidden}
        for s in anatomy.attention_shapes(model)
    ]
    return frame


def model_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes, bytes) and the attention structure."""
    digest = hashlib.sha256(repr(anatomy.structure_of(model)).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def _read_cached(path) -> pd.DataFrame | None:
    """The cached frame, or None when it is missing or damaged (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # truncated or corrupt file: never trust it
        return None
    if tuple(frame.columns) != COLUMNS or frame.empty or frame["score"].isna().any():
        return None
    frame["channel"] = frame["channel"].astype("Int64")
    return frame


def _compute(model, scorer, data, *, batch_size, norm, seed, progress) -> pd.DataFrame:
    shapes = anatomy.attention_shapes(model)
    if scorer == "magnitude":
        return _tidy(shapes, scorer, _magnitude_rows(model, norm), combine="l2" if norm == "l2" else "mean")
    if scorer == "random":
        return _random(shapes, seed)
    if scorer == "fisher-gate":
        return _gate_fisher(model, data, batch_size, progress)
    if scorer == "fisher":
        per_weight = _batch_fisher(model, data, batch_size, progress)
        return _tidy(shapes, scorer, _rows_of(per_weight), combine="sum")
    if scorer == "fisher-sample":
        per_weight = _sample_fisher(model, data, batch_size, progress)
        return _tidy(shapes, scorer, _rows_of(per_weight), combine="sum")
    signed = _taylor(model, data, batch_size, progress)
    return _tidy(shapes, scorer, _rows_of(signed), combine="abs-sum")


# --- per-weight statistics ---------------------------------------------------------------------
def _weights(model: nn.Module, layer: int) -> dict[str, torch.Tensor]:
    attn = anatomy.attention(model, layer)
    return {m: getattr(attn, f"{m}_proj").weight for m in _MATRICES}


def _rows_of(per_weight: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    """Sum a per-weight statistic over each unit row: rows of W_q/W_k/W_v, columns of W_o."""
    return [{m: (w.sum(0) if m == "o" else w.sum(1)).double().numpy() for m, w in layer.items()}
            for layer in per_weight]


def _magnitude_rows(model: nn.Module, norm: str) -> list[dict[str, np.ndarray]]:
    """Per unit row: the L1 norm, or for L2 the squared L2 norm (summed, then rooted, by _tidy)."""
    with torch.no_grad():
        return _rows_of([{m: (w.abs() if norm == "l1" else w.square()) for m, w in _weights(model, i).items()}
                         for i in range(len(anatomy.layers(model)))])


def _work_copy(model: nn.Module, *, weight_grads: bool = True) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """A copy in eval mode where only the attention weights require grad (none at all when
    ``weight_grads`` is False: gate gradients need no weight gradients)."""
    work = copy.deepcopy(model).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    # A 0-head layer has empty projections that take no part in the forward pass: skip it.
    weights = [_weights(work, s.layer) if s.heads else {} for s in anatomy.attention_shapes(work)]
    for layer in weights:
        for w in layer.values():
            w.requires_grad_(weight_grads)
    return work, weights


def _loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    if targets.ndim == 2:  # multi-label: per-clip loss is the mean over classes
        per_clip = nn.functional.binary_cross_entropy_with_logits(
            logits, targets.float(), reduction="none").mean(1)
    else:
        per_clip = nn.functional.cross_entropy(logits, targets, reduction="none")
    return per_clip.mean() if reduction == "mean" else per_clip.sum()


def _batches(data: ScoringData, batch_size: int, progress: Progress | None):
    n = len(data.features)
    for start in range(0, n, batch_size):
        yield data.features[start:start + batch_size], data.targets[start:start + batch_size]
        if progress is not None:
            progress(min(start + batch_size, n), n)


def _flat(weights: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    return [w for layer in weights for w in layer.values()]


def _unflat(values: Sequence[torch.Tensor], like: list[dict]) -> list[dict[str, torch.Tensor]]:
    it = iter(values)
    return [{m: next(it) for m in layer} for layer in like]


def _batch_gradient_sums(model, data, batch_size, progress, *, square: bool, whole_batches: bool = False):
    """Per attention weight, the sum over batches of the gradient of the batch-mean loss
    (squared first when ``square``); returns (the work copy's weights, the sums, the batch count).

    ``whole_batches`` leaves out the clips of a partial last batch, as the authors' code does
    (B = floor(N / batch_size) batches); data smaller than one batch is one batch of N clips.
    """
    if whole_batches and len(data.features) > batch_size:
        n = len(data.features) // batch_size * batch_size
        data = ScoringData(data.features[:n], data.targets[:n], data.name)
    work, weights = _work_copy(model)
    params = _flat(weights)
    acc = [torch.zeros_like(p) for p in params]
    batches = 0
    for x, y in _batches(data, batch_size, progress):
        grads = torch.autograd.grad(_loss(work(x).logits, y, "mean"), params)
        for a, g in zip(acc, grads):
            a.addcmul_(g, g) if square else a.add_(g)
        batches += 1
    return weights, acc, batches


def _batch_fisher(model, data, batch_size, progress) -> list[dict[str, torch.Tensor]]:
    """F(w) = mean over batches of (d mean-batch-loss / dw)^2 + 1e-6 (the paper's Fisher), over
    whole batches only: a partial last batch would enter the mean with a full batch's weight while
    its squared mean gradient is larger (fewer clips average out less noise), so it is dropped."""
    weights, acc, batches = _batch_gradient_sums(model, data, batch_size, progress, square=True,
                                                 whole_batches=True)
    return _unflat([a / batches + FISHER_EPS for a in acc], weights)


def _sample_fisher(model, data, batch_size, progress) -> list[dict[str, torch.Tensor]]:
    """F(w) = mean over clips of (d clip-loss / dw)^2 + 1e-6 (the textbook empirical Fisher).

    A clip's gradient of a Linear weight is sum_t g_t x_t^T (output grad times input, over
    tokens); hooks keep each projection's input and the backward pass gives its output grad,
    so every clip's gradient comes from one backward pass over the batch.
    """
    work, weights = _work_copy(model)
    linears = [getattr(anatomy.attention(work, i), f"{m}_proj")
               for i, layer in enumerate(weights) if layer for m in _MATRICES]
    inputs: list = [None] * len(linears)
    outputs: list = [None] * len(linears)

    def keep(index: int):
        def hook(module, args, out):
            inputs[index] = args[0].detach()  # (B, T, in)
            outputs[index] = out  # (B, T, out)
        return hook

    handles = [lin.register_forward_hook(keep(i)) for i, lin in enumerate(linears)]
    acc = [torch.zeros_like(lin.weight) for lin in linears]
    try:
        for x, y in _batches(data, batch_size, progress):
            loss = _loss(work(x).logits, y, "sum")  # sum: each clip's own gradient, unscaled
            grads = torch.autograd.grad(loss, outputs)
            for a, g, inp in zip(acc, grads, inputs):
                per_clip = torch.einsum("bto,bti->boi", g, inp)  # (B, out, in)
                a.add_(per_clip.square().sum(0))
    finally:
        for handle in handles:
            handle.remove()
    n = len(data.features)
    return _unflat([a / n + FISHER_EPS for a in acc], weights)


def _taylor(model, data, batch_size, progress) -> list[dict[str, torch.Tensor]]:
    """Per weight w * dL/dw with L the mean of the batch-mean losses (signed; _tidy sums each
    unit, then takes the absolute value: first-order change of the loss when the unit goes)."""
    weights, acc, batches = _batch_gradient_sums(model, data, batch_size, progress, square=False)
    return _unflat([w.detach() * a / batches for w, a in zip(_flat(weights), acc)], weights)


def _gate_fisher(model, data, batch_size, progress) -> pd.DataFrame:
    """Gates of 1 on every Q/K channel (scaling its q.k term) and V/O channel (scaling its value
    on the way into W_o), one set per clip, so one backward pass gives each clip's gate gradient.
    Unit score = sum over clips of its squared gate gradient; a head's = sum over clips of the
    squared sum of its channel gradients (the gradient of a gate on the whole head)."""
    shapes = anatomy.attention_shapes(model)
    live = [s for s in shapes if s.heads]  # a 0-head layer has no units to gate
    work, _ = _work_copy(model, weight_grads=False)
    qk_acc = [np.zeros((s.heads, s.qk_dim)) for s in shapes]
    vo_acc = [np.zeros((s.heads, s.v_dim)) for s in shapes]
    head_acc = {g: [np.zeros(s.heads) for s in shapes] for g in ("qk", "vo")}
    for x, y in _batches(data, batch_size, progress):
        gates, handles = [], []
        for s in live:
            attn = anatomy.attention(work, s.layer)
            qk = torch.ones(len(x), s.heads * s.qk_dim, requires_grad=True)  # (B, h*dqk)
            vo = torch.ones(len(x), s.heads * s.v_dim, requires_grad=True)  # (B, h*dv)
            handles.append(attn.q_proj.register_forward_hook(lambda m, a, out, g=qk: out * g[:, None, :]))
            handles.append(attn.o_proj.register_forward_pre_hook(lambda m, a, g=vo: (a[0] * g[:, None, :],)))
            gates += [qk, vo]
        try:
            grads = torch.autograd.grad(_loss(work(x).logits, y, "sum"), gates)
        finally:
            for handle in handles:
                handle.remove()
        for s, g_qk, g_vo in zip(live, grads[0::2], grads[1::2]):
            g_qk = g_qk.double().view(len(x), s.heads, s.qk_dim)  # (B, h, dqk)
            g_vo = g_vo.double().view(len(x), s.heads, s.v_dim)  # (B, h, dv)
            qk_acc[s.layer] += g_qk.square().sum(0).numpy()
            vo_acc[s.layer] += g_vo.square().sum(0).numpy()
            head_acc["qk"][s.layer] += g_qk.sum(2).square().sum(0).numpy()
            head_acc["vo"][s.layer] += g_vo.sum(2).square().sum(0).numpy()
    parts = []
    for s in shapes:
        if s.heads == 0:
            continue
        qk, vo = qk_acc[s.layer], vo_acc[s.layer]
        # A gate on row r of W_q or of W_k scales the same q.k term: the two scores coincide.
        for group, matrices, unit in (("qk", ("q", "k", "pair"), qk), ("vo", ("v", "o", "pair"), vo)):
            for m in matrices:
                parts.append(_channel_block(s.layer, group, m, unit, "fisher-gate"))
                parts.append(_head_block(s.layer, group, m, head_acc[group][s.layer], "fisher-gate"))
        parts.append(_head_block(s.layer, "head", "pair", head_acc["vo"][s.layer], "fisher-gate"))
    return _frame(parts)


# --- from unit rows to the tidy frame ------------------------------------------------------------
def _tidy(shapes, scorer: str, rows: list[dict[str, np.ndarray]], combine: str) -> pd.DataFrame:
    """Turn per-row statistics into channel, pair and head scores.

    combine "sum" (Fisher): pair = q + k, head = sum of slices. "mean" (L1 magnitude): row
    norms, pair and head = means of the matrices' norms (SCIENCE.md). "l2": rows hold squared
    norms; a slice's norm is the root of their sum. "abs-sum" (Taylor): rows hold signed sums;
    every unit's score is the absolute value of its total.
    """
    parts = []
    for s, stat in zip(shapes, rows):
        if s.heads == 0:
            continue
        per = {m: stat[m].reshape(s.heads, -1) for m in _MATRICES}  # (h, D) each
        slices = {m: per[m].sum(1) for m in _MATRICES}  # (h,)
        if combine == "l2":
            per = {m: np.sqrt(v) for m, v in per.items()}
            slices = {m: np.sqrt(v) for m, v in slices.items()}
        if combine == "abs-sum":
            chan = {m: np.abs(per[m]) for m in _MATRICES}
            chan["qk"], chan["vo"] = np.abs(per["q"] + per["k"]), np.abs(per["v"] + per["o"])
            head = {m: np.abs(slices[m]) for m in _MATRICES}
            head["qk"], head["vo"] = np.abs(slices["q"] + slices["k"]), np.abs(slices["v"] + slices["o"])
            head["all"] = np.abs(sum(slices.values()))
        else:
            pair = (lambda a, b: a + b) if combine == "sum" else (lambda a, b: (a + b) / 2)
            chan = dict(per, qk=pair(per["q"], per["k"]), vo=pair(per["v"], per["o"]))
            head = dict(slices, qk=pair(slices["q"], slices["k"]), vo=pair(slices["v"], slices["o"]))
            total = sum(slices.values())
            head["all"] = total if combine == "sum" else total / 4
        for group, a, b in (("qk", "q", "k"), ("vo", "v", "o")):
            for m in (a, b, group):
                name = "pair" if m == group else m
                parts.append(_channel_block(s.layer, group, name, chan[m], scorer))
                parts.append(_head_block(s.layer, group, name, head[m], scorer))
        parts.append(_head_block(s.layer, "head", "pair", head["all"], scorer))
    return _frame(parts)


def _random(shapes, seed: int) -> pd.DataFrame:
    """Independent uniform scores for every row (the floor every scorer must beat)."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in shapes:
        if s.heads == 0:
            continue
        for group, dim, matrices in (("qk", s.qk_dim, ("q", "k", "pair")), ("vo", s.v_dim, ("v", "o", "pair"))):
            for m in matrices:
                parts.append(_channel_block(s.layer, group, m, rng.random((s.heads, dim)), "random"))
                parts.append(_head_block(s.layer, group, m, rng.random(s.heads), "random"))
        parts.append(_head_block(s.layer, "head", "pair", rng.random(s.heads), "random"))
    return _frame(parts)


def _channel_block(layer: int, group: str, matrix: str, values: np.ndarray, scorer: str) -> pd.DataFrame:
    heads, dim = values.shape  # (h, D)
    return pd.DataFrame({
        "layer": layer, "group": group, "matrix": matrix,
        "head": np.repeat(np.arange(heads), dim), "channel": np.tile(np.arange(dim), heads),
        "scorer": scorer, "score": values.reshape(-1).astype(np.float64),
    })


def _head_block(layer: int, group: str, matrix: str, values: np.ndarray, scorer: str) -> pd.DataFrame:
    return pd.DataFrame({
        "layer": layer, "group": group, "matrix": matrix, "head": np.arange(len(values)),
        "channel": pd.NA, "scorer": scorer, "score": np.asarray(values, dtype=np.float64),
    })


def _frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(COLUMNS))
    frame["channel"] = frame["channel"].astype("Int64")
    frame["layer"] = frame["layer"].astype(np.int64)
    frame["head"] = frame["head"].astype(np.int64)
    return frame[list(COLUMNS)]
