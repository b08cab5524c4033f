"""One process against two CPU processes (torchrun, gloo) on the demo: Fisher scoring of 1,000
validation clips and one LoRA recovery epoch over a 500-clip train subset.

    .venv/bin/python bench/devices.py [--rounds 2] [--train-clips 500]

Each round launches the same job twice, in turn (interleaved, so a slow spell of a shared
machine hits both): one process with 2 threads, and ``torchrun --nproc_per_node 2`` with 1
thread per process (the same 2 cores). The job times, inside the process, Fisher scoring
(``score(..., cache=False)``) and ``recover_on`` for one epoch (validation on 300 clips at the
start and the end), after loading and featurising (cached by a warm-up launch). Reports
per round the 2-process / 1-process time ratio, its median and range, and the largest
difference between the two launches' Fisher scores and recovered weights. Writes
bench/results/devices.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "devices.json"


def worker(out: str, train_clips: int) -> None:
    """The timed job (run by each launch); rank 0 writes timings, scores and weights to ``out``."""
    import torch

    from prunekit.data.datasets import demo_dataset
    from prunekit.devices import processes, start_processes, stop_processes
    from prunekit.heads.scoring import score, scoring_data
    from prunekit.models import load_model
    from prunekit.recovery.lora import RecoveryConfig, recover_on, split_data

    start_processes("cpu")
    ranks = processes()
    model, extractor, labels = load_model("demo")
    dataset = demo_dataset()
    scoring = scoring_data(dataset, extractor, labels, "validation", clips=1000)
    train = split_data(dataset, extractor, labels, "train", train_clips, seed=0)
    validation = split_data(dataset, extractor, labels, "validation", 300, seed=0)
    if out.endswith("warm.pt"):  # the warm-up launch only fills the feature cache
        return

    def barrier() -> None:
        if ranks.world > 1:
            torch.distributed.barrier()

    barrier()
    t0 = time.perf_counter()
    table = score(model, "fisher", scoring, batch_size=32, cache=False)
    barrier()
    t1 = time.perf_counter()
    config = RecoveryConfig(lr=1e-3, epochs=1, batch_size=32)
    merged, history = recover_on(model, train, validation, config=config)
    barrier()
    t2 = time.perf_counter()
    if ranks.main:
        torch.save(
            {
                "world": ranks.world,
                "fisher_s": t1 - t0,
                "recovery_s": t2 - t1,
                "scores": table.frame["score"].to_numpy(),
                "weights": {k: v.detach().clone() for k, v in merged.state_dict().items()},
                "val_loss": history["val_loss"].to_numpy(),
            },
            out,
        )
    stop_processes()


def launch(nproc: int, out: Path, train_clips: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(2 // nproc), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    job = [str(Path(__file__).resolve()), "--worker", str(out), "--train-clips", str(train_clips)]
    head = [sys.executable]
    if nproc > 1:
        head += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    subprocess.run([*head, *job], cwd=REPO, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-clips", type=int, default=500)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.train_clips)
        return
    import torch

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        launch(1, Path(tmp) / "warm.pt", args.train_clips)  # features into the cache only
        rounds = []
        for r in range(args.rounds):
            got = {}
            for n in (1, 2) if r % 2 == 0 else (2, 1):  # alternate which goes first
                path = Path(tmp) / f"{r}-{n}.pt"
                launch(n, path, args.train_clips)
                got[n] = torch.load(path, weights_only=False)
            one, two = got[1], got[2]
            scores_abs = float(np.abs(two["scores"] - one["scores"]).max())
            scores_rel = float((np.abs(two["scores"] - one["scores"]) / np.abs(one["scores"])).max())
            weights = max(float((two["weights"][k] - w).abs().max()) for k, w in one["weights"].items())
            row = {
                "round": r,
                "fisher_s_1proc": one["fisher_s"],
                "fisher_s_2proc": two["fisher_s"],
                "recovery_s_1proc": one["recovery_s"],
                "recovery_s_2proc": two["recovery_s"],
                "fisher_max_abs_diff": scores_abs,
                "fisher_max_rel_diff": scores_rel,
                "recovered_weights_max_abs_diff": weights,
                "val_loss_1proc": one["val_loss"].tolist(),
                "val_loss_2proc": two["val_loss"].tolist(),
            }
            rounds.append(row)
            print(json.dumps(row))
    summary = {}
    for part in ("fisher", "recovery"):
        ratios = [r[f"{part}_s_2proc"] / r[f"{part}_s_1proc"] for r in rounds]
        summary[f"{part}_ratio_2proc_over_1proc"] = {
            "median": float(np.median(ratios)),
            "min": float(min(ratios)),
            "max": float(max(ratios)),
        }
        summary[f"{part}_s_1proc_median"] = float(np.median([r[f"{part}_s_1proc"] for r in rounds]))
        summary[f"{part}_s_2proc_median"] = float(np.median([r[f"{part}_s_2proc"] for r in rounds]))
    summary["fisher_max_rel_diff"] = max(r["fisher_max_rel_diff"] for r in rounds)
    summary["recovered_weights_max_abs_diff"] = max(r["recovered_weights_max_abs_diff"] for r in rounds)
    result = {
        "machine": f"{os.cpu_count()} cores; load average before the run {load[0]:.1f} "
        f"(after: {os.getloadavg()[0]:.1f}); shared with other jobs",
        "job": f"demo model; Fisher on 1,000 validation clips, batch 32; LoRA recovery 1 epoch over "
        f"{args.train_clips} train clips (batch 32, 300 validation clips)",
        "rounds": rounds,
        "summary": summary,
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
