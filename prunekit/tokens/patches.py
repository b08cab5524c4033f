"""What a model keeps of a spectrogram: patch statistics, clusters, and how attention ranks them.

The paper's second half (docs/methods.md, section 2), on any model and dataset split:

* ``patch_statistics``: per patch token, the mean (intensity) and standard deviation
  (variation) of the normalised log-mel values under it (the patch embedding's own windows);
* ``cluster_ranks``: 1-D k-means (5 clusters, scikit-learn) over all patches of the split,
  clusters renumbered 0..4 by ascending value, with their edges and shares;
* ``correlations``: per block, the rank correlation between a token's CLS-attention score and
  its cluster rank, as the authors count it (a pair whose score or rank ties counts as
  concordant) beside scipy's tau-b (ties handled), both over the tokens present in that block;
* ``cluster_drop``: at one block, drop every token of the highest or lowest clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau
from sklearn.cluster import KMeans
from torch import nn

from prunekit.devices import place
from prunekit.errors import ConfigurationError
from prunekit.models import anatomy
from prunekit.models.token_pruned import DropBlock, patch_values, run_tokens
from prunekit.models.token_rules import topk_selectors
from prunekit.progress import Progress
from prunekit.tokens.topk import token_pruning_of

__all__ = [
    "PAPER_AST_SPEECH_COMMANDS",
    "STATISTICS",
    "Clusters",
    "authors_kendall",
    "block_scores",
    "cluster_drop",
    "cluster_ranks",
    "correlations",
    "patch_statistics",
]

STATISTICS = ("intensity", "variation")
# The authors' per-block Kendall values for AST on Speech Commands v2 (12 blocks), from their
# released audiomae/stats/kendall_rank_{mean,std}_ast.json ("SPC-2"); means 0.68 and 0.60.
PAPER_AST_SPEECH_COMMANDS = {
    "intensity": (0.154, 0.631, 0.597, 0.664, 0.785, 0.782, 0.787, 0.725, 0.752, 0.700, 0.770, 0.656),
    "variation": (0.272, 0.660, 0.646, 0.660, 0.645, 0.654, 0.655, 0.607, 0.656, 0.584, 0.631, 0.534),
}


@torch.no_grad()
def patch_statistics(
    model: nn.Module, features: torch.Tensor, *, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """``{"intensity": (N, P), "variation": (N, P)}`` for features (N, frames, mels): the mean and
    the (unbiased) standard deviation of each patch's input values, patches in token order."""
    means, stds = [], []
    for start in range(0, len(features), batch_size):
        values = patch_values(model, features[start : start + batch_size])  # (b, P, s*s)
        means.append(values.mean(-1))
        stds.append(values.std(-1))
    return {"intensity": torch.cat(means), "variation": torch.cat(stds)}


@dataclass(frozen=True)
class Clusters:
    """Cluster rank (0 = lowest values) of every patch, (N, P), and one row per cluster:
    ``cluster, low, high, share`` (the smallest and largest value in it, its share of patches)."""

    ranks: torch.Tensor
    table: pd.DataFrame


def cluster_ranks(values: torch.Tensor, clusters: int = 5, seed: int = 123) -> Clusters:
    """1-D k-means over every entry of values (N, P), clusters renumbered by ascending minimum
    (as the authors do; their seed is 123)."""
    if clusters < 1:
        raise ConfigurationError(f"Need at least 1 cluster, got {clusters}")
    flat = values.reshape(-1, 1).double().numpy()
    labels = KMeans(n_clusters=clusters, random_state=seed, n_init=10).fit_predict(flat)
    lows = [flat[labels == c].min() for c in range(clusters)]
    order = np.argsort(lows)  # new rank r is old cluster order[r]
    rank_of = np.empty(clusters, dtype=np.int64)
    rank_of[order] = np.arange(clusters)
    ranks = rank_of[labels]
    table = pd.DataFrame(
        [
            {
                "cluster": r,
                "low": float(flat[ranks == r].min()),
                "high": float(flat[ranks == r].max()),
                "share": float((ranks == r).mean()),
            }
            for r in range(clusters)
        ]
    )
    return Clusters(torch.from_numpy(ranks.reshape(values.shape)), table)


@dataclass(frozen=True)
class BlockScores:
    """Per block: the original patch indices present (N, n_i) and their CLS-attention scores (N, n_i)."""

    positions: dict[int, torch.Tensor]
    scores: dict[int, torch.Tensor]


