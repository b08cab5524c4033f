"""The scorers, each registered once: adding a scorer is one ``@register`` on a function.

Every scorer has the same contract: ``compute(model, data, options) -> DataFrame`` in the long
form of ``scores.COLUMNS`` (higher = more important). Gradient scorers run on a copy of the model
in eval mode, so the model passed in is never changed and keeps no gradients or hooks. The maths
is in ``docs/methods.md`` (section 1):

* ``magnitude``: L1 norm of each unit's weights (L2 with ``norm="l2"``); pair and head scores are
  means of the matrices' norms, as in the paper's code;
* ``fisher`` (the paper's): squared gradient of the batch-mean loss, averaged over whole batches
  (a partial last batch is left out, as in the authors' code), + 1e-6;
* ``fisher-sample``: squared gradient of each clip's loss, averaged over clips, + 1e-6;
* ``fisher-gate``: squared per-clip gradient of a multiplicative gate on each unit, summed;
* ``taylor``: |sum over the unit of weight x gradient|;
* ``random``: seeded uniform scores, the floor every scorer must beat.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunekit.devices import accumulate_dtype, processes, sum_across
from prunekit.evaluation.metrics import task_loss
from prunekit.heads.scores import ScoringData, channel_rows, concat_rows, head_rows, tidy_scores
from prunekit.models import anatomy
from prunekit.progress import Progress

__all__ = ["FISHER_EPS", "SCORERS", "Scorer", "ScorerOptions", "register"]

FISHER_EPS = 1e-6  # added to every weight's Fisher, as in the paper's code
_MATRICES = ("q", "k", "v", "o")


@dataclass(frozen=True)
class ScorerOptions:
    """Options a scorer may read; ``Scorer.options`` names the ones that change its result."""

    batch_size: int = 32
    norm: str = "l1"  # magnitude: "l1" or "l2"
    seed: int = 0  # random
    progress: Progress | None = None
    device: torch.device | None = None  # where the gradient scorers run (None: the model's device)


@dataclass(frozen=True)
class Scorer:
    """A registered scorer.

    ``needs_data``: reads clips (the gradient scorers). ``over_heads``: how the same-channel
    pattern combines a channel's scores over a layer's heads: "mean" for scores whose scale does
    not grow with the head count (magnitude, random), "sum" for the Fisher/Taylor family.
    ``options``: the ``ScorerOptions`` fields that change the result (they key the disk cache).
    """

    name: str
    compute: Callable[[nn.Module, ScoringData | None, ScorerOptions], pd.DataFrame]
    needs_data: bool
    over_heads: str
    options: tuple[str, ...]
    about: str


SCORERS: dict[str, Scorer] = {}  # name -> Scorer, in the order they are offered


def register(name: str, *, needs_data: bool, over_heads: str, options: Sequence[str], about: str):
    """Decorator: add ``compute`` to ``SCORERS`` under ``name``."""

    def add(compute):
        SCORERS[name] = Scorer(name, compute, needs_data, over_heads, tuple(options), about)
        return compute

    return add


# --- the registered scorers --------------------------------------------------------------------
@register(
    "magnitude",
    needs_data=False,
    over_heads="mean",
    options=("norm",),
    about="size of the weights (L1 norm), no data needed",
)
def _magnitude(model: nn.Module, data: ScoringData | None, options: ScorerOptions) -> pd.DataFrame:
    rows = _magnitude_rows(model, options.norm)
    return tidy_scores(
        anatomy.attention_shapes(model), "magnitude", rows, combine="l2" if options.norm == "l2" else "mean"
    )


@register(
    "fisher",
    needs_data=True,
    over_heads="sum",
    options=("batch_size",),
    about="squared loss gradient per batch (the paper's Fisher)",
)
def _fisher(model: nn.Module, data: ScoringData, options: ScorerOptions) -> pd.DataFrame:
    per_weight = _batch_fisher(model, data, options.batch_size, options.progress, options.device)
    return tidy_scores(anatomy.attention_shapes(model), "fisher", _rows_of(per_weight), combine="sum")


@register(
    "fisher-sample",
    needs_data=True,
    over_heads="sum",
    options=("batch_size",),
    about="squared loss gradient per clip (textbook empirical Fisher)",
)
def _fisher_sample(model: nn.Module, data: ScoringData, options: ScorerOptions) -> pd.DataFrame:
    per_weight = _sample_fisher(model, data, options.batch_size, options.progress, options.device)
    return tidy_scores(anatomy.attention_shapes(model), "fisher-sample", _rows_of(per_weight), combine="sum")


@register(
    "fisher-gate",
    needs_data=True,
    over_heads="sum",
    options=("batch_size",),
    about="squared gradient of a gate on each unit, per clip",
)
def _fisher_gate(model: nn.Module, data: ScoringData, options: ScorerOptions) -> pd.DataFrame:
    return _gate_fisher(model, data, options.batch_size, options.progress, options.device)


@register(
    "taylor",
    needs_data=True,
    over_heads="sum",
    options=("batch_size",),
    about="first-order change of the loss when the unit goes",
)
def _taylor_scores(model: nn.Module, data: ScoringData, options: ScorerOptions) -> pd.DataFrame:
    signed = _taylor(model, data, options.batch_size, options.progress, options.device)
    return tidy_scores(anatomy.attention_shapes(model), "taylor", _rows_of(signed), combine="abs-sum")


@register(
    "random",
    needs_data=False,
    over_heads="mean",
    options=("seed",),
    about="seeded random scores: the floor every scorer must beat",
)
def _random_scores(model: nn.Module, data: ScoringData | None, options: ScorerOptions) -> pd.DataFrame:
    return _random(anatomy.attention_shapes(model), options.seed)


# --- per-weight statistics ---------------------------------------------------------------------
def _weights(model: nn.Module, layer: int) -> dict[str, torch.Tensor]:
    return {m: linear.weight for m, linear in zip(_MATRICES, anatomy.projections(model, layer))}


def _rows_of(per_weight: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    """Sum a per-weight statistic over each unit row: rows of W_q/W_k/W_v, columns of W_o."""
    return [
        {m: (w.sum(0) if m == "o" else w.sum(1)).cpu().double().numpy() for m, w in layer.items()}
        for layer in per_weight
    ]


def _magnitude_rows(model: nn.Module, norm: str) -> list[dict[str, np.ndarray]]:
    """Per unit row: the L1 norm, or for L2 the squared L2 norm (summed, then rooted, by _tidy)."""
    with torch.no_grad():
        return _rows_of(
            [
                {m: (w.abs() if norm == "l1" else w.square()) for m, w in _weights(model, s.layer).items()}
                for s in anatomy.attention_shapes(model)
            ]
        )


def _work_copy(
    model: nn.Module, device: torch.device | None = None, *, weight_grads: bool = True
) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """A copy in eval mode on ``device`` (None: the model's) where only the attention weights
    require grad (none at all when ``weight_grads`` is False: gate gradients need no weight
    gradients)."""
    work = copy.deepcopy(model).eval()
    if device is not None:
        work.to(device)
    for p in work.parameters():
        p.requires_grad_(False)
    # A 0-head layer has empty projections that take no part in the forward pass: skip it.
    weights = [_weights(work, s.layer) if s.heads else {} for s in anatomy.attention_shapes(work)]
    for layer in weights:
        for w in layer.values():
            w.requires_grad_(weight_grads)
    return work, weights


def _batches(data: ScoringData, batch_size: int, progress: Progress | None, device: torch.device):
    """This process's batches on ``device``: all of them, or in a data-parallel launch every
    world-th one (rank r takes batches r, r + world, ...), so the ranks' sums add up to the
    single-process sum over the same batches. Progress counts the clips of all ranks."""
    n = len(data.features)
    ranks = processes()
    for index in ranks.mine(-(-n // batch_size)):
        start = index * batch_size
        x = data.features[start : start + batch_size].to(device)  # (B, frames, mels)
        yield x, data.targets[start : start + batch_size].to(device)
        if progress is not None:
            progress(min((index + ranks.world - ranks.rank) * batch_size, n), n)


def _device_of(work: nn.Module) -> torch.device:
    return next(work.parameters()).device


def _flat(weights: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    return [w for layer in weights for w in layer.values()]


def _unflat(values: Sequence[torch.Tensor], like: list[dict]) -> list[dict[str, torch.Tensor]]:
    it = iter(values)
    return [{m: next(it) for m in layer} for layer in like]


def _batch_gradient_sums(
    model, data, batch_size, progress, device=None, *, square: bool, whole_batches: bool = False
):
    """Per attention weight, the sum over batches of the gradient of the batch-mean loss
    (squared first when ``square``); returns (the work copy's weights, the sums, the batch count).
    The sums are float64 (float32 on MPS) whatever the compute precision, and in a data-parallel
    launch are summed over the ranks, each of which computed its share of the batches.

    ``whole_batches`` leaves out the clips of a partial last batch, as the authors' code does
    (B = floor(N / batch_size) batches); data smaller than one batch is one batch of N clips.
    """
    if whole_batches and len(data.features) > batch_size:
        n = len(data.features) // batch_size * batch_size
        data = ScoringData(data.features[:n], data.targets[:n], data.name)
    work, weights = _work_copy(model, device)
    where = _device_of(work)
    params = _flat(weights)
    acc = [torch.zeros_like(p, dtype=accumulate_dtype(where)) for p in params]
    batches = torch.zeros(1, dtype=torch.float64 if where.type != "mps" else torch.float32, device=where)
    for x, y in _batches(data, batch_size, progress, where):
        grads = torch.autograd.grad(task_loss(work(x).logits, y, "mean"), params)
        for a, g in zip(acc, grads):
            g = g.to(a.dtype)
            a.addcmul_(g, g) if square else a.add_(g)
        batches += 1
    sum_across([*acc, batches])
    return weights, acc, int(batches.item())


def _batch_fisher(model, data, batch_size, progress, device=None) -> list[dict[str, torch.Tensor]]:
    """F(w) = mean over batches of (d mean-batch-loss / dw)^2 + 1e-6 (the paper's Fisher), over
    whole batches only: a partial last batch would enter the mean with a full batch's weight while
    its squared mean gradient is larger (fewer clips average out less noise), so it is dropped."""
    weights, acc, batches = _batch_gradient_sums(
        model, data, batch_size, progress, device, square=True, whole_batches=True
    )
    return _unflat([a / batches + FISHER_EPS for a in acc], weights)


def _sample_fisher(model, data, batch_size, progress, device=None) -> list[dict[str, torch.Tensor]]:
    """F(w) = mean over clips of (d clip-loss / dw)^2 + 1e-6 (the textbook empirical Fisher).

    A clip's gradient of a Linear weight is sum_t g_t x_t^T (output grad times input, over
    tokens); hooks keep each projection's input and the backward pass gives its output grad,
    so every clip's gradient comes from one backward pass over the batch.
    """
    work, weights = _work_copy(model, device)
    where = _device_of(work)
    linears = [linear for i, layer in enumerate(weights) if layer for linear in anatomy.projections(work, i)]
    inputs: list = [None] * len(linears)
    outputs: list = [None] * len(linears)

    def keep(index: int):
        def hook(module, args, out):
            inputs[index] = args[0].detach()  # (B, T, in)
            outputs[index] = out  # (B, T, out)

        return hook

    handles = [lin.register_forward_hook(keep(i)) for i, lin in enumerate(linears)]
    acc = [torch.zeros_like(lin.weight, dtype=accumulate_dtype(where)) for lin in linears]
    try:
        for x, y in _batches(data, batch_size, progress, where):
            loss = task_loss(work(x).logits, y, "sum")  # sum: each clip's own gradient, unscaled
            grads = torch.autograd.grad(loss, outputs)
            for a, g, inp in zip(acc, grads, inputs):
                per_clip = torch.einsum("bto,bti->boi", g, inp)  # (B, out, in)
                a.add_(per_clip.to(a.dtype).square().sum(0))
    finally:
        for handle in handles:
            handle.remove()
    sum_across(acc)
    n = len(data.features)
    return _unflat([a / n + FISHER_EPS for a in acc], weights)


def _taylor(model, data, batch_size, progress, device=None) -> list[dict[str, torch.Tensor]]:
    """Per weight w * dL/dw with L the mean of the batch-mean losses (signed; _tidy sums each
    unit, then takes the absolute value: first-order change of the loss when the unit goes)."""
    weights, acc, batches = _batch_gradient_sums(model, data, batch_size, progress, device, square=False)
    return _unflat([w.detach().to(a.dtype) * a / batches for w, a in zip(_flat(weights), acc)], weights)


def _gate_fisher(model, data, batch_size, progress, device=None) -> pd.DataFrame:
    """Gates of 1 on every Q/K channel (scaling its q.k term) and V/O channel (scaling its value
    on the way into W_o), one set per clip, so one backward pass gives each clip's gate gradient.
    Unit score = sum over clips of its squared gate gradient; a head's = sum over clips of the
    squared sum of its channel gradients (the gradient of a gate on the whole head)."""
    shapes = anatomy.attention_shapes(model)
    live = [s for s in shapes if s.heads]  # a 0-head layer has no units to gate
    work, _ = _work_copy(model, device, weight_grads=False)
    where = _device_of(work)
    qk_acc = [np.zeros((s.heads, s.qk_dim)) for s in shapes]
    vo_acc = [np.zeros((s.heads, s.v_dim)) for s in shapes]
    head_acc = {g: [np.zeros(s.heads) for s in shapes] for g in ("qk", "vo")}
    for x, y in _batches(data, batch_size, progress, where):
        gates, handles = [], []
        for s in live:
            proj = anatomy.projections(work, s.layer)
            qk = torch.ones(len(x), s.heads * s.qk_dim, device=where, requires_grad=True)  # (B, h*dqk)
            vo = torch.ones(len(x), s.heads * s.v_dim, device=where, requires_grad=True)  # (B, h*dv)
            handles.append(proj.q.register_forward_hook(lambda m, a, out, g=qk: out * g[:, None, :]))
            handles.append(proj.o.register_forward_pre_hook(lambda m, a, g=vo: (a[0] * g[:, None, :],)))
            gates += [qk, vo]
        try:
            grads = torch.autograd.grad(task_loss(work(x).logits, y, "sum"), gates)
        finally:
            for handle in handles:
                handle.remove()
        for s, g_qk, g_vo in zip(live, grads[0::2], grads[1::2]):
            g_qk = g_qk.cpu().double().view(len(x), s.heads, s.qk_dim)  # (B, h, dqk)
            g_vo = g_vo.cpu().double().view(len(x), s.heads, s.v_dim)  # (B, h, dv)
            qk_acc[s.layer] += g_qk.square().sum(0).numpy()
            vo_acc[s.layer] += g_vo.square().sum(0).numpy()
            head_acc["qk"][s.layer] += g_qk.sum(2).square().sum(0).numpy()
            head_acc["vo"][s.layer] += g_vo.sum(2).square().sum(0).numpy()
    sums = [torch.from_numpy(a) for a in (*qk_acc, *vo_acc, *head_acc["qk"], *head_acc["vo"])]
    sum_across(sums)  # in place: the numpy arrays share the tensors' memory
    parts = []
    for s in shapes:
        if s.heads == 0:
            continue
        qk, vo = qk_acc[s.layer], vo_acc[s.layer]
        # A gate on row r of W_q or of W_k scales the same q.k term: the two scores coincide.
        for group, matrices, unit in (("qk", ("q", "k", "pair"), qk), ("vo", ("v", "o", "pair"), vo)):
            for m in matrices:
                parts.append(channel_rows(s.layer, group, m, unit, "fisher-gate"))
                parts.append(head_rows(s.layer, group, m, head_acc[group][s.layer], "fisher-gate"))
        parts.append(head_rows(s.layer, "head", "pair", head_acc["vo"][s.layer], "fisher-gate"))
    return concat_rows(parts)


def _random(shapes, seed: int) -> pd.DataFrame:
    """Independent uniform scores for every row (the floor every scorer must beat)."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in shapes:
        if s.heads == 0:
            continue
        for group, dim, matrices in (
            ("qk", s.qk_dim, ("q", "k", "pair")),
            ("vo", s.v_dim, ("v", "o", "pair")),
        ):
            for m in matrices:
                parts.append(channel_rows(s.layer, group, m, rng.random((s.heads, dim)), "random"))
                parts.append(head_rows(s.layer, group, m, rng.random(s.heads), "random"))
        parts.append(head_rows(s.layer, "head", "pair", rng.random(s.heads), "random"))
    return concat_rows(parts)
