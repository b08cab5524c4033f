"""The prune job, end to end: plan -> surgery on a copy -> evaluation -> cost of dense vs pruned.

``prune_and_evaluate`` is what the app's Apply and the CLI's ``prune`` both run; ``Variant``
is its result, and ``variant_zip`` packs one as a folder ``load_model`` reads.
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
from prunekit.devices import place
from prunekit.evaluation.cost import compare_cost
from prunekit.evaluation.metrics import Evaluation, MultilabelEvaluation, evaluate
from prunekit.evaluation.paired import MapComparison, PairedComparison, compare
from prunekit.heads.plan import PruningPlan
from prunekit.heads.surgery import apply_plan, save_pruned
from prunekit.progress import Progress

__all__ = ["Variant", "describe_plan", "prune_and_evaluate", "variant_zip"]


@dataclass(frozen=True)
class Variant:
    """One applied plan: the pruned model (a new object; the base is untouched), its
    evaluation on ``split``, the cost table of dense vs pruned (rows "dense", "pruned") and,
    when the dense evaluation on the same clips was given, the paired comparison with it
    (McNemar's test and a bootstrap interval of the accuracy difference; for multi-label data a
    paired bootstrap interval of the mAP difference)."""

    name: str
    plan: PruningPlan
    model: torch.nn.Module
    split: str
    evaluation: Evaluation | MultilabelEvaluation
    cost: pd.DataFrame
    comparison: PairedComparison | MapComparison | None = None

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    @property
    def headline(self) -> float:
        """Accuracy, or mAP for a multi-label evaluation (``evaluation.metric`` names it)."""
        return self.evaluation.headline


def prune_and_evaluate(
    model: torch.nn.Module,
    extractor,
    labels: Sequence[str],
    plan: PruningPlan,
    dataset: AudioDataset,
    split: str = "test",
    *,
    name: str | None = None,
    dense: Evaluation | MultilabelEvaluation | None = None,
    repeats: int = 10,
    batches: Sequence[int] = (1, 32),
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Variant:
    """Surgery on a copy of ``model``, evaluation of the result on ``split`` of ``dataset``, and
    parameters, MACs and latency of dense and pruned (timed interleaved at ``batches``). ``dense``: ``model``'s
    evaluation on the same split, to compare the two clip by clip (``Variant.comparison``). A
    multi-label dataset is evaluated by mAP and compared by a paired bootstrap of the mAP difference.
    ``device``: where both run (None: ``model``'s; else ``model`` moves there first, so dense and
    pruned are timed on the same device); ``precision`` of the evaluation: "fp32" or "bf16"."""
    place(model, device)
    pruned = apply_plan(model, plan)  # on model's device
    evaluation = evaluate(pruned, extractor, labels, dataset, split, progress=progress, precision=precision)
    comparison = None if dense is None else compare(dense, evaluation)
    cost = compare_cost({"dense": model, "pruned": pruned}, batches=batches, repeats=repeats)
    return Variant(name or describe_plan(plan), plan, pruned, split, evaluation, cost, comparison)


def describe_plan(plan: PruningPlan) -> str:
    """A short name for people: 'fisher per-head global 50%', plus 'joint' for a joint budget and
    the forced heads ('-L0H1 -L3H2 +L1H0': forced out, kept), so two different plans never share
    a name (or a zip name)."""
    forced = [f"-L{l}H{h}" for l, h in plan.force_remove] + [f"+L{l}H{h}" for l, h in plan.force_keep]
    parts = [
        plan.scorer or "manual",
        plan.pattern or "",
        plan.threshold or "",
        "joint" if plan.budget == "joint" else "",
        f"{plan.attention_sparsity():.0%}",
        " ".join(forced),
    ]
    return " ".join(p for p in parts if p)


def variant_zip(variant: Variant, extractor, labels: Sequence[str], origin: str | None = None) -> bytes:
    """The variant's ``save_pruned`` folder (config, safetensors, plan.json, extractor settings,
    labels, the ``origin`` it was pruned from) as zip bytes, under a top-level folder named after
    it."""
    folder = "".join(c if c.isalnum() or c in "-_.+" else "-" for c in variant.name).strip("-") or "pruned"
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_pruned(
            variant.model,
            Path(tmp) / folder,
            plan=variant.plan,
            feature_extractor=extractor,
            labels=list(labels),
            origin=origin,
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(saved.rglob("*")):
                archive.write(path, path.relative_to(saved.parent))
    return buffer.getvalue()
