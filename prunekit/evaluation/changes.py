"""What changed between two evaluations of the same clips: per class and per clip."""

from __future__ import annotations

import pandas as pd

from prunekit.errors import ConfigurationError
from prunekit.evaluation.metrics import Evaluation

__all__ = ["class_changes", "prediction_changes"]


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
