"""LoRA recovery of a (pruned) model: adapters on every Linear, a short fine-tune, merged back.

``recover(model, extractor, labels, dataset)`` returns a NEW plain model of the same class and
attention structure as ``model`` (dense or pruned, zero-head layers included), so
``surgery.save_pruned`` and ``models.load_model`` round-trip it; ``model`` itself is never
modified. Defaults are the authors' (docs/methods.md, section 1): rank 16, alpha 16, adapters on every
``nn.Linear`` (q, k, v, o, MLP, classifier), AdamW at 1e-4 without weight decay, 5 % linear
warm-up then cosine, and the adapters of the best validation loss are the ones merged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from peft import LoraConfig, LoraModel
from torch import nn

from prunekit.data.augment import spec_augment
from prunekit.devices import place
from prunekit.errors import ConfigurationError, check_settings
from prunekit.evaluation.metrics import task_loss
from prunekit.heads.scoring import ScoringData, scoring_data
from prunekit.progress import Progress
from prunekit.recovery.training import LoopSettings, fit_with_checkpoints

__all__ = ["RecoveryConfig", "add_adapters", "recover", "recover_on", "split_data", "train_adapters"]


@dataclass(frozen=True)
class RecoveryConfig:
    """How to recover; saved next to every result it produced."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0  # LoRA dropout (our choice: the authors do not give one)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    epochs: int = 1
    batch_size: int = 32
    train_clips: int | None = None  # None: the whole train split (the paper); n: a seeded subset
    validation_clips: int | None = None  # the same for the validation split
    validations_per_epoch: int = 1  # checkpoints to choose from, besides the starting point
    freq_mask: int = 0  # SpecAugment: widest masked band of mel bins (0: off)
    time_mask: int = 0  # SpecAugment: widest masked band of frames (0: off)
    seed: int = 0
    train_split: str = "train"
    validation_split: str = "validation"

    def __post_init__(self) -> None:
        checks = (
            ("rank", self.rank, self.rank >= 1),
            ("alpha", self.alpha, self.alpha > 0),
            ("lr", self.lr, self.lr > 0),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0),
            ("dropout", self.dropout, 0 <= self.dropout < 1),
            ("warmup_fraction", self.warmup_fraction, 0 <= self.warmup_fraction < 1),
            ("epochs", self.epochs, self.epochs >= 1),
            ("batch_size", self.batch_size, self.batch_size >= 1),
            ("train_clips", self.train_clips, self.train_clips is None or self.train_clips >= 1),
            (
                "validation_clips",
                self.validation_clips,
                self.validation_clips is None or self.validation_clips >= 1,
            ),
            ("validations_per_epoch", self.validations_per_epoch, self.validations_per_epoch >= 1),
            ("freq_mask", self.freq_mask, self.freq_mask >= 0),
            ("time_mask", self.time_mask, self.time_mask >= 0),
        )
        check_settings(
            checks,
            "recovery settings",
            "counts, rank, alpha and lr must be positive, weight decay and mask widths >= 0, dropout and warmup_fraction in [0, 1)",
        )


