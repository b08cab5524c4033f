"""Top-K token pruning settings and the rules that score patch tokens (docs/methods.md section 2).

``TokenPruning(keep, blocks, rule, seed)`` is the whole configuration: in each block of
``blocks`` keep ``kept_count(keep, n)`` = ceil(keep x n) of the n patch tokens present there
(at least one), the ones ``rule`` scores highest. Rules (higher = kept):

* ``cls``: the CLS token's attention row over the patches, mean over heads (the paper's rule
  for AST), from the block's own Q and K for that one query;
* ``received``: the mean attention each patch receives from the patch queries (the paper's rule
  for mean-pooled models);
* ``intensity`` / ``variation``: mean / standard deviation of the normalised log-mel values
  under the patch (the paper's ablation);
* ``random``: uniform scores from a generator seeded by ``seed`` and the block index, drawn
  afresh at every forward pass, so the same batch gives the same choice.

Ties are broken deterministically: among equal scores the token with the lower original patch
index is kept (a stable descending sort of tokens held in patch order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import ConfigurationError, ModelError
from prunekit.models.ast import heads_of

__all__ = [
    "EXTRA_TOKENS",
    "RULES",
    "TOKEN_FIELD",
    "DropBlock",
    "Selector",
    "TokenPruning",
    "default_blocks",
    "kept_count",
    "kept_counts",
    "score_tokens",
    "select_top",
    "topk_selectors",
]

TOKEN_FIELD = "prunekit_tokens"
EXTRA_TOKENS = 2  # CLS and distillation: AST's first two tokens, never dropped
RULES = ("cls", "received", "intensity", "variation", "random")


@dataclass
class DropBlock:
    """What a selector sees in a drop block, after the attention and its residual.

    ``positions``: (B, n) the original patch index of each current patch token, ascending per
    clip. Scores are computed on demand from the block's own projections: nothing is computed
    for a rule that does not ask.
    """

    block: int
    positions: torch.Tensor  # (B, n)
    attention: nn.Module
    query: torch.Tensor | None  # (B, T, h*dqk) output of the block's q_proj, T = 2 + n (None: 0 heads)
    key: torch.Tensor | None  # (B, T, h*dqk) output of the block's k_proj
    _patches: Callable[[], torch.Tensor]

    def _heads(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, T', h*dqk) -> (B, h, T', dqk)."""
        heads = heads_of(self.attention)
        return rows.view(*rows.shape[:2], heads, -1).transpose(1, 2)

    def _attention_rows(self, rows: slice) -> torch.Tensor | None:
        """Softmax attention of the query tokens ``rows`` over all T keys: (B, h, rows, T), in
        float32 like the model's own softmax; None for a layer with no heads."""
        if heads_of(self.attention) == 0:
            return None
        q = self._heads(self.query[:, rows])  # (B, h, r, dqk)
        k = self._heads(self.key)  # (B, h, T, dqk)
        logits = torch.matmul(q, k.transpose(-1, -2)) * self.attention.scaling  # (B, h, r, T)
        return logits.float().softmax(-1)

    def cls_attention(self) -> torch.Tensor:
        """(B, n): the CLS token's attention to each patch token, mean over heads (one query).
        Zeros for a layer with no heads."""
        weights = self._attention_rows(slice(0, 1))
        if weights is None:
            return self.positions.new_zeros(self.positions.shape, dtype=torch.float32)
        return weights[:, :, 0, EXTRA_TOKENS:].mean(1)  # (B, n)

    def received_attention(self) -> torch.Tensor:
        """(B, n): mean attention each patch token receives from the patch queries, over heads
        and queries. Zeros for a layer with no heads."""
        weights = self._attention_rows(slice(EXTRA_TOKENS, None))
        if weights is None:
            return self.positions.new_zeros(self.positions.shape, dtype=torch.float32)
        return weights[..., EXTRA_TOKENS:].mean((1, 2))  # (B, n)

    def patches(self) -> torch.Tensor:
        """(B, n, size*size): the input values under each current patch token."""
        values = self._patches()  # (B, N, s*s)
        index = self.positions.unsqueeze(-1).expand(-1, -1, values.shape[-1])
        return values.gather(1, index)


Selector = Callable[[DropBlock], torch.Tensor]
"""``selector(block) -> keep``: (B, k) indices into the current patch tokens (0..n-1), ascending
per clip, the same count k for every clip of the batch."""


