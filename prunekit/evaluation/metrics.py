"""Evaluate a model on a dataset split: accuracy, per-class accuracy, confusion matrix, loss and
per-clip predictions for single-label data; mAP, per-class AP and mAUC for multi-label data (the
paper's AudioSet headline); all as pandas frames. ``evaluate`` picks by ``AudioDataset.multilabel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from prunekit.data.datasets import AudioDataset, Clip, label_indices, label_targets
from prunekit.data.features import clip_features, clips_key
from prunekit.devices import autocast, check_precision, gather_across, place, processes
from prunekit.errors import ConfigurationError
from prunekit.models import anatomy
from prunekit.progress import Progress, halves
from prunekit.store import atomic_write_bytes, cache_dir, content_key

__all__ = [
    "Evaluation",
    "MultilabelEvaluation",
    "classification_metrics",
    "evaluate",
    "multilabel_metrics",
    "predict_logits",
    "task_loss",
]


@dataclass(frozen=True)
class Evaluation:
    """Single-label results. ``summary`` has one row; ``confusion`` is true x predicted."""

    summary: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame

    multilabel = False
    metric = "accuracy"  # the headline's name, as pages and the CLI print it

    @property
    def accuracy(self) -> float:
        return float(self.summary["accuracy"].iloc[0])

    @property
    def headline(self) -> float:
        """The one number a page shows first: accuracy here, mAP for multi-label data."""
        return self.accuracy


@dataclass(frozen=True)
class MultilabelEvaluation:
    """Multi-label results. ``summary`` has one row: clips, mAP, mAUC, loss (binary cross-entropy);
    ``per_class`` one row per model class: label, positives, ap, auc (NaN where undefined);
    ``predictions`` one row per clip: path, labels (true, joined by " | "), top (the most probable
    class), probability (its sigmoid), loss; ``scores`` (N, C) the sigmoids and ``targets``
    (N, C) the true tags in {0, 1}, what a paired comparison resamples (``paired.compare_map``)."""

    summary: pd.DataFrame
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)

    multilabel = True
    metric = "mAP"

    @property
    def mean_average_precision(self) -> float:
        return float(self.summary["mAP"].iloc[0])

    @property
    def headline(self) -> float:
        return self.mean_average_precision


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    features: torch.Tensor,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (N, C), float32 on the CPU, for features (N, frames, mels), in eval mode; the
    model's mode is restored. ``device``: where to run (None: the model's device; else the model
    moves there); ``precision``: "fp32" or "bf16" (autocast). In a data-parallel launch each rank
    runs every world-th batch and the logits are gathered, in order, on every rank."""
    check_precision(precision)
    where = place(model, device)
    ranks = processes()
    was_training = model.training
    model.eval()
    mine = []
    n = len(features)
    try:
        for index in ranks.mine(-(-n // batch_size)):
            start = index * batch_size
            with autocast(where, precision):
                logits = model(features[start : start + batch_size].to(where)).logits
            mine.append(logits.float().cpu())
            if progress:
                progress(min((index + ranks.world - ranks.rank) * batch_size, n), n)
    finally:
        model.train(was_training)
    parts = gather_across(mine)  # parts[rank][j] is batch rank + j * world
    out = [parts[b % ranks.world][b // ranks.world] for b in range(-(-n // batch_size))]
    return torch.cat(out) if out else torch.empty(0, model.config.num_labels)


def classification_metrics(
    logits: torch.Tensor, targets: np.ndarray, labels: Sequence[str], clips: Sequence[Clip] | None = None
) -> Evaluation:
    """Accuracy, mean cross-entropy, per-class accuracy, confusion matrix and per-clip rows.

    logits: (N, C); targets: (N,) class indices into ``labels`` (the model's class names).
    """
    if np.ndim(targets) != 1:
        raise ConfigurationError(
            f"classification_metrics takes class indices (N,), got targets of shape "
            f"{np.shape(targets)}; multi-label targets are measured by multilabel_metrics"
        )
    logits = logits.float()
    targets_t = torch.as_tensor(targets, dtype=torch.long)
    losses = torch.nn.functional.cross_entropy(logits, targets_t, reduction="none")
    probs = logits.softmax(-1)
    confidence, predicted = probs.max(-1)
    pred = predicted.numpy()
    correct = pred == targets
    summary = pd.DataFrame(
        {"clips": [len(targets)], "accuracy": [correct.mean()], "loss": [losses.mean().item()]}
    )
    present = sorted(set(targets.tolist()))
    per_class = pd.DataFrame(
        [
            {
                "label": labels[k],
                "clips": int((targets == k).sum()),
                "correct": int(correct[targets == k].sum()),
                "accuracy": float(correct[targets == k].mean()),
            }
            for k in present
        ]
    )
    shown = sorted(set(present) | set(pred.tolist()))
    names = [labels[k] for k in shown]
    matrix = confusion_matrix(targets, pred, labels=shown)
    confusion = pd.DataFrame(
        matrix, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted")
    )
    predictions = pd.DataFrame(
        {
            "path": [str(c.path) for c in clips] if clips is not None else range(len(targets)),
            "label": [labels[k] for k in targets],
            "predicted": [labels[k] for k in pred],
            "confidence": confidence.numpy(),
            "correct": correct,
            "loss": losses.numpy(),
        }
    )
    return Evaluation(summary, per_class, confusion, predictions)


def multilabel_metrics(
    logits: torch.Tensor, targets: np.ndarray, labels: Sequence[str], clips: Sequence[Clip] | None = None
) -> MultilabelEvaluation:
    """Average precision and ROC AUC per class, their means (mAP, mAUC) and the BCE loss.

    logits: (N, C); targets: (N, C) in {0, 1}, columns in ``labels`` order. AP is undefined for a
    class without a positive clip, AUC also for one without a negative: such classes are NaN and
    left out of the means (the AudioSet convention), so a small split is not scored on classes
    it cannot rank.
    """
    logits = logits.float()
    targets = np.asarray(targets, dtype=np.float32)
    if targets.shape != tuple(logits.shape):
        raise ConfigurationError(
            f"multilabel_metrics needs targets shaped like the logits {tuple(logits.shape)}, "
            f"got {targets.shape}"
        )
    scores = torch.sigmoid(logits).numpy()  # (N, C)
    losses = task_loss(logits, torch.from_numpy(targets), reduction="none")  # (N,): BCE, mean over classes
    rows = []
    for k, name in enumerate(labels):
        positives = int(targets[:, k].sum())
        rows.append(
            {
                "label": name,
                "positives": positives,
                "ap": average_precision_score(targets[:, k], scores[:, k]) if positives else np.nan,
                "auc": roc_auc_score(targets[:, k], scores[:, k]) if 0 < positives < len(targets) else np.nan,
            }
        )
    per_class = pd.DataFrame(rows)
    summary = pd.DataFrame(
        {
            "clips": [len(targets)],
            "mAP": [per_class["ap"].mean(skipna=True)],
            "mAUC": [per_class["auc"].mean(skipna=True)],
            "loss": [losses.mean().item()],
        }
    )
    top = scores.argmax(1)
    predictions = pd.DataFrame(
        {
            "path": [str(c.path) for c in clips] if clips is not None else range(len(targets)),
            "labels": [" | ".join(labels[k] for k in np.flatnonzero(row)) for row in targets],
            "top": [labels[k] for k in top],
            "probability": scores[np.arange(len(top)), top],
            "loss": losses.numpy(),
        }
    )
    return MultilabelEvaluation(summary, per_class, predictions, scores, targets)


def task_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The training and validation loss of a classifier: cross-entropy for class indices (N,),
    binary cross-entropy averaged over classes for multi-label targets (N, C) in {0, 1} (what
    the authors use on AudioSet). ``reduction``: "mean" or "sum" over clips, or "none" (N,)."""
    if targets.ndim == 2:
        per_clip = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, targets.float(), reduction="none"
        ).mean(1)
    else:
        per_clip = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    if reduction == "none":
        return per_clip
    return per_clip.mean() if reduction == "mean" else per_clip.sum()


def evaluate(
    model: torch.nn.Module,
    feature_extractor,
    model_labels: Sequence[str],
    dataset: AudioDataset,
    split: str = "test",
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    cache: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Evaluation | MultilabelEvaluation:
    """Featurise ``split`` of ``dataset`` (cached) and score ``model`` on it: an ``Evaluation``
    (accuracy) for single-label data, a ``MultilabelEvaluation`` (mAP) for multi-label data.
    With ``cache`` the logits are kept on disk, keyed by the model's weights and the clips'
    files, so the same evaluation after a restart (the app's Overview) is read back instead of
    recomputed. ``device`` and ``precision``: see ``predict_logits`` (bf16 logits are cached
    apart from fp32 ones)."""
    check_precision(precision)
    clips = dataset.split(split)
    if dataset.multilabel:
        targets, measure = label_targets(clips, model_labels), multilabel_metrics
    else:
        targets, measure = label_indices(clips, model_labels), classification_metrics
    path = None
    if cache:
        parts = ("logits", anatomy.fingerprint(model), clips_key(clips, feature_extractor))
        key = content_key(*parts, *([precision] if precision != "fp32" else []))
        path = cache_dir() / "evaluations" / f"{key}.safetensors"
        logits = _read_logits(path, len(clips), model.config.num_labels)
        if logits is not None:
            if progress is not None:
                progress(len(clips), len(clips))
            return measure(logits, targets, list(model_labels), clips)
    first, second = halves(progress)  # featurising fills the first half of the bar, the model the rest
    feats = clip_features(clips, feature_extractor, progress=first)
    logits = predict_logits(
        model, feats, batch_size=batch_size, progress=second, device=device, precision=precision
    )
    if path is not None and processes().main:
        atomic_write_bytes(path, save({"logits": logits.contiguous()}))
    return measure(logits, targets, list(model_labels), clips)


def _read_logits(path, clips: int, classes: int) -> torch.Tensor | None:
    """Cached logits of the right shape, or None (missing or damaged: recomputed, never trusted)."""
    if not path.is_file():
        return None
    try:
        logits = load_file(path)["logits"]
    except Exception:  # truncated or corrupt file
        return None
    return logits if tuple(logits.shape) == (clips, classes) and torch.isfinite(logits).all() else None
