"""Choose the demo grid's LoRA learning rate on validation data, never on the test split.

    .venv/bin/python bench/grid_lr.py oneshot     # bench/results/grid_lr.csv (about 6 min)
    .venv/bin/python bench/grid_lr.py iterative   # bench/results/grid_lr_iterative.csv (about 15 min)
    .venv/bin/python bench/grid_lr.py all-clips   # bench/results/grid_lr_all_clips.csv (about 12 min)

The grid (``prunekit sweep``) recovers each step with ``SWEEP_RECOVERY``: one epoch on a seeded
subset of 3,000 training clips, the best of two checkpoints (and the starting point) picked by
loss on 500 validation clips. Its learning rate was first compared on the test split; this script
makes the choice where it belongs. Two processes of one thread each, side by side.

``oneshot``: the demo pruned one-shot to 50 % attention sparsity by per-head global Fisher
(separate Q/K and V/O budgets) and by per-head global magnitude, recovered once per rate and seed;
the score is accuracy on the validation clips the checkpoint choice did not see.

``iterative``: what the grid does, on validation data: ``prunekit sweep --split validation`` for
per-head global Fisher and magnitude, 7 geometric steps (to 52 %), seed 0, once per rate; the
score is validation accuracy after each step's recovery (all 1,330 validation clips, which
include the 500 that pick checkpoints and the 1,000 Fisher reads). The test split is not read.

``all-clips``: the same for Fisher alone, recovering on the whole train split (10,780 clips, 337
optimiser steps) at every step instead of 3,000: does more recovery data close the gap to dense?
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from prunekit.data.datasets import demo_dataset, label_indices
from prunekit.data.features import clip_features
from prunekit.evaluation.metrics import predict_logits
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score, scoring_data, seeded_subset
from prunekit.heads.surgery import apply_plan
from prunekit.models import load_model
from prunekit.recovery.lora import recover
from prunekit.recovery.sweep import SWEEP_RECOVERY

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def _unseen_validation(dataset, extractor, labels, seed: int, seen: int):
    """Features and targets of the validation clips outside recovery's seeded checkpoint subset."""
    pool = dataset.split("validation")
    chosen = {clip.path for clip in seeded_subset(pool, seen, seed)}
    rest = [clip for clip in pool if clip.path not in chosen]
    return clip_features(rest, extractor), label_indices(rest, labels)


def iterative(
    rates=(1e-3, 3e-3),
    out: Path = RESULTS / "grid_lr_iterative.csv",
    scorers=("fisher", "magnitude"),
    train_clips: str = "3000",
    prefix: str = "lr",
) -> None:
    """One validation-evaluated sweep per rate, side by side; their steps in one CSV."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    folders = {lr: REPO / "cache" / "sweeps" / f"{prefix}-{lr:g}" for lr in rates}
    grid = ["--overwrite", "--scorers", *scorers, "--patterns", "per-head", "--thresholds", "global"]
    grid += ["--seeds", "0", "--steps", "7", "--split", "validation", "--device", "cpu"]
    grid += ["--train-clips", train_clips]
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "prunekit", "sweep", "--out", str(folder), *grid, "--lr", f"{lr:g}"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for lr, folder in folders.items()
    ]
    if any(p.wait() for p in launches):
        raise SystemExit("a sweep failed; run it alone to see why")
    summarise(folders, out)


def summarise(folders: dict[float, Path], out: Path) -> None:
    columns = ["scorer", "step", "attention_sparsity", "accuracy_before", "accuracy_after"]
    steps = pd.concat(
        [pd.read_csv(folder / "results.csv")[columns].assign(lr=lr) for lr, folder in folders.items()]
    )
    steps.to_csv(out, index=False)
    after = steps[steps["step"] > 0].pivot_table(index="lr", columns="scorer", values="accuracy_after")
    after["both"] = after.mean(axis=1)
    print("mean validation accuracy after recovery over steps 1-7:\n" + after.to_string())


def main() -> None:
    if sys.argv[1:2] == ["iterative"]:
        return iterative()
    if sys.argv[1:2] == ["all-clips"]:  # Fisher alone, recovering on the whole train split per step
        return iterative(
            out=RESULTS / "grid_lr_all_clips.csv", scorers=("fisher",), train_clips="all", prefix="all"
        )
    if sys.argv[1:2] == ["oneshot"]:
        sys.argv.pop(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--scorers", nargs="+", default=["fisher", "magnitude"])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "grid_lr.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, extractor, labels = load_model("demo")
    dataset = demo_dataset()
    data = scoring_data(dataset, extractor, labels, "validation", clips=SWEEP_RECOVERY.validation_clips * 2)
    rows = []
    for scorer in args.scorers:
        plan = make_plan(score(model, scorer, data), "per-head", "global", args.target, budget="separate")
        pruned = apply_plan(model, plan)
        for seed in args.seeds:
            features, targets = _unseen_validation(
                dataset, extractor, labels, seed, SWEEP_RECOVERY.validation_clips
            )
            before = (predict_logits(pruned, features).argmax(1).numpy() == targets).mean()
            for lr in args.rates:
                config = dataclasses.replace(SWEEP_RECOVERY, lr=lr, seed=seed)
                started = time.perf_counter()
                recovered, history = recover(pruned, extractor, labels, dataset, config=config)
                seconds = time.perf_counter() - started
                after = (predict_logits(recovered, features).argmax(1).numpy() == targets).mean()
                rows.append(
                    {
                        "scorer": scorer,
                        "target": args.target,
                        "seed": seed,
                        "lr": lr,
                        "unseen_validation_clips": len(targets),
                        "accuracy_before": round(float(before), 5),
                        "accuracy_after": round(float(after), 5),
                        "kept_step": int(history.loc[history["kept"], "step"].iloc[0]),
                        "recovery_seconds": round(seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
                pd.DataFrame(rows).to_csv(args.out, index=False)
    table = pd.DataFrame(rows).groupby(["scorer", "lr"])["accuracy_after"].agg(["mean", "min", "max"])
    print(table.to_string())


if __name__ == "__main__":
    main()
