"""Evaluate a model on a dataset split: accuracy, per-class accuracy, confusion matrix, loss and
per-clip predictions for single-label data; mAP for multi-label data; all as pandas frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save
from sklearn.metrics import average_precision_score, confusion_matrix

from prunekit.data.datasets import AudioDataset, Clip, label_indices
from prunekit.data.features import clip_features, clips_key
from prunekit.models import anatomy
from prunekit.progress import Progress, halves
from prunekit.store import atomic_write_bytes, cache_dir, content_key

__all__ = ["classification_metrics", "evaluate", "Evaluation", "multilabel_metrics", "predict_logits"]


@dataclass(frozen=True)
class Evaluation:
    """Single-label results. ``summary`` has one row; ``confusion`` is true x predicted."""

    summary: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame

    @property
    def accuracy(self) -> float:
        return float(self.summary["accuracy"].iloc[0])


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, features: torch.Tensor, *, batch_size: int = 32, progress: Progress | None = None
) -> torch.Tensor:
    """Logits (N, C) for features (N, frames, mels), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(features), batch_size):
            out.append(model(features[start : start + batch_size]).logits.float())
            if progress:
                progress(min(start + batch_size, len(features)), len(features))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.config.num_labels)


def classification_metrics(
    logits: torch.Tensor, targets: np.ndarray, labels: Sequence[str], clips: Sequence[Clip] | None = None
) -> Evaluation:
    """Accuracy, mean cross-entropy, per-class accuracy, confusion matrix and per-clip rows.

    logits: (N, C); targets: (N,) class indices into ``labels`` (the model's class names).
    """
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
    confusion = pd.DataFrame(matrix, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))
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


def multilabel_metrics(logits: torch.Tensor, targets: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Average precision per class and their mean (mAP) for multi-label data.

    logits: (N, C); targets: (N, C) in {0, 1}. Classes with no positive clip are left out of
    the mean (their AP is undefined). Returns rows label, positives, ap and a final row "mAP".
    """
    scores = torch.sigmoid(logits.float()).numpy()
    targets = np.asarray(targets)
    rows = []
    for k, name in enumerate(labels):
        positives = int(targets[:, k].sum())
        ap = average_precision_score(targets[:, k], scores[:, k]) if positives else np.nan
        rows.append({"label": name, "positives": positives, "ap": ap})
    frame = pd.DataFrame(rows)
    mean_ap = frame["ap"].mean(skipna=True)
    return pd.concat(
        [frame, pd.DataFrame([{"label": "mAP", "positives": int(targets.sum()), "ap": mean_ap}])],
        ignore_index=True,
    )


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
) -> Evaluation:
    """Featurise ``split`` of ``dataset`` (cached) and score ``model`` on it. With ``cache`` the
    logits are kept on disk, keyed by the model's weights and the clips' files, so the same
    evaluation after a restart (the app's Overview) is read back instead of recomputed."""
    clips = dataset.split(split)
    targets = label_indices(clips, model_labels)
    path = None
    if cache:
        key = content_key("logits", anatomy.fingerprint(model), clips_key(clips, feature_extractor))
        path = cache_dir() / "evaluations" / f"{key}.safetensors"
        logits = _read_logits(path, len(clips), model.config.num_labels)
        if logits is not None:
            if progress is not None:
                progress(len(clips), len(clips))
            return classification_metrics(logits, targets, list(model_labels), clips)
    first, second = halves(progress)  # featurising fills the first half of the bar, the model the rest
    feats = clip_features(clips, feature_extractor, progress=first)
    logits = predict_logits(model, feats, batch_size=batch_size, progress=second)
    if path is not None:
        atomic_write_bytes(path, save({"logits": logits.contiguous()}))
    return classification_metrics(logits, targets, list(model_labels), clips)


def _read_logits(path, clips: int, classes: int) -> torch.Tensor | None:
    """Cached logits of the right shape, or None (missing or damaged: recomputed, never trusted)."""
    if not path.is_file():
        return None
    try:
        logits = load_file(path)["logits"]
    except Exception:  # truncated or corrupt file
        return None
    return logits if tuple(logits.shape) == (clips, classes) and torch.isfinite(logits).all() else None
