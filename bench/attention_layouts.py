"""Which attention layout turns per-head and same-channel MAC savings into time (issue #15 item 4).

An AST-base-sized model (12 layers x 12 heads x 768, random weights, a 10-s clip: 1,214 tokens)
is pruned to 50 % attention sparsity (magnitude scores, global threshold, separate Q/K and V/O
budgets) with each pattern. Every attention block of the three pruned models is then timed in
three layouts that compute the same outputs:

- ``pad``: what prunekit runs (``PrunedASTAttention.forward``): the narrower of the Q/K and V/O
  sides is zero-padded at run time to a common head dim, so CPU ``sdpa`` keeps its fused kernel;
- ``weight-pad``: the padding baked into the weights once (zero rows in W_q, W_k, W_v and zero
  columns in W_o), so no tensor is copied at run time;
- ``exact-math``: no padding at all, each side at its own width, attention as two batched matmuls
  and a softmax over 128-query chunks (batch 1 only: it is the slowest).

Blocks are timed in turn, round after round (drift hits all alike), beside the dense encoder layer
(attention + MLP + norms) and the dense attention block run in each layout, so each layout is
judged against a dense model in that same layout. For each pattern and layout: the 12 blocks'
summed median time against 12 dense blocks, and the model-level share of the MAC saving realised
as time, ``(attention time saved / 12 dense layers) / (model MAC saving)`` (the patch embedding
and classifier, under 0.2 % of the MACs, are left out of the time). Writes
bench/results/attention_layouts.json.

    .venv/bin/python bench/attention_layouts.py     # about 6 min on 2 idle cores
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pruning import ast_base  # bench/pruning.py, beside this script
from torch import nn
from transformers import ASTForAudioClassification

from prunekit.evaluation import cost
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score
from prunekit.heads.surgery import apply_plan, kept_structure
from prunekit.models.ast import PrunedASTAttention, backbone
from prunekit.models.family import LayerStructure

PATTERNS = ("entire-head", "per-head", "same-channel")
TOKENS = 1214  # 12 x 101 patches of a 128-mel x 1024-frame input, plus CLS and distillation tokens
ROUNDS = {1: 9, 32: 3}
CHUNK = 128
OUT = Path(__file__).resolve().parent / "results" / "attention_layouts.json"


class WeightPadded(nn.Module):
    """A pruned attention block with the padding to a common head dim baked into its weights."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        heads, dqk, dv = block.num_heads, block.qk_head_dim, block.v_head_dim
        self.heads, self.width, self.scaling = heads, max(dqk, dv), block.scaling
        self.q = self._rows(block.q_proj, dqk)
        self.k = self._rows(block.k_proj, dqk)
        self.v = self._rows(block.v_proj, dv)
        weight = block.o_proj.weight.detach()  # (d, h*dv)
        padded = weight.new_zeros(weight.shape[0], heads, self.width)
        padded[..., :dv] = weight.view(weight.shape[0], heads, dv)
        self.o = (padded.reshape(weight.shape[0], -1), block.o_proj.bias.detach())  # (d, h*w), (d,)

    def _rows(self, linear: nn.Linear, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias = linear.weight.detach(), linear.bias.detach()  # (h*dim, d), (h*dim,)
        padded = weight.new_zeros(self.heads, self.width, weight.shape[1])
        padded[:, :dim] = weight.view(self.heads, dim, -1)
        padded_bias = bias.new_zeros(self.heads, self.width)
        padded_bias[:, :dim] = bias.view(self.heads, dim)
        return padded.reshape(-1, weight.shape[1]), padded_bias.reshape(-1)  # (h*w, d), (h*w,)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        batch, length, _ = hidden.shape

        def heads(weights):  # (B, h, T, w)
            return F.linear(hidden, *weights).view(batch, length, self.heads, self.width).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q), heads(self.k), heads(self.v), scale=self.scaling)
        return F.linear(out.transpose(1, 2).reshape(batch, length, -1), *self.o)


