"""The token-pruned AST: a forward pass that drops patch tokens inside chosen blocks.

Inside a drop block the attention runs on all current tokens and its residual is added; then
a selector picks which patch tokens go on to the block's MLP and to the later blocks. The CLS
and distillation tokens (the first two) are always kept, and selection is per clip. The weights
and module tree are the stock ``ASTForAudioClassification``'s (dense or head-pruned), so
state dicts are interchangeable; only ``forward`` differs.

What to keep is decided by a *selector* (``prunekit.tokens.rules``): a function of a
``DropBlock``, which computes on demand what a score may need (the CLS attention row from the
block's own Q and K, the attention each patch receives, the input patch values), so the
default path keeps the model's fast attention kernel.

A token-pruned model records its settings in one config field (``prunekit_tokens``: blocks,
keep rate, rule, seed), and ``TokenPrunedASTForAudioClassification`` rebuilds from it (and from
``prunekit_structure`` when the heads were pruned too): it saves and reloads with no pickle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import ASTForAudioClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from prunekit.models import anatomy
from prunekit.models.ast import backbone, install_structure
from prunekit.models.token_rules import (
    EXTRA_TOKENS,
    TOKEN_FIELD,
    DropBlock,
    Selector,
    TokenPruning,
    topk_selectors,
)

__all__ = [
    "EXTRA_TOKENS",
    "TOKEN_FIELD",
    "DropBlock",
    "Selector",
    "TokenPrunedASTForAudioClassification",
    "TokenRun",
    "model_class_for",
    "patch_values",
    "run_tokens",
]

def patch_values(model: nn.Module, input_values: torch.Tensor) -> torch.Tensor:
    """The input values under each patch, in token order: (B, N, size * size).

    input_values: (B, frames, mels), the normalised log-mel features the model reads. The
    windows are exactly those of the patch embedding's convolution (which may overlap), taken in
    the order its output is flattened into tokens (frequency-major).
    """
    grid = anatomy.patch_grid(model)
    image = input_values.transpose(1, 2).unsqueeze(1)  # (B, 1, mels, frames), as the embedding sees it
    cols = nn.functional.unfold(image, grid.size, stride=(grid.f_stride, grid.t_stride))  # (B, s*s, N)
    return cols.transpose(1, 2)  # (B, N, s*s)


@dataclass
class TokenRun:
    """Logits (B, C) and, per drop block, the original patch indices kept there (B, k)."""

    logits: torch.Tensor
    kept: dict[int, torch.Tensor] = field(default_factory=dict)


@contextlib.contextmanager
def _capture_query_key(attention: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Hold on to the outputs of the block's q_proj and k_proj during one call. The hooks go on
    whatever modules are there at call time (LoRA wrappers included) and are removed after."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        getattr(attention, name).register_forward_hook(
            lambda _module, _args, out, name=name: seen.__setitem__(name, out))
        for name in ("q_proj", "k_proj")
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _drop_block(layer: nn.Module, index: int, hidden: torch.Tensor, positions: torch.Tensor,
                selector: Selector, patches: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``ASTLayer`` with token dropping between the attention residual and the MLP.

    hidden: (B, 2 + n, d); positions: (B, n). Returns (B, 2 + k, d) and the kept positions (B, k).
    """
    residual = hidden
    with _capture_query_key(layer.attention) as seen:
        attended, _ = layer.attention(layer.layernorm_before(hidden), None)
    hidden = layer.dropout(attended) + residual  # (B, 2 + n, d)
    keep = selector(DropBlock(index, positions, layer.attention, seen.get("q_proj"), seen.get("k_proj"),
                                patches))
    if keep.shape[1] < positions.shape[1]:  # keeping all of them changes nothing: skip the copy
        rows = keep.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (B, k, d)
        hidden = torch.cat([hidden[:, :EXTRA_TOKENS], hidden[:, EXTRA_TOKENS:].gather(1, rows)], dim=1)
        positions = positions.gather(1, keep)  # (B, k)
    hidden = hidden + layer.dropout(layer.mlp(layer.layernorm_after(hidden)))
    return hidden, positions


def run_tokens(model: nn.Module, input_values: torch.Tensor, selectors: dict[int, Selector]) -> TokenRun:
    """The forward pass of ``model`` (any ASTForAudioClassification, dense or head-pruned) with
    ``selectors[i]`` choosing the patch tokens that survive block i; other blocks run as usual.

    input_values: (B, frames, mels). With no selectors, or selectors that keep every token, the
    logits equal the stock forward's exactly.
    """
    ast = backbone(model)
    hidden = ast.embeddings(input_values)  # (B, 2 + N, d)
    batch, patches_n = hidden.shape[0], hidden.shape[1] - EXTRA_TOKENS
    positions = torch.arange(patches_n, device=hidden.device).expand(batch, patches_n)  # (B, N)
    cache: dict[str, torch.Tensor] = {}

    def patches() -> torch.Tensor:  # computed once per forward, and only if a selector asks
        if "values" not in cache:
            cache["values"] = patch_values(model, input_values)
        return cache["values"]

    run = TokenRun(logits=hidden.new_empty(0))
    for i, layer in enumerate(ast.layers):
        if i in selectors:
            hidden, positions = _drop_block(layer, i, hidden, positions, selectors[i], patches)
            run.kept[i] = positions
        else:
            hidden = layer(hidden, None)
    sequence = ast.layernorm(hidden)  # (B, 2 + k, d)
    pooled = (sequence[:, 0] + sequence[:, 1]) / 2  # (B, d): AST's pooling of CLS and distillation
    run.logits = model.classifier(pooled)  # (B, C)
    return run


class TokenPrunedASTForAudioClassification(ASTForAudioClassification):
    """``ASTForAudioClassification`` that drops patch tokens as ``config.prunekit_tokens`` says.

    ``from_pretrained(folder)`` rebuilds the head-pruned attention too when the config has
    ``prunekit_structure``, so head pruning and token pruning stack and reload together.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        structure = anatomy.config_structure(config)
        if structure is not None:
            install_structure(self, structure)
        self.token_pruning()  # fails early on a missing or malformed field
        self.post_init()

    def token_pruning(self) -> TokenPruning:
        """The settings in the config, checked against this model."""
        return TokenPruning.from_config(self.config)

    def selectors(self) -> dict[int, Selector]:
        return topk_selectors(self.token_pruning())

    def forward(self, input_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        """input_values: (B, frames, mels); labels: (B,). Returns the logits (B, C) (and the loss)."""
        logits = run_tokens(self, input_values, self.selectors()).logits
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def model_class_for(config) -> type[ASTForAudioClassification]:
    """The class that rebuilds a model from ``config``: token-pruned when the config says so,
    else what ``anatomy.model_class_for`` says (dense or head-pruned)."""
    if getattr(config, TOKEN_FIELD, None) is not None:
        return TokenPrunedASTForAudioClassification
    return anatomy.model_class_for(config)