def recover(
    model: nn.Module,
    feature_extractor,
    labels: Sequence[str],
    dataset,
    *,
    config: RecoveryConfig = RecoveryConfig(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[nn.Module, pd.DataFrame]:
    """Recover ``model`` with LoRA on ``dataset`` (features from the disk cache), on ``device``
    (None: the model's; the copy that trains moves there, ``model`` stays) in ``precision``
    ("fp32" or "bf16" autocast); data-parallel in a multi-process launch (``training``).

    Returns the merged model (new; same class and structure) and the training history, one row
    per validation: ``step, epoch, train_loss, val_loss, val_accuracy, lr, kept`` (row 0 is the
    starting point; ``kept`` marks the checkpoint that was merged). A multi-label dataset trains
    and validates with binary cross-entropy (the authors' AudioSet loss) and its history has
    ``val_mAP`` instead of ``val_accuracy``. ``progress(done, total)`` counts optimiser steps.
    """
    pick = (dataset, feature_extractor, labels)
    train = split_data(*pick, config.train_split, config.train_clips, seed=config.seed)
    validation = split_data(*pick, config.validation_split, config.validation_clips, seed=config.seed)
    return recover_on(
        model, train, validation, config=config, progress=progress, device=device, precision=precision
    )


def split_data(
    dataset, feature_extractor, labels: Sequence[str], split: str, clips: int | None, *, seed: int = 0
) -> ScoringData:
    """Features (disk-cached) and class indices of a seeded subset of ``clips`` clips of ``split``
    (the whole split when None)."""
    count = len(dataset.split(split)) if clips is None else clips
    return scoring_data(dataset, feature_extractor, labels, split, clips=count, seed=seed)


def recover_on(
    model: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    *,
    config: RecoveryConfig = RecoveryConfig(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[nn.Module, pd.DataFrame]:
    """``recover`` on prepared data: features (N, frames, mels) and class indices (N,), or for
    multi-label data {0, 1} targets (N, C) (binary cross-entropy); the merged model is on
    ``device`` (None: ``model``'s)."""
    if train.multilabel != validation.multilabel:
        raise ConfigurationError(
            f"The train data is {'multi' if train.multilabel else 'single'}-label but the validation "
            f"data is {'multi' if validation.multilabel else 'single'}-label; recovery needs one kind"
        )
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
        torch.manual_seed(config.seed)
        lora = add_adapters(model, config, device=device)
        history = train_adapters(
            lora, train, validation, config=config, progress=progress, precision=precision
        )
    merged = lora.merge_and_unload().eval()
    wanted = dict(model.named_parameters())
    for name, p in merged.named_parameters():  # LoRA froze the base weights; give back the caller's flags
        p.requires_grad_(wanted[name].requires_grad)
    return merged, history


def add_adapters(
    model: nn.Module, config: RecoveryConfig = RecoveryConfig(), *, device: str | torch.device | None = None
) -> LoraModel:
    """A copy of ``model`` (on ``device``; None: ``model``'s) with LoRA adapters on every
    non-empty ``nn.Linear``; only the adapters train. (A projection of a zero-head layer has no weights, so there is nothing to adapt.)
    ``LoraModel`` rather than ``get_peft_model``: the latter's wrapper calls a transformers
    attribute deprecated in v5, and merging needs no wrapper."""
    work = copy.deepcopy(model)
    place(work, device)  # before the adapters, so they are made where the weights are
    targets = [name for name, m in work.named_modules() if isinstance(m, nn.Linear) and m.weight.numel()]
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
    )
    return LoraModel(work, lora, "default")


def train_adapters(
    lora: LoraModel,
    train: ScoringData,
    validation: ScoringData,
    *,
    config: RecoveryConfig = RecoveryConfig(),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Train the adapters of ``lora`` in place (on ``device``, in ``precision``); leave it holding the adapters of the lowest
    validation loss seen (the start included); return the history (see ``recover``)."""
    augment = spec_augment(config.freq_mask, config.time_mask)

    def batch_loss(x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return task_loss(lora(augment(x)).logits, y)  # cross-entropy, or BCE for (B, C) targets

    settings = LoopSettings(
        config.lr,
        config.weight_decay,
        config.warmup_fraction,
        config.epochs,
        config.batch_size,
        config.validations_per_epoch,
    )
    return fit_with_checkpoints(
        lora,
        train,
        validation,
        settings,
        batch_loss=batch_loss,
        save=lambda: _adapter_state(lora),
        restore=lambda state: _load_adapter_state(lora, state),
        progress=progress,
        device=device,
        precision=precision,
    )


def _adapter_state(lora: LoraModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in lora.named_parameters() if p.requires_grad}


@torch.no_grad()
def _load_adapter_state(lora: LoraModel, state: dict[str, torch.Tensor]) -> None:
    for name, p in lora.named_parameters():
        if name in state:
            p.copy_(state[name])