class ExactMath(nn.Module):
    """A pruned attention block at its own Q/K and V/O widths: matmul, softmax, matmul per chunk."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b = self.block
        batch, length, _ = hidden.shape
        query = b.q_proj(hidden).view(batch, length, b.num_heads, b.qk_head_dim).transpose(1, 2)
        key_t = b.k_proj(hidden).view(batch, length, b.num_heads, b.qk_head_dim).permute(0, 2, 3, 1)
        value = b.v_proj(hidden).view(batch, length, b.num_heads, b.v_head_dim).transpose(1, 2)
        key_t = key_t * b.scaling  # (B, h, dqk, T)
        out = value.new_empty(batch, b.num_heads, length, b.v_head_dim)
        for start in range(0, length, CHUNK):
            scores = torch.matmul(query[:, :, start : start + CHUNK], key_t).softmax(-1)
            torch.matmul(scores, value, out=out[:, :, start : start + CHUNK])
        return b.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


def dense_as_pruned(model: ASTForAudioClassification) -> PrunedASTAttention:
    """The first dense attention block as a ``PrunedASTAttention`` that keeps everything (same
    weights), so every layout can run it."""
    block = backbone(model).layers[0].attention
    config = model.config
    heads = config.num_attention_heads
    whole = PrunedASTAttention(
        config, LayerStructure(heads, config.hidden_size // heads, config.hidden_size // heads)
    )
    whole.load_state_dict(block.state_dict())
    return whole.eval()


def timed(modules: dict[str, Callable], hidden: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    times = {name: [] for name in modules}
    with torch.inference_mode():
        for module in modules.values():  # warm-up
            module(hidden)
        for _ in range(rounds):
            for name, module in modules.items():
                start = time.perf_counter()
                module(hidden)
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def differences(pruned: dict, modules: dict, hidden: torch.Tensor) -> dict[str, float]:
    """Largest absolute output difference of each layout from ``pad`` over every pruned block."""
    largest = {"weight-pad": 0.0, "exact-math": 0.0}
    with torch.inference_mode():
        for pattern, model in pruned.items():
            for i, layer in enumerate(backbone(model).layers):
                reference = layer.attention(hidden)[0]  # (1, T, d)
                for layout in largest:
                    diff = (modules[f"{pattern}/{layout}/{i}"](hidden) - reference).abs().max().item()
                    largest[layout] = max(largest[layout], diff)
    return largest


def main() -> None:
    torch.set_num_threads(2)
    dense = ast_base()
    scores = score(dense, "magnitude", cache=False)
    dense_macs = cost.count_macs(dense)
    pruned, report = {}, {"threads": 2, "tokens": TOKENS, "patterns": {}, "batches": {}}
    for pattern in PATTERNS:
        plan = make_plan(scores, pattern, "global", 0.5)
        pruned[pattern] = apply_plan(dense, plan)
        report["patterns"][pattern] = {
            "attention_sparsity": round(plan.attention_sparsity(), 4),
            "model_mac_saving": 1 - cost.count_macs(pruned[pattern]) / dense_macs,
            "structure": [s.to_dict() for s in kept_structure(plan)],
        }
    dense_layer = backbone(dense).layers[0]
    modules: dict[str, Callable] = {"dense layer": lambda x: dense_layer(x)}
    layouts = {"pad": lambda b: lambda x: b(x)[0], "weight-pad": WeightPadded, "exact-math": ExactMath}
    whole = dense_as_pruned(dense)
    for layout, make in layouts.items():  # the dense block in each layout: each is judged against its own
        modules[f"dense/{layout}"] = make(whole)
    for pattern, model in pruned.items():
        for i, layer in enumerate(backbone(model).layers):
            for layout, make in layouts.items():
                modules[f"{pattern}/{layout}/{i}"] = make(layer.attention)

    generator = torch.Generator().manual_seed(0)
    report["max_abs_difference_vs_pad"] = differences(
        pruned, modules, torch.randn(1, TOKENS, 768, generator=generator)
    )
    print(f"largest output difference from pad: {report['max_abs_difference_vs_pad']}", flush=True)
    for batch, rounds in ROUNDS.items():
        hidden = torch.randn(batch, TOKENS, 768, generator=generator)
        chosen = {k: m for k, m in modules.items() if batch == 1 or "exact-math" not in k}
        times = timed(chosen, hidden, rounds)
        median = {k: statistics.median(t) for k, t in times.items()}
        dense_layer_ms = median["dense layer"]  # attention (stock) + MLP + norms
        rows = {}
        for pattern in PATTERNS:
            mac_saving = report["patterns"][pattern]["model_mac_saving"]
            for layout in layouts:
                keys = [f"{pattern}/{layout}/{i}" for i in range(12)]
                if keys[0] not in median:
                    continue
                blocks = sum(median[k] for k in keys)
                low = sum(min(times[k]) for k in keys)
                high = sum(max(times[k]) for k in keys)
                dense_block = median[f"dense/{layout}"]
                layer = dense_layer_ms - median["dense/pad"] + dense_block  # the layer in this layout
                saved = 12 * dense_block - blocks
                rows[f"{pattern}/{layout}"] = {
                    "blocks_ms": round(blocks, 2),
                    "blocks_min_max_ms": [round(low, 2), round(high, 2)],
                    "attention_time_saving": round(saved / (12 * dense_block), 4),
                    "dense_block_ms": round(dense_block, 2),
                    "model_time_saving": round(saved / (12 * layer), 4),
                    "realised": round(saved / (12 * layer) / mac_saving, 3),
                }
                print(
                    f"batch {batch:>2} {pattern:12s} {layout:10s} {rows[f'{pattern}/{layout}']}", flush=True
                )
        report["batches"][batch] = {
            "rounds": rounds,
            "dense_layer_ms": round(dense_layer_ms, 2),
            "layouts": rows,
        }
    OUT.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
