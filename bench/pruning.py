"""Pruning-core figures: what scoring costs, whether surgery makes models faster, Fisher's memory.

    .venv/bin/python bench/pruning.py            # writes bench/results/pruning.json
    .venv/bin/python bench/pruning.py --quick    # demo model only (no AST-base-sized runs)

1. Scoring cost: time of each gradient scorer over N validation clips of the demo divided by the
   time of a plain forward + backward (all parameters, batch-mean loss) over the same clips.
2. Speed of what surgery produces: MACs (torch.utils.flop_counter) and median latency (the
   variants timed in turn, round after round) at batch 1 and 32 of dense vs each pattern at 50 % attention sparsity (global threshold), on the demo
   model (Fisher scores) and on an AST-base-sized model (12 layers x 12 heads x 768, random
   weights, 1024 frames x 128 mels: a 10 s clip; magnitude scores, since its weights are random).
3. Memory: peak RSS of a process that loads the AST-base-sized model and runs ``fisher`` on one
   batch of 4 clips of 1024 frames.
All on 2 threads (the target machine has 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from prunekit.evaluation import cost
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import ScoringData, score, scoring_data
from prunekit.heads.surgery import apply_plan
from prunekit.models import anatomy

REPO = Path(__file__).resolve().parent.parent
PATTERNS = ("entire-head", "per-head", "same-channel")


def ast_base(seed: int = 0):
    from transformers import ASTConfig, ASTForAudioClassification

    torch.manual_seed(seed)
    config = ASTConfig(num_labels=35)  # the defaults are AST-base: 768 x 12 x 12, 128 mels x 1024 frames
    return ASTForAudioClassification(config).eval()


def plain_forward_backward(model, data: ScoringData, batch_size: int) -> float:
    """Seconds for forward + backward of the batch-mean loss over every clip, all parameters."""
    work = type(model)(model.config).eval()
    work.load_state_dict(model.state_dict())
    start = time.perf_counter()
    for i in range(0, len(data.features), batch_size):
        logits = work(data.features[i : i + batch_size]).logits
        torch.nn.functional.cross_entropy(logits, data.targets[i : i + batch_size]).backward()
        work.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def scoring_cost(model, data: ScoringData, batch_size: int = 32, repeats: int = 3) -> dict:
    plain = [plain_forward_backward(model, data, batch_size) for _ in range(repeats)]
    out = {
        "clips": len(data.features),
        "batch_size": batch_size,
        "plain_forward_backward_s": round(statistics.median(plain), 3),
    }
    for scorer in ("fisher", "fisher-sample", "fisher-gate", "taylor"):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            score(model, scorer, data, batch_size=batch_size, cache=False)
            times.append(time.perf_counter() - start)
        out[f"{scorer}_s"] = round(statistics.median(times), 3)
        out[f"{scorer}_ratio"] = round(statistics.median(times) / statistics.median(plain), 3)
    return out


def speed(model, scores, batches: tuple[int, ...], repeats: dict[int, int]) -> list[dict]:
    """MACs and interleaved latency of dense vs each pattern at 50 % (global); ``repeats`` gives
    the timed rounds per batch size."""
    variants, meta = {"dense": model}, {"dense": "-"}
    for pattern in PATTERNS:
        plan = make_plan(scores, pattern, "global", 0.5)
        variants[pattern], meta[pattern] = apply_plan(model, plan), f"{plan.attention_sparsity():.3f}"
    table = cost.compare_cost(variants, batches=())
    for b in batches:  # each batch size with its own number of rounds
        table[f"latency_b{b}_ms"] = cost.latencies_ms(
            list(variants.values()), b, repeats=repeats[b], warmup=2
        )
    rows = []
    for name, row in table.iterrows():
        rows.append(
            {
                "variant": name,
                "attention_sparsity": meta[name],
                "parameters": int(row["parameters"]),
                "macs_per_clip": int(row["macs_per_clip"]),
                "heads": anatomy.describe(variants[name])["heads"],
                **{f"latency_b{b}_ms": round(float(row[f"latency_b{b}_ms"]), 2) for b in batches},
            }
        )
        print(f"  {name:13s} {rows[-1]}", flush=True)
    dense = rows[0]
    for row in rows:
        row["mac_saving"] = round(1 - row["macs_per_clip"] / dense["macs_per_clip"], 4)
        for b in batches:
            row[f"latency_saving_b{b}"] = round(1 - row[f"latency_b{b}_ms"] / dense[f"latency_b{b}_ms"], 4)
    return rows


def fisher_memory_child() -> None:
    """Run in a fresh process: AST-base-sized fisher on 4 clips of 1024 frames; print peak RSS."""
    torch.set_num_threads(2)
    model = ast_base()
    g = torch.Generator().manual_seed(0)
    data = ScoringData(torch.randn(4, 1024, 128, generator=g), torch.randint(0, 35, (4,), generator=g))
    start = time.perf_counter()
    score(model, "fisher", data, batch_size=4, cache=False)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_gb": round(peak_kb / 1024**2, 2), "fisher_one_batch_s": round(seconds, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="demo model only")
    parser.add_argument("--clips", type=int, default=256, help="clips for the scoring-cost ratio")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from prunekit.data.datasets import demo_dataset
    from prunekit.models import load_model

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 2 threads",
        "torch": torch.__version__,
    }
    model, extractor, labels = load_model("demo")
    data = scoring_data(demo_dataset(), extractor, labels, "validation", clips=args.clips)

    print("1. scoring cost on the demo model", flush=True)
    results["scoring_cost_demo"] = scoring_cost(model, data)
    print(f"  {results['scoring_cost_demo']}", flush=True)

    print("2. speed: demo model, fisher scores, 50 % global", flush=True)
    fisher = score(model, "fisher", scoring_data(demo_dataset(), extractor, labels, "validation", clips=1000))
    results["speed_demo"] = speed(model, fisher, batches=(1, 32), repeats={1: 300, 32: 40})

    if not args.quick:
        print("2. speed: AST-base-sized model, 1024 frames, magnitude scores, 50 % global", flush=True)
        base = ast_base()
        results["speed_ast_base"] = speed(
            base, score(base, "magnitude", cache=False), batches=(1,), repeats={1: 5}
        )
        del base
        print("3. memory: fisher on the AST-base-sized model, batch 4 x 1024 frames", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--memory-child"], capture_output=True, text=True, check=True
        )
        results["fisher_memory_ast_base"] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"  {results['fisher_memory_ast_base']}", flush=True)

    out = REPO / "bench" / "results" / ("pruning-quick.json" if args.quick else "pruning.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    if "--memory-child" in sys.argv:
        fisher_memory_child()
    else:
        main()
