"""Iterative pruning: score the current model, prune a little, recover with LoRA, repeat.

docs/methods.md section 1: each step of the geometric schedule removes 10 % of what remains
(attention sparsity 1 - 0.9^k after step k); scores are recomputed on the current model at every
step; LoRA recovery follows every step that removed something (a step whose target rounds to
what the model already has, e.g. local entire-head on a 6-head model, is recorded but neither
evaluated again nor recovered, so no sparsity is recovered twice). Sparsity targets are relative to the model the run starts
from (the original), although each step's plan indexes the units of the current model:
``compose`` maps a step's plan back to the original's indices, so the run always knows which
original heads and channels are left. Removed units are physically gone and never come back.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunekit.devices import check_precision, resolve_device
from prunekit.errors import ConfigurationError, PlanError
from prunekit.evaluation.cost import cost
from prunekit.evaluation.metrics import classification_metrics, multilabel_metrics, predict_logits
from prunekit.evaluation.paired import pack_correct
from prunekit.heads.plan import LayerPlan, PruningPlan
from prunekit.heads.planner import BUDGETS, PATTERNS, THRESHOLDS, make_plan, max_sparsity
from prunekit.heads.scoring import SCORERS, ScoringData, needs_data, score
from prunekit.heads.surgery import apply_plan, kept_structure
from prunekit.models import anatomy
from prunekit.models.anatomy import AttentionShape
from prunekit.models.loading import LoadedModel
from prunekit.recovery.lora import RecoveryConfig, recover_on, split_data

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


__all__ = [
    "IterativeConfig",
    "IterativeState",
    "compose",
    "geometric_schedule",
    "kept_units",
    "linear_schedule",
    "prune_iteratively",
    "quality_column",
    "step_sparsity",
]


def quality_column(results: pd.DataFrame, when: str = "after") -> str:
    """The results column that holds a run's headline: ``accuracy_after`` (or ``_before``), or
    ``map_after`` for a run on multi-label data (its steps record mAP instead of accuracy)."""
    return (
        f"map_{when}"
        if f"map_{when}" in results and results[f"map_{when}"].notna().any()
        else f"accuracy_{when}"
    )


def geometric_schedule(steps: int, fraction: float = 0.1) -> tuple[float, ...]:
    """Attention sparsity after each step when every step removes ``fraction`` of what remains:
    1 - (1 - fraction)^k for k = 1..steps (10 % steps: 10.0, 19.0, 27.1, 34.4, ... %)."""
    if steps < 1 or not 0 < fraction < 1:
        raise ConfigurationError(
            f"A geometric schedule needs steps >= 1 and fraction in (0, 1), got {steps=}, {fraction=}"
        )
    return tuple(float(1 - (1 - fraction) ** k) for k in range(1, steps + 1))


def linear_schedule(steps: int, target: float) -> tuple[float, ...]:
    """Equal steps of attention sparsity up to ``target``: target * k / steps for k = 1..steps."""
    if steps < 1 or not 0 < target < 1:
        raise ConfigurationError(
            f"A linear schedule needs steps >= 1 and target in (0, 1), got {steps=}, {target=}"
        )
    return tuple(float(v) for v in np.linspace(target / steps, target, steps))


@dataclass(frozen=True)
class IterativeConfig:
    """One iterative-pruning run; saved next to its results. ``recovery=None``: prune only."""

    scorer: str = "fisher"
    pattern: str = "per-head"
    threshold: str = "global"
    budget: str = "separate"  # Q/K and V/O budgets of a global channel threshold (planner.make_plan)
    schedule: tuple[float, ...] = geometric_schedule(10)
    recovery: RecoveryConfig | None = field(default_factory=RecoveryConfig)
    score_split: str = "validation"  # the gradient scorers read this split (the paper: validation)
    score_clips: int = 1000
    eval_split: str = "test"  # accuracy before and after recovery
    eval_clips: int | None = None  # None: the whole split
    batch_size: int = 32
    latency_repeats: int = 20
    seed: int = 0  # the random scorer's seed and the source of each step's data and LoRA seeds

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", tuple(float(s) for s in self.schedule))
        for name, value, valid in (
            ("scorer", self.scorer, SCORERS),
            ("pattern", self.pattern, PATTERNS),
            ("threshold", self.threshold, THRESHOLDS),
            ("budget", self.budget, BUDGETS),
        ):
            if value not in valid:
                raise ConfigurationError(f"Unknown {name} {value!r}; choose one of {', '.join(valid)}")
        s = self.schedule
        if not s or not all(0 < a < 1 for a in s) or any(b <= a for a, b in itertools.pairwise(s)):
            raise ConfigurationError(f"The schedule must be increasing sparsities in (0, 1), got {list(s)}")
        if self.score_clips < 1 or (self.eval_clips is not None and self.eval_clips < 1):
            raise ConfigurationError(
                f"Clip counts must be >= 1, got score_clips={self.score_clips}, eval_clips={self.eval_clips}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IterativeConfig:
        recovery = data.get("recovery")
        return cls(
            **{
                **data,
                "schedule": tuple(data["schedule"]),
                "recovery": None if recovery is None else RecoveryConfig(**recovery),
            }
        )


@dataclass(frozen=True)
class IterativeState:
    """Where a run stands after its last finished step.

    ``plan`` takes the original model to ``model`` (original indices: ``compose``); ``steps``
    has one record per finished step, step 0 being the starting model; ``structure`` has, per
    finished step, layer and original head, the Q/K and V/O channels left.
    """

    model: nn.Module
    plan: PruningPlan
    steps: tuple[dict, ...] = ()
    structure: tuple[dict, ...] = field(default=(), repr=False)

    @property
    def next_step(self) -> int:
        return len(self.steps)

    def results(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.steps))


# --- plans relative to the original --------------------------------------------------------------
def compose(first: PruningPlan, then: PruningPlan) -> PruningPlan:
    """The plan that takes ``first.base`` straight to what ``then`` makes of ``first``'s result.

    ``then`` indexes the model ``first`` produces (its i-th head is ``first``'s i-th kept head,
    its c-th channel that head's c-th kept channel); the result indexes ``first.base``."""
    produced = [
        AttentionShape(i, s.heads, s.qk_head_dim, s.v_head_dim, base.hidden)
        for i, (s, base) in enumerate(zip(kept_structure(first), first.base))
    ]
    if list(then.base) != produced:
        raise PlanError(f"The second plan is for {list(then.base)}, but the first one produces {produced}")
    layers = []
    for outer, inner in zip(first.layers, then.layers):
        heads = [outer.heads[h] for h in inner.heads]
        qk = [[outer.qk[h][c] for c in kept] for h, kept in zip(inner.heads, inner.qk)]
        vo = [[outer.vo[h][c] for c in kept] for h, kept in zip(inner.heads, inner.vo)]
        layers.append(LayerPlan(heads, qk, vo))
    return PruningPlan(
        tuple(layers),
        first.base,
        scorer=then.scorer,
        pattern=then.pattern,
        threshold=then.threshold,
        target_sparsity=then.target_sparsity,
        budget=then.budget,
    ).validate()


def step_sparsity(
    done: PruningPlan,
    target: float,
    scores: pd.DataFrame,
    pattern: str,
    threshold: str,
    budget: str = "separate",
) -> float:
    """The sparsity, relative to the current model (what ``make_plan`` takes), that brings the
    original to ``target``; clipped to [0, the pattern's ceiling on the current model]."""
    kept = done.kept_weights()
    if kept == 0:
        return 0.0
    relative = 1.0 - (1.0 - target) * done.dense_weights() / kept
    return min(max(relative, 0.0), max_sparsity(scores, pattern, threshold, budget=budget))


def kept_units(plan: PruningPlan) -> list[dict]:
    """Per layer and original head: Q/K and V/O channels left (0 for a removed head)."""
    rows = []
    for lp, s in zip(plan.layers, plan.base):
        kept = dict(zip(lp.heads, zip(lp.qk, lp.vo)))
        for h in range(s.heads):
            qk, vo = kept.get(h, ((), ()))
            rows.append(
                {
                    "layer": s.layer,
                    "head": h,
                    "qk_kept": len(qk),
                    "qk_dim": s.qk_dim,
                    "vo_kept": len(vo),
                    "v_dim": s.v_dim,
                }
            )
    return rows


# --- the run -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _RunData:
    """Features and targets a run reads (from the disk cache); the train subset varies by step."""

    dataset: object
    extractor: object
    labels: tuple[str, ...]
    config: IterativeConfig
    scoring: ScoringData | None
    validation: ScoringData | None
    evaluation: ScoringData
    device: torch.device | None = None  # None: where the model is
    precision: str = "fp32"  # evaluation and recovery

    @classmethod
    def prepare(
        cls, dataset, extractor, labels, config: IterativeConfig, device=None, precision: str = "fp32"
    ) -> _RunData:
        pick, rec = (dataset, extractor, labels), config.recovery
        scoring = (
            split_data(*pick, config.score_split, config.score_clips, seed=config.seed)
            if needs_data(config.scorer)
            else None
        )
        validation = (
            split_data(*pick, rec.validation_split, rec.validation_clips, seed=rec.seed) if rec else None
        )
        evaluation = split_data(*pick, config.eval_split, config.eval_clips, seed=config.seed)
        where = None if device is None else resolve_device(device)
        return cls(
            dataset, extractor, tuple(labels), config, scoring, validation, evaluation, where, precision
        )

    def train(self, seed: int) -> ScoringData:
        rec = self.config.recovery
        pick = (self.dataset, self.extractor, self.labels)
        return split_data(*pick, rec.train_split, rec.train_clips, seed=seed)


def prune_iteratively(
    loaded: LoadedModel,
    dataset,
    config: IterativeConfig = IterativeConfig(),
    *,
    state: IterativeState | None = None,
    on_step: Callable[[IterativeState], None] | None = None,
    progress: StageProgress | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> IterativeState:
    """Run ``config.schedule`` on ``loaded.model`` (never modified), or continue ``state``.

    Step 0 records the starting model; step k prunes to ``schedule[k-1]`` of the original's
    attention weights, evaluates, recovers and evaluates again. ``on_step(state)`` is called
    after every finished step (to save it: a run continues from any such state);
    ``progress(stage, done, total)`` reports "scoring", "evaluating", "recovering", "measuring".
    ``device`` (None: the model's) and ``precision`` (evaluation and recovery: "fp32" or "bf16")
    say where and how every step computes.
    """
    check_precision(precision)
    model, extractor, labels = loaded
    data = _RunData.prepare(dataset, extractor, labels, config, device, precision)
    report = progress or (lambda stage, done, total: None)
    if state is None:
        state = _first_state(model, data, report)
        if on_step is not None:
            on_step(state)
    for step in range(state.next_step, len(config.schedule) + 1):
        state = _step(state, step, data, report)
        if on_step is not None:
            on_step(state)
    return state


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _first_state(model: nn.Module, data: _RunData, report: StageProgress) -> IterativeState:
    start = time.perf_counter()
    plan = PruningPlan.dense(model)
    quality = _evaluate(model, data, report)
    metric = _metric(data)
    record = {
        "step": 0,
        "target_sparsity": 0.0,
        "attention_sparsity": 0.0,
        f"{metric}_before": quality[metric],
        "loss_before": quality["loss"],
        f"{metric}_after": quality[metric],
        "loss_after": quality["loss"],
        "val_loss_before": np.nan,
        "val_loss_after": np.nan,
        "recovered": False,
        **_correct(quality, quality),
        **_cost(model, data, report),
        "score_seconds": 0.0,
        "recovery_seconds": 0.0,
        "eval_seconds": time.perf_counter() - start,
    }
    record["seconds"] = time.perf_counter() - start
    return IterativeState(model, plan, (record,), tuple({"step": 0, **row} for row in kept_units(plan)))


def _step(state: IterativeState, step: int, data: _RunData, report: StageProgress) -> IterativeState:
    start = time.perf_counter()
    target = data.config.schedule[step - 1]
    pruned, overall = _prune(state, step, target, data, report)
    if overall.kept_weights() == state.plan.kept_weights():
        return _unchanged(state, step, target, overall, time.perf_counter() - start)
    scored = time.perf_counter()
    before = _evaluate(pruned, data, report)
    evaluated = time.perf_counter()
    model, val_before, val_after = _recover(pruned, step, data, report)
    recovered = time.perf_counter()
    after = _evaluate(model, data, report) if data.config.recovery else before
    seconds = {
        "score_seconds": scored - start,
        "recovery_seconds": recovered - evaluated,
        "eval_seconds": evaluated - scored + time.perf_counter() - recovered,
    }
    metric = _metric(data)
    record = {
        "step": step,
        "target_sparsity": target,
        "attention_sparsity": overall.attention_sparsity(),
        f"{metric}_before": before[metric],
        "loss_before": before["loss"],
        f"{metric}_after": after[metric],
        "loss_after": after["loss"],
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "recovered": data.config.recovery is not None,
        **_correct(before, after),
        **_cost(model, data, report),
        **seconds,
    }
    record["seconds"] = time.perf_counter() - start
    structure = tuple({"step": step, **row} for row in kept_units(overall))
    return IterativeState(model, overall, (*state.steps, record), state.structure + structure)


def _unchanged(
    state: IterativeState, step: int, target: float, overall: PruningPlan, seconds: float
) -> IterativeState:
    """A step whose plan removes nothing: the model stays as it is, so its record repeats the last
    step's accuracy and cost, and it is not recovered (a recovery would only train the same
    sparsity longer, which the other steps do not get)."""
    last = state.steps[-1]
    metric = "map" if "map_after" in last else "accuracy"
    record = {
        **last,
        "step": step,
        "target_sparsity": target,
        f"{metric}_before": last[f"{metric}_after"],
        "loss_before": last["loss_after"],
        **({"correct_before": last["correct_after"]} if "correct_after" in last else {}),
        "val_loss_before": np.nan,
        "val_loss_after": np.nan,
        "recovered": False,
        "score_seconds": seconds,
        "recovery_seconds": 0.0,
        "eval_seconds": 0.0,
        "seconds": seconds,
    }
    structure = tuple({"step": step, **row} for row in kept_units(overall))
    return IterativeState(state.model, overall, (*state.steps, record), state.structure + structure)


def _prune(
    state: IterativeState, step: int, target: float, data: _RunData, report: StageProgress
) -> tuple[nn.Module, PruningPlan]:
    """Score the current model and prune it to ``target`` of the original: (pruned model, the plan
    from the original to it)."""
    cfg = data.config
    report("scoring", 0, 1)
    scores = score(
        state.model,
        cfg.scorer,
        data.scoring,
        batch_size=cfg.batch_size,
        seed=_seed(cfg.seed, step),
        progress=lambda done, total: report("scoring", done, total),
        device=data.device,
    )
    plan = make_plan(
        scores,
        cfg.pattern,
        cfg.threshold,
        step_sparsity(state.plan, target, scores, cfg.pattern, cfg.threshold, cfg.budget),
        budget=cfg.budget,
    )
    overall = compose(state.plan, dataclasses.replace(plan, target_sparsity=target))
    return apply_plan(state.model, plan), overall


def _recover(
    pruned: nn.Module, step: int, data: _RunData, report: StageProgress
) -> tuple[nn.Module, float, float]:
    """(recovered model, validation loss before, after); the pruned model and NaNs without recovery."""
    rec = data.config.recovery
    if rec is None:
        return pruned, np.nan, np.nan
    seed = _seed(data.config.seed, rec.seed, step)  # each step trains on its own subset of clips
    model, history = recover_on(
        pruned,
        data.train(seed),
        data.validation,
        config=dataclasses.replace(rec, seed=seed),
        progress=lambda done, total: report("recovering", done, total),
        device=data.device,
        precision=data.precision,
    )
    return model, float(history["val_loss"].iloc[0]), float(history.loc[history["kept"], "val_loss"].iloc[0])


def _metric(data: _RunData) -> str:
    """What a step records: "accuracy", or "map" (mean average precision) on multi-label data."""
    return "map" if data.evaluation.multilabel else "accuracy"


def _evaluate(model: nn.Module, data: _RunData, report: StageProgress) -> dict[str, float]:
    ev = data.evaluation
    logits = predict_logits(
        model,
        ev.features,
        batch_size=data.config.batch_size,
        progress=lambda done, total: report("evaluating", done, total),
        device=data.device,
        precision=data.precision,
    )
    if ev.multilabel:
        summary = multilabel_metrics(logits, ev.targets.numpy(), list(data.labels)).summary.iloc[0]
        return {"map": float(summary["mAP"]), "loss": float(summary["loss"])}
    evaluation = classification_metrics(logits, ev.targets.numpy(), list(data.labels))
    summary = evaluation.summary.iloc[0]
    correct = pack_correct(evaluation.predictions["correct"].to_numpy())
    return {"accuracy": float(summary["accuracy"]), "loss": float(summary["loss"]), "correct": correct}


def _correct(before: dict, after: dict) -> dict[str, str]:
    """Which evaluation clips each model got right (``pack_correct`` hex, evaluation order), so
    two steps or two runs on the same clips can be compared paired; none on multi-label data."""
    if "correct" not in after:
        return {}
    return {"correct_before": before["correct"], "correct_after": after["correct"]}


def _cost(model: nn.Module, data: _RunData, report: StageProgress) -> dict[str, float]:
    report("measuring", 0, 1)
    row = cost(model, batches=(1,), repeats=data.config.latency_repeats).iloc[0]
    report("measuring", 1, 1)
    counts = {k: int(row[k]) for k in ("parameters", "attention_parameters", "macs_per_clip")}
    heads = sum(s.heads for s in anatomy.attention_shapes(model))
    return {"heads_left": heads, **counts, "latency_b1_ms": float(row["latency_b1_ms"])}
