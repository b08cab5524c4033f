"""Evaluate a model on a dataset split: quality metrics and cost, as pandas frames.

Quality: accuracy, per-class accuracy, confusion matrix, loss and per-clip predictions for
single-label data; mAP for multi-label data. Cost: total and attention parameters, MACs
(``torch.utils.flop_counter``), and latency at batch 1 and 32 (median, warm-up excluded).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, confusion_matrix
from torch.utils.flop_counter import FlopCounterMode

from . import anatomy
from .datasets import AudioDataset, Clip
from .errors import DatasetError
from .features import clip_features

Progress = Callable[[int, int], None]


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


def label_indices(clips: Sequence[Clip], model_labels: Sequence[str]) -> np.ndarray:
    """The model's class index for each clip's label; every label must be one the model knows."""
    index = {name: i for i, name in enumerate(model_labels)}
    unknown = sorted({c.label for c in clips} - index.keys())
    if unknown:
        raise DatasetError(
            f"The model has no class for the dataset label(s) {unknown}; "
            f"its classes are {list(model_labels)[:40]}."
        )
    return np.array([index[c.label] for c in clips], dtype=np.int64)


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
) -> Evaluation:
    """Featurise ``split`` of ``dataset`` (cached) and score ``model`` on it."""
    clips = dataset.split(split)
    targets = label_indices(clips, model_labels)
    half = (lambda d, n: progress(d // 2, n)) if progress else None
    feats = clip_features(clips, feature_extractor, progress=half)
    rest = (lambda d, n: progress((n + d) // 2, n)) if progress else None
    logits = predict_logits(model, feats, batch_size=batch_size, progress=rest)
    return classification_metrics(logits, targets, list(model_labels), clips)


def count_macs(model: torch.nn.Module, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` (FlopCounterMode flops / 2).

    FlopCounterMode does not count CPU SDPA kernels, so a copy of the model runs with eager
    attention (explicit matmuls, same maths). The model passed in is not changed.
    """
    probe = copy.deepcopy(model).eval()
    probe.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        probe(anatomy.dummy_input(probe, batch))
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def latencies_ms(models: Sequence[torch.nn.Module], batch: int, *, repeats: int = 20,
                 warmup: int = 3) -> list[float]:
    """Median wall time (ms) of a forward pass at ``batch`` for each model, warm-up excluded.

    The models are timed in turn, round after round, so a slow spell of the machine (its speed
    drifts by 10-30 % within a minute on shared CPUs) hits all of them instead of one: timing
    one model after the other made such drift look like a speed-up or a slow-down.
    """
    modes = [m.training for m in models]
    x = anatomy.dummy_input(models[0], batch)
    times: list[list[float]] = [[] for _ in models]
    try:
        for m in models:
            m.eval()
            for _ in range(warmup):
                m(x)
        for _ in range(repeats):
            for m, bucket in zip(models, times):
                start = time.perf_counter()
                m(x)
                bucket.append(time.perf_counter() - start)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return [1000 * statistics.median(t) for t in times]


def latency_ms(model: torch.nn.Module, batch: int, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of a forward pass at ``batch``, warm-up runs excluded."""
    return latencies_ms([model], batch, repeats=repeats, warmup=warmup)[0]


def compare_cost(models: Mapping[str, torch.nn.Module], *, batches: Sequence[int] = (1, 32),
                 repeats: int = 20) -> pd.DataFrame:
    """One row per named model: parameters, attention parameters, MACs per clip and latency per
    batch size, the latencies of all models measured interleaved (see ``latencies_ms``)."""
    frame = pd.DataFrame([{
        "parameters": sum(p.numel() for p in m.parameters()),
        "attention_parameters": anatomy.attention_parameters(m),
        "macs_per_clip": count_macs(m, 1),
    } for m in models.values()], index=pd.Index(list(models), name="model"))
    for b in batches:
        rounds = repeats if b <= 8 else max(3, repeats // 4)
        frame[f"latency_b{b}_ms"] = latencies_ms(list(models.values()), b, repeats=rounds)
    return frame


def cost(model: torch.nn.Module, *, batches: Sequence[int] = (1, 32), repeats: int = 20) -> pd.DataFrame:
    """One row: parameters, attention parameters, MACs per clip and latency per batch size."""
    return compare_cost({"model": model}, batches=batches, repeats=repeats).reset_index(drop=True)
