"""What a model costs: parameters, MACs per clip (``torch.utils.flop_counter``) and latency.

Latencies of several models are measured interleaved, round after round, so a slow spell of a
shared machine hits all of them alike (see ``latencies_ms``).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from prunekit.devices import model_device, synchronize
from prunekit.errors import ConfigurationError
from prunekit.models import anatomy

__all__ = [
    "LARGE_BATCH_MACS",
    "LatencyRatio",
    "batches_to_time",
    "compare_cost",
    "cost",
    "count_macs",
    "latencies_ms",
    "latency_ratio",
    "ratio_from",
    "round_times_ms",
    "timed_batches",
]


def count_macs(model: torch.nn.Module, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` (FlopCounterMode flops / 2).

    FlopCounterMode does not count CPU SDPA kernels, so a copy of the model runs with eager
    attention (explicit matmuls, same maths). The model passed in is not changed.
    """
    probe = copy.deepcopy(model).eval()
    probe.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        probe(anatomy.dummy_input(probe, batch).to(model_device(probe)))
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def round_times_ms(
    models: Sequence[torch.nn.Module], batch: int, *, repeats: int = 20, warmup: int = 3
) -> np.ndarray:
    """Wall time (ms) of a forward pass at ``batch``: (repeats, models), warm-up excluded.

    The models are timed in turn, round after round, so a slow spell of the machine (its speed
    drifts by 10-30 % within a minute on shared CPUs) hits all of them instead of one: timing
    one model after the other made such drift look like a speed-up or a slow-down.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigurationError(f"Timing needs repeats >= 1 and warmup >= 0, got {repeats=}, {warmup=}")
    modes = [m.training for m in models]
    device = model_device(models[0])  # the models run where they are (a GPU is synchronised)
    x = anatomy.dummy_input(models[0], batch).to(device)
    times = np.zeros((repeats, len(models)))
    try:
        for m in models:
            m.eval()
            for _ in range(warmup):
                m(x)
        for r in range(repeats):
            for i, m in enumerate(models):
                synchronize(device)
                start = time.perf_counter()
                m(x)
                synchronize(device)
                times[r, i] = 1000 * (time.perf_counter() - start)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return times


def latencies_ms(
    models: Sequence[torch.nn.Module], batch: int, *, repeats: int = 20, warmup: int = 3
) -> list[float]:
    """Median wall time (ms) of a forward pass at ``batch`` for each model (see ``round_times_ms``)."""
    return [
        float(v) for v in np.median(round_times_ms(models, batch, repeats=repeats, warmup=warmup), axis=0)
    ]


@dataclass(frozen=True)
class LatencyRatio:
    """``model / reference`` latency: the median of the per-round ratios and its 95 % bootstrap
    interval (rounds resampled, seeded). A ratio below 1 is faster."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def measurable(self) -> bool:
        """False when the interval covers 1: no difference this timing can tell apart from noise."""
        return not (self.low <= 1.0 <= self.high)

    def describe(self, faster: str = "faster", slower: str = "slower") -> str:
        """Plain words: "runs 17 % faster (95 % CI 12 to 21 %)" or "no measurable difference"."""
        if not self.measurable:
            return f"no measurable difference in speed (ratio {self.median:.2f}, 95 % CI {self.low:.2f} to {self.high:.2f})"
        change = 1 - self.median
        word, lo, hi = (
            (faster, 1 - self.high, 1 - self.low) if change > 0 else (slower, self.low - 1, self.high - 1)
        )
        return f"runs {abs(change):.0%} {word} (95 % CI {lo:.0%} to {hi:.0%})"


def latency_ratio(
    reference: torch.nn.Module, model: torch.nn.Module, batch: int, *, repeats: int = 20, warmup: int = 3
) -> LatencyRatio:
    """How ``model``'s latency compares with ``reference``'s, timed interleaved, round by round."""
    times = round_times_ms([reference, model], batch, repeats=repeats, warmup=warmup)
    return _ratio(times[:, 0], times[:, 1])


