"""Top-K token pruning of a whole model: a token-pruned copy, and which patches survive.

``prune_tokens(model, keep, blocks, rule)`` returns a NEW model (the input is untouched) whose
forward drops patch tokens as ``prunekit.models.token_rules`` specifies; it works on any AST prunekit
loads, dense or head-pruned, and saves with ``heads.surgery.save_pruned`` into a folder that
``models.load_model`` rebuilds from the config alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from prunekit.devices import place
from prunekit.models import anatomy
from prunekit.models.token_pruned import (
    TOKEN_FIELD,
    TokenPrunedASTForAudioClassification,
    TokenRun,
    run_tokens,
)
from prunekit.models.token_rules import TokenPruning, default_blocks, topk_selectors

__all__ = ["prune_tokens", "token_pruning_of", "trace_tokens"]


def prune_tokens(
    model: nn.Module, keep: float, blocks: Sequence[int] | None = None, rule: str = "cls", seed: int = 0
) -> TokenPrunedASTForAudioClassification:
    """A copy of ``model`` that keeps ceil(keep x n) patch tokens in each of ``blocks`` (default:
    ``default_blocks`` of its depth), chosen by ``rule``. A token-pruned model gets new settings.

    Raises ConfigurationError for a keep rate outside (0, 1], an empty or out-of-range block
    list, or an unknown rule; ModelError for a model that is not an AST classifier.
    """
    anatomy.ensure_prunable(model)
    depth = len(anatomy.attention_shapes(model))
    blocks = default_blocks(depth) if blocks is None else tuple(blocks)
    pruning = TokenPruning(keep, blocks, rule, seed).check_depth(depth)
    pruned = copy.deepcopy(model)
    setattr(pruned.config, TOKEN_FIELD, pruning.to_dict())
    pruned.__class__ = TokenPrunedASTForAudioClassification  # adds no state: only forward differs
    return pruned


def token_pruning_of(model: nn.Module) -> TokenPruning | None:
    """The token-pruning settings of ``model`` (None for a model that keeps every token)."""
    if isinstance(model, TokenPrunedASTForAudioClassification):
        return model.token_pruning()
    return None


@torch.no_grad()
def trace_tokens(
    model: nn.Module, input_values: torch.Tensor, *, device: str | torch.device | None = None
) -> TokenRun:
    """Logits (B, C) of ``model`` for input_values (B, frames, mels), and for each drop block the
    original patch indices that survive it (B, k), ascending, all on the CPU. A model that keeps
    every token has no drop blocks. Runs on ``device`` (None: the model's)."""
    where = place(model, device)
    pruning = token_pruning_of(model)
    selectors = topk_selectors(pruning) if pruning is not None else {}
    was_training = model.training
    model.eval()
    try:
        run = run_tokens(model, input_values.to(where), selectors)
        return TokenRun(run.logits.cpu(), {b: kept.cpu() for b, kept in run.kept.items()})
    finally:
        model.train(was_training)
