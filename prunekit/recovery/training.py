"""The training loop LoRA recovery and token fine-tuning share: AdamW with linear warm-up then
cosine, validation at evenly spread steps (always at the end of an epoch), and the weights of the
lowest validation loss seen (the starting point included) kept.

What differs between the two is passed in: which parameters train, how one batch's loss is
computed (adapters and SpecAugment; a shrinking keep rate), how the kept weights are saved and
restored, and any extra column of the history.

Devices and processes: the model trains where it is (``device=`` moves it first), each batch
moves with it, and ``precision="bf16"`` computes the forward and backward passes under autocast.
In a data-parallel launch (``prunekit.devices.start_processes``) every rank draws the same
shuffled order, takes its slice of each batch, and the gradients are summed over the ranks
before the step (each rank's loss weighted by its share of the batch), which is DDP's
arithmetic: every rank takes the step a single process would take on the whole batch, so the
ranks' weights stay equal. Validation is sharded and gathered (``predict_logits``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from prunekit.devices import autocast, check_precision, place, processes, sum_across
from prunekit.evaluation.metrics import multilabel_metrics, predict_logits, task_loss
from prunekit.heads.scores import ScoringData
from prunekit.progress import Progress

__all__ = ["LoopSettings", "fit_with_checkpoints"]


@dataclass(frozen=True)
class LoopSettings:
    """The optimiser and schedule settings both configs carry."""

    lr: float
    weight_decay: float
    warmup_fraction: float
    epochs: int
    batch_size: int
    validations_per_epoch: int


def fit_with_checkpoints(
    model: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    settings: LoopSettings,
    *,
    batch_loss: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    save: Callable[[], dict],
    restore: Callable[[dict], None],
    extra: Callable[[int], dict] = lambda step: {},
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    param_groups: list[dict] | None = None,
    stop: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """Train ``model``'s parameters that require grad, in place; leave it holding the weights of the
    lowest validation loss (``save``/``restore`` capture and put back what trains). Returns one
    row per validation: ``step, epoch, <extra(step)>, train_loss, lr, val_loss, val_accuracy,
    kept`` (``val_mAP`` instead of ``val_accuracy`` for multi-label data, whose ``val_loss`` is
    binary cross-entropy); row 0 is the starting point. ``batch_loss(x, y, step)`` is the loss of
    one batch (x: (B, frames, mels), y: (B,) or (B, C)) at optimiser step ``step``; the model is
    in train mode. ``device``/``precision``: see the module's docstring.

    ``param_groups``: AdamW parameter groups, each may carry its own ``lr`` (the schedule scales
    them alike); default: every parameter that requires grad, at ``settings.lr``. ``stop()`` is
    asked after every step (on every rank; one rank saying True stops them all at the same step);
    when it says True the loop validates (unless it just did) and ends,
    keeping the best checkpoint so far; the history's ``attrs["stopped"]`` says so."""
    check_precision(precision)
    where = place(model, device)
    ranks = processes()
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(train.features) / settings.batch_size)
    total = per_epoch * settings.epochs
    schedule = get_cosine_schedule_with_warmup(optimizer, round(settings.warmup_fraction * total), total)
    checks = _checkpoints(per_epoch, settings.epochs, settings.validations_per_epoch)
    first = {"step": 0, "epoch": 0.0, **extra(0), "train_loss": math.nan, "lr": 0.0}
    history = [_validate(model, validation, settings.batch_size, first, precision)]
    best = (history[0]["val_loss"], save(), 0)
    losses: list[float] = []
    step = 0
    stopped = False
    for _epoch in range(settings.epochs):
        if stopped:
            break
        order = torch.randperm(len(train.features))
        if ranks.world > 1:  # rank 0's order: augmentation may have drawn unequal numbers elsewhere
            torch.distributed.broadcast_object_list(box := [order], src=0)
            order = box[0]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            mine = batch.tensor_split(ranks.world)[ranks.rank]  # this rank's slice of the batch
            share = len(mine) / len(batch)  # its weight in the batch-mean loss
            if not len(mine):  # more ranks than clips: a zero-weighted clip keeps the ranks in step
                mine = batch[:1]
            model.train()
            with autocast(where, precision):
                loss = batch_loss(train.features[mine].to(where), train.targets[mine].to(where), step)
            optimizer.zero_grad(set_to_none=True)
            (loss.float() * share).backward()
            if ranks.world > 1:
                _sum_gradients(params)
            optimizer.step()
            total_loss = (loss.detach().float() * share).reshape(1)
            sum_across([total_loss])  # the whole batch's mean loss
            losses.append(total_loss.item())
            lr = schedule.get_last_lr()[0]
            schedule.step()
            step += 1
            stopped = stop is not None and step < total and _any_rank(stop())
            if step in checks or stopped:
                row = {
                    "step": step,
                    "epoch": step / per_epoch,
                    **extra(step),
                    "train_loss": sum(losses) / len(losses),
                    "lr": lr,
                }
                history.append(_validate(model, validation, settings.batch_size, row, precision))
                losses = []
                if history[-1]["val_loss"] < best[0]:
                    best = (history[-1]["val_loss"], save(), len(history) - 1)
            if progress is not None:
                progress(step, total)
            if stopped:
                break
    restore(best[1])
    frame = pd.DataFrame(history)
    frame["kept"] = frame.index == best[2]
    frame.attrs["stopped"] = stopped
    return frame


def _any_rank(flag: bool) -> bool:
    """True when ``flag`` is True on any rank: every rank asks its own ``stop()`` (a signal may
    reach one process only), and they must all leave the loop at the same step or the next
    gradient sum waits forever."""
    if processes().world == 1:
        return flag
    votes = torch.tensor([float(flag)])
    sum_across([votes])
    return bool(votes.item() > 0)


def _checkpoints(per_epoch: int, epochs: int, per_epoch_checks: int) -> set[int]:
    """Optimiser steps after which to validate: evenly spread, always at the end of an epoch."""
    n = min(per_epoch_checks, per_epoch)
    return {e * per_epoch + round(j * per_epoch / n) for e in range(epochs) for j in range(1, n + 1)}


def _sum_gradients(params: list[nn.Parameter]) -> None:
    """Sum the gradients over the ranks (one flat buffer: one collective per step)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    sum_across([flat])
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()


def _validate(
    model: nn.Module, data: ScoringData, batch_size: int, row: dict, precision: str = "fp32"
) -> dict:
    """``row`` with the validation loss and accuracy, or mAP for multi-label targets (eval mode;
    the model's mode is restored)."""
    logits = predict_logits(model, data.features, batch_size=batch_size, precision=precision)  # (N, C)
    loss = task_loss(logits, data.targets).item()
    if data.multilabel:
        labels = [str(k) for k in range(logits.shape[1])]
        quality = {"val_mAP": multilabel_metrics(logits, data.targets.numpy(), labels).mean_average_precision}
    else:
        quality = {"val_accuracy": (logits.argmax(-1) == data.targets).float().mean().item()}
    return {**row, "val_loss": loss, **quality}
