"""What key pruning saves: the attention's multiply-accumulates, counted from the structure.

``attention_macs(model)`` adds up, per layer with h heads, Q/K head dim dqk, V/O head dim dv,
hidden size d, T tokens and k keys whose K and V are computed (T, or the kept keys of a
per-layer key-pruned model): the projections ``T d h dqk`` (Q) + ``k d h dqk`` (K) + ``k d h dv``
(V) + ``T h dv d`` (O), the scores ``T k h dqk`` and the value mixing ``T k h dv``. A per-head
key mask computes every score anyway; ``needed=True`` counts only the kept keys' scores and
mixing (what a kernel that skipped masked keys would do: the MACs per-head pruning *would* save).
A token-pruned model (Top-K tokens) is counted with the tokens each layer's attention sees, so
the two methods compare at equal attention MACs (the few MACs its ``cls`` rule spends on one
extra query row per drop block are left out). Whole-model MACs come from ``evaluation.cost.count_macs`` (FlopCounterMode); the tests check
that both agree on what per-layer key pruning removes.
"""

from __future__ import annotations

from torch import nn

from prunekit.models import anatomy
from prunekit.models.key_priors import EXTRA_KEYS, KeyPriorASTForAudioClassification
from prunekit.models.token_rules import TOKEN_FIELD, TokenPruning, kept_counts

__all__ = ["attention_macs", "layer_attention_macs"]


def layer_attention_macs(model: nn.Module, *, needed: bool = False) -> list[int]:
    """Attention MACs per layer for one clip (see the module docstring)."""
    tokens = anatomy.tokens(model)
    shapes = anatomy.attention_shapes(model)
    seen = [tokens] * len(shapes)  # tokens entering each layer's attention
    if getattr(model.config, TOKEN_FIELD, None) is not None:
        counts = kept_counts(TokenPruning.from_config(model.config), tokens - EXTRA_KEYS, len(shapes))
        seen = [tokens] + [EXTRA_KEYS + n for n in counts[:-1]]
    keys_of = (
        getattr(model, "key_priors", None) if isinstance(model, KeyPriorASTForAudioClassification) else None
    )
    out = []
    for i, shape in enumerate(shapes):
        h, dqk, dv, d = shape.heads, shape.qk_dim, shape.v_dim, shape.hidden
        tokens = seen[i]
        keys = keys_of[i] if keys_of is not None else None
        computed = len(keys.key_index) if keys is not None and hasattr(keys, "key_index") else tokens
        projections = tokens * d * h * dqk + computed * d * h * (dqk + dv) + tokens * h * dv * d
        mixing = tokens * computed * h * (dqk + dv)
        if needed and keys is not None and hasattr(keys, "key_mask"):
            per_head = keys.key_mask.sum(-1) + EXTRA_KEYS  # (h,) keys each head really uses
            mixing = int(tokens * per_head.sum().item() * (dqk + dv))
        out.append(int(projections + mixing))
    return out


def attention_macs(model: nn.Module, *, needed: bool = False) -> int:
    """Attention MACs of the whole model for one clip (see the module docstring)."""
    return sum(layer_attention_macs(model, needed=needed))