def default_blocks(depth: int) -> tuple[int, ...]:
    """The blocks at 1/4, 1/2 and 3/4 of ``depth`` (0-based, rounded down, duplicates merged):
    3, 6, 9 of 12 as in the paper; 1, 3, 4 of the demo's 6."""
    if depth < 1:
        raise ConfigurationError(f"A model with {depth} blocks has no block to prune tokens in")
    return tuple(sorted({depth * k // 4 for k in (1, 2, 3)}))


def kept_count(keep: float, n: int) -> int:
    """ceil(keep x n), at least 1. The product is rounded to 9 decimals first, so 0.7 x 10 keeps
    7 (a bare float ceil of 7.000000000000001 would keep 8)."""
    return max(1, math.ceil(round(keep * n, 9)))


@dataclass(frozen=True)
class TokenPruning:
    """Where to prune tokens, how many to keep and by which rule; stored in the model's config."""

    keep: float
    blocks: tuple[int, ...]
    rule: str = "cls"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
            raise ConfigurationError(f"Keep rate {self.keep!r} is outside (0, 1]")
        if self.rule not in RULES:
            raise ConfigurationError(f"Unknown token rule {self.rule!r}; choose one of {', '.join(RULES)}")
        blocks = tuple(self.blocks)
        if not blocks:
            raise ConfigurationError("No drop blocks given: token pruning needs at least one block index")
        if any(isinstance(b, bool) or not isinstance(b, int) for b in blocks):
            raise ConfigurationError(f"Drop blocks must be whole block indices, got {list(blocks)}")
        if len(set(blocks)) != len(blocks):
            raise ConfigurationError(f"Drop blocks {list(blocks)} repeat a block")
        object.__setattr__(self, "blocks", tuple(sorted(blocks)))
        object.__setattr__(self, "keep", float(self.keep))

    def check_depth(self, depth: int) -> TokenPruning:
        """Raise ConfigurationError unless every block index is in 0..depth-1; return self."""
        bad = [b for b in self.blocks if not 0 <= b < depth]
        if bad:
            raise ConfigurationError(
                f"Drop block(s) {bad} outside the model: it has {depth} blocks (indices 0 to {depth - 1})"
            )
        return self

    def to_dict(self) -> dict:
        return {"keep": self.keep, "blocks": list(self.blocks), "rule": self.rule, "seed": self.seed}

    @classmethod
    def from_config(cls, config) -> TokenPruning:
        """The settings stored in ``config.prunekit_tokens``, checked against its depth."""
        raw = getattr(config, TOKEN_FIELD, None)
        if raw is None:
            raise ModelError(f"A token-pruned model needs config.{TOKEN_FIELD}; this config has none")
        try:
            pruning = cls(
                keep=raw["keep"], blocks=tuple(raw["blocks"]), rule=raw["rule"], seed=int(raw["seed"])
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"config.{TOKEN_FIELD} is malformed ({exc!r}): {raw}") from exc
        return pruning.check_depth(config.num_hidden_layers)


def kept_counts(pruning: TokenPruning, patches: int, depth: int) -> list[int]:
    """Patch tokens each block of a ``depth``-block model runs its MLP on, from ``patches`` at the
    input: the count falls at every drop block (keep is applied to what is left)."""
    counts, n = [], patches
    for i in range(depth):
        if i in pruning.blocks:
            n = kept_count(pruning.keep, n)
        counts.append(n)
    return counts


def score_tokens(rule: str, block: DropBlock, seed: int = 0) -> torch.Tensor:
    """(B, n) scores of the current patch tokens by ``rule`` (higher = more worth keeping)."""
    if rule == "cls":
        return block.cls_attention()
    if rule == "received":
        return block.received_attention()
    if rule == "intensity":
        return block.patches().mean(-1)
    if rule == "variation":
        return block.patches().std(-1)
    if rule == "random":
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block.block)
        return torch.rand(block.positions.shape, generator=generator).to(block.positions.device)
    raise ConfigurationError(f"Unknown token rule {rule!r}; choose one of {', '.join(RULES)}")


def select_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count) of the ``count`` highest scores per row, ascending; among equal scores
    the lower index wins. scores: (B, n)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :count]  # (B, k)
    return order.sort(dim=1).values


def topk_selectors(pruning: TokenPruning, keep: float | None = None) -> dict[int, Selector]:
    """One Top-K selector per drop block of ``pruning`` (at ``keep`` instead of its keep rate
    when given: what fine-tuning's shrinking schedule uses)."""
    rate = pruning.keep if keep is None else keep
    if not 0 < rate <= 1:
        raise ConfigurationError(f"Keep rate {rate!r} is outside (0, 1]")

    def select(block: DropBlock) -> torch.Tensor:
        n = block.positions.shape[1]
        count = kept_count(rate, n)
        if count >= n:  # nothing to drop: no scores needed
            return torch.arange(n, device=block.positions.device).expand(block.positions.shape[0], n)
        return select_top(score_tokens(pruning.rule, block, pruning.seed), count)

    return dict.fromkeys(pruning.blocks, select)
