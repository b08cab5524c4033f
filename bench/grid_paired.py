"""Paired comparisons in the demo grid: each configuration against dense, and the paper's pairs.

    .venv/bin/python bench/grid_paired.py                      # docs/sweep-demo -> bench/results/grid_paired.csv
    .venv/bin/python bench/grid_paired.py cache/sweeps/demo-grid --targets 0.3 0.5

A sweep keeps, for every step, which test clips the recovered model got right
(``correct_after``, see ``prunekit.evaluation.paired.pack_correct``). Every configuration and
seed is evaluated on the same clips, so two of them compare clip by clip. At each target
sparsity a run is read at its first step that reaches it (per-head steps land at 46.9 % and
52.2 %, so "50 %" is 52.2 % for them; the sparsity reached is in the output).

For each pair, seed by seed: McNemar's exact test and a 95 % bootstrap interval of the accuracy
difference. Over the seeds: the mean difference, and a 95 % interval from resampling clips (the
same draws for every seed, each clip's change averaged over the seeds). That interval covers the
sampling of test clips around this set of seeds; the seed range shows how much the recovery's
randomness moves a difference. Nothing here chooses anything: the pairs are fixed in advance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from prunekit.data.datasets import open_dataset
from prunekit.evaluation.paired import bootstrap_mean, compare_correct, unpack_correct

REPO = Path(__file__).resolve().parent.parent
RESAMPLES = 2000


def _pairs() -> list[tuple[str, tuple, tuple]]:
    """(question, reference, candidate); a configuration is (scorer, pattern, threshold), and
    "dense" is the unpruned model."""
    pairs = []
    for pattern in ("per-head", "entire-head"):
        for threshold in ("global", "local"):
            for scorer in ("fisher", "magnitude"):
                pairs.append(("against dense", "dense", (scorer, pattern, threshold)))
    for pattern in ("per-head", "entire-head"):
        for threshold in ("global", "local"):
            pairs.append(
                ("fisher vs magnitude", ("magnitude", pattern, threshold), ("fisher", pattern, threshold))
            )
    for threshold in ("global", "local"):
        for scorer in ("fisher", "magnitude"):
            pairs.append(
                (
                    "entire-head vs per-head",
                    (scorer, "per-head", threshold),
                    (scorer, "entire-head", threshold),
                )
            )
    for pattern in ("per-head", "entire-head"):
        pairs.append(
            ("magnitude global vs local", ("magnitude", pattern, "local"), ("magnitude", pattern, "global"))
        )
    return pairs


def _arrivals(results: pd.DataFrame, target: float, clips: int) -> dict:
    """{(scorer, pattern, threshold, seed): (sparsity, correct (N,) bool)} at the first step that
    reaches ``target`` (within half a point), and {("dense", seed): ...} from step 0."""
    out = {}
    for (scorer, pattern, threshold, seed), run in results.groupby(
        ["scorer", "pattern", "threshold", "seed"]
    ):
        run = run.sort_values("step")
        out["dense", seed] = (0.0, unpack_correct(run.iloc[0]["correct_after"], clips))
        reached = run[run["attention_sparsity"] >= target - 0.005]
        if len(reached):
            row = reached.iloc[0]
            out[(scorer, pattern, threshold), seed] = (
                float(row["attention_sparsity"]),
                unpack_correct(row["correct_after"], clips),
            )
    return out


def compare(results: pd.DataFrame, target: float, clips: int) -> pd.DataFrame:
    arrivals = _arrivals(results, target, clips)
    rows = []
    for question, reference, candidate in _pairs():
        seeds = [
            s
            for s in sorted(results["seed"].unique())
            if (reference, s) in arrivals and (candidate, s) in arrivals
        ]  # those both have reached the target (all, once the sweep is finished)
        if not seeds:
            continue
        per_seed = [
            compare_correct(arrivals[reference, s][1], arrivals[candidate, s][1], resamples=RESAMPLES, seed=s)
            for s in seeds
        ]
        change = np.mean(
            [
                arrivals[candidate, s][1].astype(float) - arrivals[reference, s][1].astype(float)
                for s in seeds
            ],
            axis=0,
        )  # (N,) each clip's change, averaged over the seeds
        # clips resampled, each clip's seeds kept together
        low, high = bootstrap_mean(change, resamples=RESAMPLES, seed=0)
        name = lambda c: c if c == "dense" else " ".join(c)  # noqa: E731
        rows.append(
            {
                "question": question,
                "target": target,
                "reference": name(reference),
                "candidate": name(candidate),
                "reference_sparsity": np.mean([arrivals[reference, s][0] for s in seeds]),
                "candidate_sparsity": np.mean([arrivals[candidate, s][0] for s in seeds]),
                "seeds": len(seeds),
                "reference_accuracy": np.mean([c.accuracy[0] for c in per_seed]),
                "candidate_accuracy": np.mean([c.accuracy[1] for c in per_seed]),
                "difference": float(change.mean()),
                "ci_low": float(low),
                "ci_high": float(high),
                "seed_differences": " ".join(f"{c.difference:+.4f}" for c in per_seed),
                "seed_ci": " ".join(f"[{c.ci[0]:+.4f},{c.ci[1]:+.4f}]" for c in per_seed),
                "seed_mcnemar_p": " ".join(f"{c.p_value:.3g}" for c in per_seed),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", type=Path, default=REPO / "docs" / "sweep-demo")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.3, 0.5, 0.6])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grid_paired.csv")
    args = parser.parse_args()
    settings = json.loads((args.sweep / "sweep.json").read_text())
    clips = len(open_dataset(settings["data"]).split(settings["run"]["eval_split"]))
    results = pd.read_csv(args.sweep / "results.csv")
    if "correct_after" not in results:
        raise SystemExit(f"{args.sweep} was made before sweeps kept per-clip results; run it again")
    table = pd.concat([compare(results, t, clips) for t in args.targets], ignore_index=True)
    table.to_csv(args.out, index=False, float_format="%.5g")
    shown = table[["question", "target", "reference", "candidate", "candidate_sparsity", "difference"]]
    shown = shown.assign(
        ci=[f"[{a * 100:+.1f}, {b * 100:+.1f}]" for a, b in zip(table.ci_low, table.ci_high)]
    )
    print(shown.assign(difference=shown["difference"] * 100).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
