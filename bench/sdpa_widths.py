"""What CPU attention costs per head width at AST-base size (issue #15 item 4's question).

Per-head and same-channel pruning narrow each head's Q/K and V/O dims; the pruned attention pads
the narrower side to a common width so CPU ``sdpa`` keeps its fast kernel. This measures the
kernel alone, at 12 heads x 1,212 tokens (a 10-s clip), batch 1 and 32, for equal widths 16-64
and one unequal pair (the math path the padding avoids). Widths are timed in turn, round after
round, so drift hits all alike; medians with min-max over rounds. Writes
bench/results/sdpa_widths.json.

    .venv/bin/python bench/sdpa_widths.py      # about 3 min on 2 idle cores
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HEADS, TOKENS = 12, 1212
PAIRS = [(d, d) for d in (16, 24, 32, 40, 48, 56, 64)] + [(32, 64)]
ROUNDS = {1: 9, 32: 3}
OUT = Path(__file__).resolve().parent / "results" / "sdpa_widths.json"


def main() -> None:
    torch.set_num_threads(2)
    report = {"threads": 2, "heads": HEADS, "tokens": TOKENS, "batches": {}}
    for batch, rounds in ROUNDS.items():
        gen = torch.Generator().manual_seed(0)
        inputs = {
            (dq, dv): (
                torch.randn(batch, HEADS, TOKENS, dq, generator=gen),
                torch.randn(batch, HEADS, TOKENS, dq, generator=gen),
                torch.randn(batch, HEADS, TOKENS, dv, generator=gen),
            )
            for dq, dv in PAIRS
        }
        times = {pair: [] for pair in PAIRS}
        with torch.inference_mode():
            for q, k, v in inputs.values():
                F.scaled_dot_product_attention(q, k, v)  # warm-up
            for _ in range(rounds):
                for pair, (q, k, v) in inputs.items():
                    start = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v)
                    times[pair].append(1000 * (time.perf_counter() - start))
        report["batches"][batch] = {
            f"{dq}/{dv}": {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t)}
            for (dq, dv), t in times.items()
        }
        for name, row in report["batches"][batch].items():
            print(
                f"batch {batch:>2}  q/k {name:>5}: {row['median_ms']:8.1f} ms ({row['min_ms']:.1f}-{row['max_ms']:.1f})"
            )
    OUT.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