@torch.no_grad()
def block_scores(
    model: nn.Module,
    features: torch.Tensor,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
) -> BlockScores:
    """The CLS attention row (mean over heads) over the patch tokens in every block, for the
    tokens present there: all of them for an unpruned model; for a token-pruned model, what its
    own pruning left (scores are read before a drop block drops). Runs on ``device`` (None: the
    model's; else the model moves there); the scores come back on the CPU."""
    where = place(model, device)
    pruning = token_pruning_of(model)
    own = topk_selectors(pruning) if pruning is not None else {}
    depth = len(anatomy.attention_shapes(model))
    positions: dict[int, list[torch.Tensor]] = {i: [] for i in range(depth)}
    scores: dict[int, list[torch.Tensor]] = {i: [] for i in range(depth)}

    def spy(index: int):
        def select(block: DropBlock) -> torch.Tensor:
            positions[index].append(block.positions.cpu())
            scores[index].append(block.cls_attention().float().cpu())
            if index in own:
                return own[index](block)
            return torch.arange(block.positions.shape[1], device=block.positions.device).expand_as(
                block.positions
            )

        return select

    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(features), batch_size):
            run_tokens(
                model, features[start : start + batch_size].to(where), {i: spy(i) for i in range(depth)}
            )
            if progress:
                progress(min(start + batch_size, len(features)), len(features))
    finally:
        model.train(was_training)
    return BlockScores(
        {i: torch.cat(p) for i, p in positions.items()}, {i: torch.cat(s) for i, s in scores.items()}
    )


def authors_kendall(scores: torch.Tensor, ranks: torch.Tensor) -> float:
    """The authors' Kendall coefficient over clips: (concordant - discordant) / pairs, pooled,
    where a pair (i < j) of one clip is concordant when (s_i - s_j)(r_i - r_j) >= 0, so a tie in
    either counts as concordant. NaN when there is no pair. scores, ranks: (N, n)."""
    n = scores.shape[1]
    if len(scores) == 0 or n < 2:
        return float("nan")
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    balance = 0
    for start in range(0, len(scores), 64):  # clips in chunks: the pair tensors are (chunk, n, n)
        s, r = scores[start : start + 64].double(), ranks[start : start + 64].double()
        product = ((s.unsqueeze(-1) - s.unsqueeze(-2)) * (r.unsqueeze(-1) - r.unsqueeze(-2)))[:, upper]
        balance += (product >= 0).sum().item() - (product < 0).sum().item()
    return balance / (len(scores) * n * (n - 1) // 2)


def _tau_b(scores: torch.Tensor, ranks: torch.Tensor) -> tuple[float, int]:
    """Mean of scipy's per-clip tau-b and the number of clips where it is defined (a clip whose
    tokens all share one cluster has none)."""
    values = [kendalltau(s, r).statistic for s, r in zip(scores.double().numpy(), ranks.numpy())]
    defined = [v for v in values if np.isfinite(v)]
    return (float(np.mean(defined)) if defined else float("nan")), len(defined)


def correlations(scores: BlockScores, ranks: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per block and statistic: ``block, statistic, tokens, authors_kendall, tau_b,
    tau_b_clips``. ranks: statistic -> cluster ranks (N, P) of every patch."""
    rows = []
    for block, present in scores.positions.items():
        for name, rank in ranks.items():
            here = rank.gather(1, present)  # (N, n): ranks of the tokens present in this block
            tau, defined = _tau_b(scores.scores[block], here)
            rows.append(
                {
                    "block": block,
                    "statistic": name,
                    "tokens": present.shape[1],
                    "authors_kendall": authors_kendall(scores.scores[block], here),
                    "tau_b": tau,
                    "tau_b_clips": defined,
                }
            )
    return pd.DataFrame(rows)


@torch.no_grad()
def cluster_drop(
    model: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    ranks: torch.Tensor,
    block: int,
    drop: Sequence[int],
    *,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Accuracy (on ``device``; None: the model's) when, in ``block`` (after its attention, before its MLP), every patch token whose
    cluster rank is in ``drop`` is removed; clip by clip, since the count left differs per clip.
    A clip may lose every patch token (CLS and distillation go on alone). The model's own token
    pruning, if any, is not applied: this ablates the unpruned forward. features: (N, frames, mels); targets: (N,); ranks: (N, P)."""
    depth = len(anatomy.attention_shapes(model))
    if not 0 <= block < depth:
        raise ConfigurationError(
            f"Block {block} is outside the model: it has {depth} blocks (0 to {depth - 1})"
        )
    where = place(model, device)
    dropped = torch.tensor(sorted(drop))
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(len(features)):

            def select(view: DropBlock, i=i) -> torch.Tensor:
                keep = ~torch.isin(ranks[i, view.positions[0].cpu()], dropped)  # (n,)
                return keep.nonzero().T.to(view.positions.device)  # (1, k), ascending

            logits = run_tokens(model, features[i : i + 1].to(where), {block: select}).logits
            correct += int(logits.argmax(-1).item() == targets[i].item())
            if progress:
                progress(i + 1, len(features))
    finally:
        model.train(was_training)
    return correct / len(features)
