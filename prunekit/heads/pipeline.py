"""A pruned variant of a model: its plan, its cost before surgery, and its evaluation after.

What the Prune page previews on every slider move (``plan_cost``, no surgery, a few
milliseconds) and what Apply does (``prune_and_evaluate``: surgery on a copy, evaluation, cost).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from prunekit.data.datasets import AudioDataset
from prunekit.errors import ConfigurationError
from prunekit.evaluation.cost import compare_cost
from prunekit.evaluation.metrics import Evaluation, evaluate
from prunekit.evaluation.paired import PairedComparison, compare_evaluations
from prunekit.heads.plan import PruningPlan
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.models import anatomy
from prunekit.progress import Progress


def _attention_macs(plan: PruningPlan, n_tokens: int) -> int:
    """MACs of the attention of the plan's kept units: per Q/K or V/O channel, two projections
    (``2 * T * d``) and one column of QK^T or AV (``T * T``)."""
    return sum((lp.qk_channels + lp.vo_channels) * n_tokens * (2 * s.hidden + n_tokens)
               for lp, s in zip(plan.layers, plan.base))


def _parameters_removed(plan: PruningPlan, qkv_bias: bool) -> int:
    """Weights and biases the plan removes: a Q/K channel is a row (and bias) of W_q and W_k; a
    V/O channel a row (and bias) of W_v and a column of W_o."""
    bias = 1 if qkv_bias else 0
    removed = 0
    for lp, s in zip(plan.layers, plan.base):
        qk_gone = s.heads * s.qk_dim - lp.qk_channels
        vo_gone = s.heads * s.v_dim - lp.vo_channels
        removed += qk_gone * 2 * (s.hidden + bias) + vo_gone * (2 * s.hidden + bias)
    return removed


def plan_cost(plan: PruningPlan, model: torch.nn.Module, dense_macs: int) -> dict:
    """Parameters and MACs per clip the pruned model will have, computed from the plan alone
    (equal to counting them on ``apply_plan(model, plan)``; tested). ``dense_macs`` is
    ``count_macs(model)``, which the caller caches."""
    n_tokens = anatomy.tokens(model)
    full = PruningPlan.dense(model)
    return {
        "attention_sparsity": plan.attention_sparsity(),
        "parameters": sum(p.numel() for p in model.parameters()) - _parameters_removed(plan, model.config.qkv_bias),
        "macs_per_clip": dense_macs - _attention_macs(full, n_tokens) + _attention_macs(plan, n_tokens),
    }


@dataclass(frozen=True)
class Variant:
    """One applied plan: the pruned model (a new object; the base is untouched), its
    evaluation on ``split``, the cost table of dense vs pruned (rows "dense", "pruned") and,
    when the dense evaluation on the same clips was given, the paired comparison with it
    (McNemar's test and a bootstrap interval of the accuracy difference)."""

    name: str
    plan: PruningPlan
    model: torch.nn.Module
    split: str
    evaluation: Evaluation
    cost: pd.DataFrame
    comparison: PairedComparison | None = None

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy


def prune_and_evaluate(
    model: torch.nn.Module,
    extractor,
    labels: Sequence[str],
    plan: PruningPlan,
    dataset: AudioDataset,
    split: str = "test",
    *,
    name: str | None = None,
    dense: Evaluation | None = None,
    repeats: int = 10,
    progress: Progress | None = None,
) -> Variant:
    """Surgery on a copy of ``model``, evaluation of the result on ``split`` of ``dataset``, and
    parameters, MACs and latency of dense and pruned (timed interleaved). ``dense``: ``model``'s
    evaluation on the same split, to compare the two clip by clip (``Variant.comparison``)."""
    pruned = apply_plan(model, plan)
    evaluation = evaluate(pruned, extractor, labels, dataset, split, progress=progress)
    comparison = None if dense is None else compare_evaluations(dense, evaluation)
    cost = compare_cost({"dense": model, "pruned": pruned}, repeats=repeats)
    return Variant(name or describe_plan(plan), plan, pruned, split, evaluation, cost, comparison)


def describe_plan(plan: PruningPlan) -> str:
    """A short name for people: 'fisher per-head global 50%' (a joint budget says so)."""
    parts = [plan.scorer or "manual", plan.pattern or "", plan.threshold or "",
             "joint" if plan.budget == "joint" else "", f"{plan.attention_sparsity():.0%}"]
    return " ".join(p for p in parts if p)


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


def variant_zip(variant: Variant, extractor, labels: Sequence[str]) -> bytes:
    """The variant's ``save_pruned`` folder (config, safetensors, plan.json, extractor settings,
    labels) as zip bytes, under a top-level folder named after it."""
    folder = "".join(c if c.isalnum() or c in "-_." else "-" for c in variant.name).strip("-") or "pruned"
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_pruned(variant.model, Path(tmp) / folder, plan=variant.plan, feature_extractor=extractor,
                            labels=list(labels))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(saved.rglob("*")):
                archive.write(path, path.relative_to(saved.parent))
    return buffer.getvalue()

