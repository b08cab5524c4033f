"""Learning the key priors: gradient descent on the task loss, base weights frozen (optionally
with LoRA adapters), optionally with an entropy penalty that pushes each head's prior to few keys.

The loss of a batch is ``cross_entropy + penalty x mean over heads of H(prior_h) / log N``: the
entropy of each head's prior over its N patch keys, normalised to [0, 1] (1 = uniform). The
choices below are ours, not the paper's (its full text was not available to us):

* AdamW on the log-priors at lr 0.05, no weight decay (they start at 0 and a small lr would
  barely move them in one epoch); LoRA adapters, when asked for, at lr 1e-4 (recovery's);
* the penalty is the normalised entropy above, weight 0 by default (a plain learned prior);
* 5 % linear warm-up then cosine, two validations per epoch, the priors (and adapters) of the
  lowest validation loss kept: the shared loop of ``recovery.training``.

The model passed in is never modified; a model that already has priors continues from them
(this is how a stopped run resumes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from prunekit.errors import ConfigurationError, check_settings
from prunekit.heads.scores import ScoringData
from prunekit.keys.priors import add_key_priors
from prunekit.models.key_priors import KeyPriorASTForAudioClassification
from prunekit.progress import Progress
from prunekit.recovery.lora import RecoveryConfig, add_adapters, split_data
from prunekit.recovery.training import LoopSettings, fit_with_checkpoints

__all__ = ["KeyLearnConfig", "learn_priors", "learn_priors_on", "prior_entropy"]


@dataclass(frozen=True)
class KeyLearnConfig:
    """How to learn the priors; saved next to every result it produced."""

    epochs: int = 1
    lr: float = 0.05  # the log-priors' learning rate (ours)
    penalty: float = 0.0  # weight of the normalised prior entropy (ours)
    lora_rank: int | None = None  # None: base weights frozen; r: LoRA adapters of rank r train too
    lora_lr: float = 1e-4
    warmup_fraction: float = 0.05
    batch_size: int = 32
    train_clips: int | None = None  # None: the whole train split; n: a seeded subset
    validation_clips: int | None = None
    validations_per_epoch: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("epochs", self.epochs, self.epochs >= 1),
            ("lr", self.lr, self.lr > 0),
            ("penalty", self.penalty, self.penalty >= 0),  # also refuses nan
            ("lora_rank", self.lora_rank, self.lora_rank is None or self.lora_rank >= 1),
            ("lora_lr", self.lora_lr, self.lora_lr > 0),
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
            "key-prior learning settings",
            "epochs, learning rates, rank, batch size and clip counts must be positive, the penalty >= 0, warmup_fraction in [0, 1)",
        )

    def to_dict(self) -> dict:
        return asdict(self)


def prior_entropy(model: nn.Module) -> torch.Tensor:
    """Mean over every head of the entropy of its prior over the patch keys, divided by log N
    (1 = uniform, 0 = one key). Differentiable; 0-head layers are left out."""
    terms = []
    for keys in model.key_priors:
        theta = keys.log_prior  # (h, N)
        if theta.shape[0] and theta.shape[1] > 1:
            log_p = theta.log_softmax(-1)
            terms.append(-(log_p.exp() * log_p).sum(-1) / math.log(theta.shape[1]))  # (h,)
    return torch.cat(terms).mean() if terms else torch.zeros(())


def learn_priors(
    model: nn.Module,
    feature_extractor,
    labels: Sequence[str],
    dataset,
    *,
    config: KeyLearnConfig = KeyLearnConfig(),
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
) -> tuple[KeyPriorASTForAudioClassification, pd.DataFrame]:
    """Learn key priors for ``model`` on ``dataset``'s train split (features from the disk cache),
    choosing the checkpoint on its validation split. See ``learn_priors_on``."""
    pick = (dataset, feature_extractor, labels)
    train = split_data(*pick, "train", config.train_clips, seed=config.seed)
    validation = split_data(*pick, "validation", config.validation_clips, seed=config.seed)
    return learn_priors_on(
        model, train, validation, config=config, progress=progress, stop=stop, device=device
    )


def learn_priors_on(
    model: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    *,
    config: KeyLearnConfig = KeyLearnConfig(),
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
) -> tuple[KeyPriorASTForAudioClassification, pd.DataFrame]:
    """A copy of ``model`` with learned key priors, and the history: one row per validation,
    ``step, epoch, entropy, train_loss, lr, val_loss, val_accuracy, kept`` (row 0 is the
    starting point; ``kept`` marks the priors returned). ``progress(done, total)`` counts
    optimiser steps; ``stop()`` is asked after each one, and when it says True learning ends early
    with the best priors so far (``history.attrs["stopped"]``).

    train / validation: features (N, frames, mels) and class indices (N,).
    """
    for name, data in (("train", train), ("validation", validation)):
        if data.multilabel:
            raise ConfigurationError(
                f"Key priors are learned on single-label data; the {name} data is multi-label"
            )
    work = add_key_priors(model)  # a copy: the model passed in is never modified
    for p in work.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
        torch.manual_seed(config.seed)
        if config.lora_rank is not None:
            trained = add_adapters(work, RecoveryConfig(rank=config.lora_rank, alpha=float(config.lora_rank)))
            inner = trained.model
        else:
            trained = inner = work
        priors = [keys.log_prior for keys in inner.key_priors]
        for p in priors:
            p.requires_grad_(True)
        adapters = [p for n, p in trained.named_parameters() if p.requires_grad and "lora_" in n]
        groups = [{"params": priors, "lr": config.lr, "weight_decay": 0.0}]
        if adapters:
            groups.append({"params": adapters, "lr": config.lora_lr, "weight_decay": 0.0})
        history = _fit(trained, inner, train, validation, config, groups, progress, stop, device)
    result = trained.merge_and_unload() if config.lora_rank is not None else work
    for p in result.parameters():  # a plain model again: every parameter as load_model gives it
        p.requires_grad_(True)
    return result.eval(), history


def _fit(
    trained: nn.Module,
    inner: nn.Module,
    train: ScoringData,
    validation: ScoringData,
    config: KeyLearnConfig,
    groups: list[dict],
    progress: Progress | None,
    stop: Callable[[], bool] | None,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Train ``groups`` of ``trained`` in place; leave the best checkpoint in it."""
    names = [n for n, p in trained.named_parameters() if p.requires_grad]

    def batch_loss(x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(trained(x).logits, y)  # logits (B, C)
        return loss + config.penalty * prior_entropy(inner) if config.penalty else loss

    def save() -> dict[str, torch.Tensor]:
        params = dict(trained.named_parameters())
        return {n: params[n].detach().clone() for n in names}

    @torch.no_grad()
    def restore(state: dict[str, torch.Tensor]) -> None:
        for n, p in trained.named_parameters():
            if n in state:
                p.copy_(state[n])

    settings = LoopSettings(
        config.lr, 0.0, config.warmup_fraction, config.epochs, config.batch_size, config.validations_per_epoch
    )
    return fit_with_checkpoints(
        trained,
        train,
        validation,
        settings,
        batch_loss=batch_loss,
        save=save,
        restore=restore,
        extra=lambda step: {"entropy": float(prior_entropy(inner).detach())},
        progress=progress,
        param_groups=groups,
        stop=stop,
        device=device,
    )
