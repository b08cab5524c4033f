"""What changed between two evaluations of the same clips: per class and per clip."""

from __future__ import annotations

import pandas as pd

from prunekit.errors import ConfigurationError
from prunekit.evaluation.metrics import Evaluation, MultilabelEvaluation

__all__ = ["class_ap_changes", "class_changes", "prediction_changes", "tag_changes"]


def class_changes(dense: Evaluation, pruned: Evaluation) -> pd.DataFrame:
    """Per class: dense accuracy, pruned accuracy and the change (pruned - dense), worst first."""
    before = dense.per_class.set_index("label")[["clips", "accuracy"]].rename(columns={"accuracy": "dense"})
    after = pruned.per_class.set_index("label")["accuracy"].rename("pruned")
    both = before.join(after, how="inner")
    both["change"] = both["pruned"] - both["dense"]
    return both.sort_values("change", kind="stable").reset_index()


def prediction_changes(dense: Evaluation, pruned: Evaluation) -> pd.DataFrame:
    """Per clip: path, label, the dense and the pruned prediction and whether they differ."""
    a, b = dense.predictions, pruned.predictions
    if len(a) != len(b) or not a["path"].equals(b["path"]):
        raise ConfigurationError("The two evaluations are not over the same clips")
    out = a[["path", "label"]].copy()
    out["dense"], out["pruned"] = a["predicted"], b["predicted"]
    out["dense_correct"], out["pruned_correct"] = a["correct"], b["correct"]
    out["differ"] = out["dense"] != out["pruned"]
    return out


def class_ap_changes(dense: MultilabelEvaluation, pruned: MultilabelEvaluation) -> pd.DataFrame:
    """Per class of a multi-label evaluation: positives, dense AP, pruned AP and the change
    (pruned - dense), worst first; classes without a positive clip (no AP) are left out."""
    before = dense.per_class.set_index("label")[["positives", "ap"]].rename(columns={"ap": "dense"})
    after = pruned.per_class.set_index("label")["ap"].rename("pruned")
    both = before.join(after, how="inner").dropna(subset=["dense", "pruned"])
    both["change"] = both["pruned"] - both["dense"]
    return both.sort_values("change", kind="stable").reset_index()


def tag_changes(dense: MultilabelEvaluation, pruned: MultilabelEvaluation) -> pd.DataFrame:
    """Per clip of a multi-label evaluation: path, labels (the true tags), each model's most
    probable tag, whether it is one of the true tags, and whether the two top tags differ (the
    columns ``prediction_changes`` gives for single-label data, with ``label`` the true tags)."""
    a, b = dense.predictions, pruned.predictions
    if len(a) != len(b) or not a["path"].equals(b["path"]):
        raise ConfigurationError("The two evaluations are not over the same clips")
    out = a[["path", "labels"]].rename(columns={"labels": "label"})
    out["dense"], out["pruned"] = a["top"], b["top"]
    column = {name: k for k, name in enumerate(dense.per_class["label"])}  # the model's classes
    rows = range(len(a))
    out["dense_correct"] = dense.targets[rows, [column[t] for t in a["top"]]] == 1
    out["pruned_correct"] = dense.targets[rows, [column[t] for t in b["top"]]] == 1
    out["differ"] = out["dense"] != out["pruned"]
    return out
