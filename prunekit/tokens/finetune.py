"""Fine-tuning a token-pruned model with a shrinking keep rate (docs/methods.md, section 2).

The keep rate starts at 1 and falls along a cosine to the model's target over the first
``shrink_fraction`` of the optimiser steps, then holds (the authors' E-ViT schedule, per step):
``keep(s) = r + (1 - r) * (1 + cos(pi * s / S)) / 2`` for ``s < S``, else ``r``. Every weight
trains (as in the paper), on a copy: the model passed in is never modified. Validation runs at
the target keep rate, and the weights of the lowest validation loss seen (the starting point
included) are the ones returned.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from prunekit.devices import place
from prunekit.errors import ConfigurationError, ModelError, check_settings
from prunekit.heads.scoring import ScoringData
from prunekit.models.token_pruned import run_tokens
from prunekit.models.token_rules import topk_selectors
from prunekit.progress import Progress
from prunekit.recovery.lora import split_data
from prunekit.recovery.training import LoopSettings, fit_with_checkpoints
from prunekit.tokens.topk import token_pruning_of

__all__ = ["TokenFinetuneConfig", "finetune_tokens", "finetune_tokens_on", "keep_schedule"]


@dataclass(frozen=True)
class TokenFinetuneConfig:
    """How to fine-tune; saved next to every result it produced."""

    epochs: int = 2
    shrink_fraction: float = 0.5  # share of the optimiser steps over which the keep rate falls to r
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05  # linear warm-up of the learning rate, then cosine to 0
    batch_size: int = 32
    train_clips: int | None = None  # None: the whole train split; n: a seeded subset
    validation_clips: int | None = None
    validations_per_epoch: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("epochs", self.epochs, self.epochs >= 1),
            ("lr", self.lr, self.lr > 0),
            ("shrink_fraction", self.shrink_fraction, 0 <= self.shrink_fraction <= 1),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0),
            ("warmup_fraction", self.warmup_fraction, 0 <= self.warmup_fraction < 1),
            ("batch_size", self.batch_size, self.batch_size >= 1),
            ("train_clips", self.train_clips, self.train_clips is None or self.train_clips >= 1),
            (
                "validation_clips",
                self.validation_clips,
                self.validation_clips is None or self.validation_clips >= 1,
            ),
            ("validations_per_epoch", self.validations_per_epoch, self.validations_per_epoch >= 1),
        )
        check_settings(
            checks,
            "fine-tuning settings",
            "epochs, lr, batch size and clip counts must be positive, shrink_fraction in [0, 1], warmup_fraction in [0, 1)",
        )


def keep_schedule(step: int, shrink_steps: int, target: float) -> float:
    """The keep rate at optimiser step ``step`` (0-based): cosine from 1 to ``target`` over
    ``shrink_steps`` steps, then ``target``."""
    if step >= shrink_steps:
        return target
    return target + (1 - target) * (1 + math.cos(math.pi * step / shrink_steps)) / 2


def finetune_tokens(
    model: nn.Module,
    feature_extractor,
    labels: Sequence[str],
    dataset,
    *,
    config: TokenFinetuneConfig = TokenFinetuneConfig(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[nn.Module, pd.DataFrame]:
    """Fine-tune the token-pruned ``model`` on ``dataset``'s train split (features from the disk
    cache), choosing the checkpoint on its validation split. See ``finetune_tokens_on``."""
    pick = (dataset, feature_extractor, labels)
    train = split_data(*pick, "train", config.train_clips, seed=config.seed)
    validation = split_data(*pick, "validation", config.validation_clips, seed=config.seed)
    return finetune_tokens_on(
        model, train, validation, config=config, progress=progress, device=device, precision=precision
    )


def finetune_tokens_on(
    model: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    *,
    config: TokenFinetuneConfig = TokenFinetuneConfig(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[nn.Module, pd.DataFrame]:
    """A fine-tuned copy (on ``device``; None: ``model``'s; in ``precision``, "fp32" or "bf16"
    autocast; data-parallel in a multi-process launch, see ``recovery.training``) of the
    token-pruned ``model`` and its history, one row per validation:
    ``step, epoch, keep, train_loss, val_loss, val_accuracy, lr, kept`` (row 0 is the starting
    point; ``kept`` marks the weights returned). ``progress(done, total)`` counts optimiser steps.

    train / validation: features (N, frames, mels) and class indices (N,).
    """
    pruning = token_pruning_of(model)
    if pruning is None:
        raise ModelError(
            "Fine-tuning with a shrinking keep rate needs a token-pruned model (see prune_tokens)"
        )
    for name, data in (("train", train), ("validation", validation)):
        if data.multilabel:
            raise ConfigurationError(
                f"Token fine-tuning trains single-label classifiers; the {name} data is multi-label"
            )
    work = copy.deepcopy(model)
    place(work, device)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
        torch.manual_seed(config.seed)
        history = _train(work, train, validation, config, progress, precision)
    return work.eval(), history


def _train(
    work: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    config: TokenFinetuneConfig,
    progress: Progress | None,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Train ``work`` in place; leave it holding the weights of the lowest validation loss.
    Validation runs at the model's own (target) keep rate; a row's ``keep`` is the training keep
    rate of the step just taken."""
    pruning = token_pruning_of(work)
    target = pruning.keep
    total = math.ceil(len(train.features) / config.batch_size) * config.epochs
    shrink = round(config.shrink_fraction * total)

    def batch_loss(x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        selectors = topk_selectors(pruning, keep_schedule(step, shrink, target))
        return nn.functional.cross_entropy(run_tokens(work, x, selectors).logits, y)  # logits (B, C)

    settings = LoopSettings(
        config.lr,
        config.weight_decay,
        config.warmup_fraction,
        config.epochs,
        config.batch_size,
        config.validations_per_epoch,
    )
    return fit_with_checkpoints(
        work,
        train,
        validation,
        settings,
        batch_loss=batch_loss,
        save=lambda: copy.deepcopy(work.state_dict()),
        restore=work.load_state_dict,
        extra=lambda step: {"keep": target if step == 0 else keep_schedule(step - 1, shrink, target)},
        progress=progress,
        precision=precision,
    )
