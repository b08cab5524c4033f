"""What a plan will cost, from the plan alone: parameters and MACs per clip without surgery.

The Prune page previews this on every slider move (a few milliseconds); a test checks it against
counting parameters and MACs on ``apply_plan(model, plan)`` for every pattern and threshold.
"""

from __future__ import annotations

import torch

from prunekit.heads.plan import PruningPlan
from prunekit.models import anatomy

__all__ = ["plan_cost"]


def _attention_macs(plan: PruningPlan, n_tokens: int) -> int:
    """MACs of the attention of the plan's kept units: per Q/K or V/O channel, two projections
    (``2 * T * d``) and one column of QK^T or AV (``T * T``)."""
    return sum(
        (lp.qk_channels + lp.vo_channels) * n_tokens * (2 * s.hidden + n_tokens)
        for lp, s in zip(plan.layers, plan.base)
    )


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
        "parameters": sum(p.numel() for p in model.parameters())
        - _parameters_removed(plan, model.config.qkv_bias),
        "macs_per_clip": dense_macs - _attention_macs(full, n_tokens) + _attention_macs(plan, n_tokens),
    }
