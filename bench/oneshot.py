"""One-shot pruning of the demo (no recovery): test accuracy per scorer x pattern x threshold x budget.

    .venv/bin/python bench/oneshot.py      # writes bench/results/oneshot.csv and oneshot_paired.csv
    .venv/bin/python bench/oneshot.py --scorers fisher magnitude random --targets 0.5 --random-seeds 0

What an interactive user tries first: score once (1000 validation clips for the gradient
scorers), prune to 30 % and 50 % attention sparsity, evaluate on the 1,330 test clips of
held-out voices. Global per-head and same-channel plans are made with separate Q/K and V/O
budgets (the default, the paper's) and with the joint one. ``random`` is the floor a scorer must
beat (mean of 3 seeds). Nothing here is chosen on the test split: scorers, targets and budgets
are fixed in advance, and each configuration's test accuracy is read once.

oneshot_paired.csv holds paired comparisons on the same test clips (McNemar's exact test and a
95 % bootstrap interval of the accuracy difference, 2,000 resamples): Fisher against magnitude
for every configuration, separate against joint budgets, entire-head against per-head and
global against local magnitude.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent

from prunekit.data.datasets import demo_dataset
from prunekit.evaluation import metrics
from prunekit.evaluation.paired import compare_evaluations
from prunekit.heads.planner import budget_applies, make_plan
from prunekit.heads.scoring import score, scoring_data
from prunekit.heads.surgery import apply_plan
from prunekit.models import load_model

SCORERS = ("fisher", "fisher-sample", "fisher-gate", "taylor", "magnitude", "random")
PATTERNS = ("entire-head", "per-head", "same-channel")
SPARSITIES = (0.3, 0.5)
RESULTS = REPO / "bench" / "results"


def _configurations():
    """(pattern, threshold, budget); budget "-" where it does not apply."""
    for pattern in PATTERNS:
        for threshold in ("global", "local"):
            for budget in (("separate", "joint") if budget_applies(pattern, threshold) else ("-",)):
                yield pattern, threshold, budget


def _group_removed(plan) -> dict[str, float]:
    """Share of the Q/K and of the V/O channels the plan removes."""
    out = {}
    for group in ("qk", "vo"):
        dense = sum(s.heads * (s.qk_dim if group == "qk" else s.v_dim) for s in plan.base)
        kept = sum(lp.qk_channels if group == "qk" else lp.vo_channels for lp in plan.layers)
        out[f"{group}_removed"] = round(1 - kept / dense, 4)
    return out


def _comparisons(evaluations: dict, targets) -> pd.DataFrame:
    """Paired comparisons of fixed pairs of configurations (keys: scorer, pattern, threshold,
    budget, target), reference first; pairs with a configuration not run are left out."""
    pairs = []
    for pattern, threshold, budget in _configurations():
        for target in targets:
            pairs.append(("fisher vs magnitude", ("magnitude", pattern, threshold, budget, target),
                          ("fisher", pattern, threshold, budget, target)))
            if budget == "separate":
                for scorer in ("fisher", "magnitude"):
                    pairs.append(("separate vs joint", (scorer, pattern, threshold, "joint", target),
                                  (scorer, pattern, threshold, "separate", target)))
    for target in targets:
        for threshold, budget in (("global", "separate"), ("local", "-")):
            pairs.append(("entire-head vs per-head", ("fisher", "per-head", threshold, budget, target),
                          ("fisher", "entire-head", threshold, "-", target)))
        for pattern in PATTERNS:
            budget = "separate" if budget_applies(pattern, "global") else "-"
            pairs.append(("magnitude global vs local", ("magnitude", pattern, "local", "-", target),
                          ("magnitude", pattern, "global", budget, target)))
    rows = []
    for question, reference, candidate in pairs:
        if reference not in evaluations or candidate not in evaluations:
            continue
        result = compare_evaluations(evaluations[reference], evaluations[candidate], names=("reference", "candidate"))
        rows.append({"question": question, **{f"reference_{k}": v for k, v in zip(
                         ("scorer", "pattern", "threshold", "budget", "target"), reference)},
                     **{f"candidate_{k}": v for k, v in zip(("scorer", "pattern", "threshold", "budget"), candidate)},
                     "reference_accuracy": result.accuracy[0], "candidate_accuracy": result.accuracy[1],
                     "difference": result.difference, "ci_low": result.ci[0], "ci_high": result.ci[1],
                     "only_reference": result.only_reference, "only_candidate": result.only_candidate,
                     "mcnemar_p": result.p_value})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    parser.add_argument("--targets", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--random-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the two CSVs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    model, extractor, labels = load_model("demo")
    dataset = demo_dataset()
    data = scoring_data(dataset, extractor, labels, "validation", clips=1000)
    dense = metrics.evaluate(model, extractor, labels, dataset, "test").accuracy
    rows, evaluations = [], {}
    for scorer in args.scorers:
        seeds = args.random_seeds if scorer == "random" else (0,)
        for seed in seeds:
            scores = score(model, scorer, data, seed=seed)
            for pattern, threshold, budget in _configurations():
                for target in args.targets:
                    plan = make_plan(scores, pattern, threshold, target,
                                     budget="separate" if budget == "-" else budget)
                    result = metrics.evaluate(apply_plan(model, plan), extractor, labels, dataset, "test")
                    if scorer != "random":
                        evaluations[scorer, pattern, threshold, budget, target] = result
                    rows.append({"scorer": scorer, "seed": seed, "pattern": pattern, "threshold": threshold,
                                 "budget": budget, "target": target, "sparsity": round(plan.attention_sparsity(), 4),
                                 **_group_removed(plan), "accuracy": result.accuracy, "dense_accuracy": dense})
        print(f"{scorer} done ({time.perf_counter() - started:.0f} s)", flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "oneshot.csv", index=False)
    paired = _comparisons(evaluations, args.targets)
    paired.to_csv(args.out / "oneshot_paired.csv", index=False)
    table = (frame.pivot_table(index=["pattern", "threshold", "budget", "target"], columns="scorer",
                               values="accuracy", aggfunc="mean")[list(args.scorers)].mul(100).round(1))
    print(f"dense test accuracy {100 * dense:.1f} %; one-shot accuracy (%) by scorer:")
    print(table.to_string())
    print("paired comparisons (candidate minus reference, points; McNemar exact p):")
    for r in paired.itertuples():
        print(f"{r.question}: {r.candidate_scorer} {r.candidate_pattern} {r.candidate_threshold} "
              f"{r.candidate_budget} vs {r.reference_scorer} {r.reference_pattern} {r.reference_threshold} "
              f"{r.reference_budget} at {r.reference_target:.0%}: {100 * r.difference:+.1f} "
              f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}], p = {r.mcnemar_p:.2g}")
    print(f"written to {args.out / 'oneshot.csv'} and {args.out / 'oneshot_paired.csv'} "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