def _ratio(
    reference_ms: np.ndarray, model_ms: np.ndarray, resamples: int = 2000, seed: int = 0
) -> LatencyRatio:
    """Median of the per-round ratios (each round's pair saw the same machine state) and a seeded
    percentile-bootstrap interval of that median over rounds."""
    ratios = model_ms / reference_ms  # (rounds,)
    rng = np.random.default_rng(seed)
    medians = np.median(ratios[rng.integers(0, len(ratios), (resamples, len(ratios)))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return LatencyRatio(float(np.median(ratios)), float(low), float(high), len(ratios))


# Above this many MACs per clip, the app times batch 1 only on a CPU: AST-base (12.8 G MACs a
# 1 s clip) takes 10.6 s per batch of 32 on one thread here, so batch 32's interleaved rounds
# added about 90 s to each Apply (bench/ast_base_app.py). The CLI times what it is asked to.
LARGE_BATCH_MACS = 2e9


def batches_to_time(macs_per_clip: float, device: str | torch.device = "cpu") -> tuple[int, ...]:
    """The batch sizes the app times: 1 and 32, or 1 alone for a model above
    ``LARGE_BATCH_MACS`` a clip on a CPU (on a GPU batch 32 is cheap)."""
    on_cpu = torch.device(device).type == "cpu"
    return (1,) if on_cpu and macs_per_clip > LARGE_BATCH_MACS else (1, 32)


def timed_batches(cost: pd.DataFrame | pd.Series) -> list[int]:
    """The batch sizes a ``compare_cost`` frame (or one of its rows) holds latencies for, ascending:
    the app times batch 32 only where it is cheap (``batches_to_time``)."""
    names = cost.columns if isinstance(cost, pd.DataFrame) else cost.index
    return sorted(int(m.group(1)) for m in map(re.compile(r"latency_b(\d+)_ms$").match, names) if m)


def compare_cost(
    models: Mapping[str, torch.nn.Module], *, batches: Sequence[int] = (1, 32), repeats: int = 20
) -> pd.DataFrame:
    """One row per named model: parameters, attention parameters, MACs per clip and, per batch
    size, the median latency and the latency ratio to the FIRST model with its 95 % bootstrap
    interval (``latency_b32_ratio``, ``_ratio_low``, ``_ratio_high``), all models timed
    interleaved round by round (see ``round_times_ms``)."""
    frame = pd.DataFrame(
        [
            {
                "parameters": sum(p.numel() for p in m.parameters()),
                "attention_parameters": anatomy.attention_parameters(m),
                "macs_per_clip": count_macs(m, 1),
            }
            for m in models.values()
        ],
        index=pd.Index(list(models), name="model"),
    )
    for b in batches:
        rounds = repeats if b <= 8 else max(3, repeats // 4)
        times = round_times_ms(list(models.values()), b, repeats=rounds)  # (rounds, models)
        frame[f"latency_b{b}_ms"] = np.median(times, axis=0)
        ratios = [_ratio(times[:, 0], times[:, i]) for i in range(times.shape[1])]
        frame[f"latency_b{b}_ratio"] = [r.median for r in ratios]
        frame[f"latency_b{b}_ratio_low"] = [r.low for r in ratios]
        frame[f"latency_b{b}_ratio_high"] = [r.high for r in ratios]
        frame[f"latency_b{b}_rounds"] = rounds
    return frame


def ratio_from(row: pd.Series, batch: int) -> LatencyRatio:
    """The ``LatencyRatio`` stored in a ``compare_cost`` row for ``batch``."""
    return LatencyRatio(
        float(row[f"latency_b{batch}_ratio"]),
        float(row[f"latency_b{batch}_ratio_low"]),
        float(row[f"latency_b{batch}_ratio_high"]),
        int(row[f"latency_b{batch}_rounds"]),
    )


def cost(model: torch.nn.Module, *, batches: Sequence[int] = (1, 32), repeats: int = 20) -> pd.DataFrame:
    """One row: parameters, attention parameters, MACs per clip and latency per batch size."""
    return compare_cost({"model": model}, batches=batches, repeats=repeats).reset_index(drop=True)
