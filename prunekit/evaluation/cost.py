"""What a model costs: parameters, MACs per clip (``torch.utils.flop_counter``) and latency.

Latencies of several models are measured interleaved, round after round, so a slow spell of a
shared machine hits all of them alike (see ``latencies_ms``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from prunekit.models import anatomy

__all__ = ["compare_cost", "cost", "count_macs", "latencies_ms"]


def count_macs(model: torch.nn.Module, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` (FlopCounterMode flops / 2).

    FlopCounterMode does not count CPU SDPA kernels, so a copy of the model runs with eager
    attention (explicit matmuls, same maths). The model passed in is not changed.
    """
    probe = copy.deepcopy(model).eval()
    probe.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        probe(anatomy.dummy_input(probe, batch))
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def latencies_ms(models: Sequence[torch.nn.Module], batch: int, *, repeats: int = 20,
                 warmup: int = 3) -> list[float]:
    """Median wall time (ms) of a forward pass at ``batch`` for each model, warm-up excluded.

    The models are timed in turn, round after round, so a slow spell of the machine (its speed
    drifts by 10-30 % within a minute on shared CPUs) hits all of them instead of one: timing
    one model after the other made such drift look like a speed-up or a slow-down.
    """
    modes = [m.training for m in models]
    x = anatomy.dummy_input(models[0], batch)
    times: list[list[float]] = [[] for _ in models]
    try:
        for m in models:
            m.eval()
            for _ in range(warmup):
                m(x)
        for _ in range(repeats):
            for m, bucket in zip(models, times):
                start = time.perf_counter()
                m(x)
                bucket.append(time.perf_counter() - start)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return [1000 * statistics.median(t) for t in times]


def compare_cost(models: Mapping[str, torch.nn.Module], *, batches: Sequence[int] = (1, 32),
                 repeats: int = 20) -> pd.DataFrame:
    """One row per named model: parameters, attention parameters, MACs per clip and latency per
    batch size, the latencies of all models measured interleaved (see ``latencies_ms``)."""
    frame = pd.DataFrame([{
        "parameters": sum(p.numel() for p in m.parameters()),
        "attention_parameters": anatomy.attention_parameters(m),
        "macs_per_clip": count_macs(m, 1),
    } for m in models.values()], index=pd.Index(list(models), name="model"))
    for b in batches:
        rounds = repeats if b <= 8 else max(3, repeats // 4)
        frame[f"latency_b{b}_ms"] = latencies_ms(list(models.values()), b, repeats=rounds)
    return frame


def cost(model: torch.nn.Module, *, batches: Sequence[int] = (1, 32), repeats: int = 20) -> pd.DataFrame:
    """One row: parameters, attention parameters, MACs per clip and latency per batch size."""
    return compare_cost({"model": model}, batches=batches, repeats=repeats).reset_index(drop=True)
