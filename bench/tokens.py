"""Token pruning of the demo: accuracy against MACs per rule and keep rate, latency, scoring
overhead, patch importance, the stack with head pruning, and a small fine-tuned run.

    nice -n 10 .venv/bin/python bench/tokens.py [oneshot] [latency] [patches] [stack] [finetune]
        [stack-recovered]

(BENCH_THREADS=1 to run it beside another job.)

Writes bench/results/tokens/<part>.csv (and .json) and prints what it measured. Every accuracy
is read on the 1,330 test clips of held-out voices once per reported number; choices (which
fine-tuning checkpoint) are made on the validation split. Seeds: ``random`` rule seeds 0, 1, 2;
the fine-tuning grid's seed s seeds the run, its train subset and (for ``random``) the rule.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from prunekit.data.datasets import demo_dataset
from prunekit.evaluation.cost import compare_cost, count_macs
from prunekit.evaluation.metrics import classification_metrics, predict_logits
from prunekit.evaluation.paired import compare_correct
from prunekit.heads.scoring import scoring_data
from prunekit.models import load_model
from prunekit.models.token_rules import RULES
from prunekit.recovery.lora import split_data
from prunekit.tokens import patches
from prunekit.tokens.finetune import TokenFinetuneConfig, finetune_tokens_on
from prunekit.tokens.topk import prune_tokens

REPO = Path(__file__).resolve().parent.parent

OUT = REPO / "bench" / "results" / "tokens"
KEEPS = (0.9, 0.8, 0.7, 0.6, 0.5)


def _accuracy(model, data) -> float:
    logits = predict_logits(model, data.features)
    return float((logits.argmax(-1) == data.targets).float().mean())


def _write(name: str, frame: pd.DataFrame, extra: dict | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    frame.to_csv(OUT / f"{name}.csv", index=False)
    if extra is not None:
        (OUT / f"{name}.json").write_text(json.dumps(extra, indent=2, default=float) + "\n")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)


def oneshot(model, val, test) -> None:
    """Validation and test accuracy and MACs per clip for every rule x keep rate, no fine-tuning."""
    dense_macs = count_macs(model)
    rows = [
        {
            "rule": "dense",
            "seed": 0,
            "keep": 1.0,
            "macs": dense_macs,
            "val_accuracy": _accuracy(model, val),
            "test_accuracy": _accuracy(model, test),
        }
    ]
    for rule in RULES:
        for seed in (0, 1, 2) if rule == "random" else (0,):
            for keep in KEEPS:
                pruned = prune_tokens(model, keep, rule=rule, seed=seed)
                rows.append(
                    {
                        "rule": rule,
                        "seed": seed,
                        "keep": keep,
                        "macs": count_macs(pruned),
                        "val_accuracy": _accuracy(pruned, val),
                        "test_accuracy": _accuracy(pruned, test),
                    }
                )
    frame = pd.DataFrame(rows)
    frame["mac_saving"] = 1 - frame["macs"] / dense_macs
    _write("oneshot", frame)


def latency(model, repeats: int = 200) -> None:
    """Latency at batch 1 and 32 of dense and every keep rate (cls), all timed interleaved round
    by round, as ratios to dense with their 95 % bootstrap intervals over rounds; and cls against
    random at keep 0.5 (the scoring overhead), interleaved too. ``repeats`` rounds at batch 1,
    a quarter of them at batch 32."""
    variants = {"dense": model} | {f"keep {k}": prune_tokens(model, k) for k in KEEPS}
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    frame = compare_cost(variants, batches=(1, 32), repeats=repeats).reset_index()
    frame["mac_saving"] = 1 - frame["macs_per_clip"] / frame["macs_per_clip"].iloc[0]
    for b in (1, 32):
        frame[f"latency_b{b}_saving"] = 1 - frame[f"latency_b{b}_ratio"]
        frame[f"realised_b{b}"] = frame[f"latency_b{b}_saving"] / frame["mac_saving"].where(
            frame["mac_saving"] > 0
        )
    rules = {"cls": prune_tokens(model, 0.5, rule="cls"), "random": prune_tokens(model, 0.5, rule="random")}
    overhead = compare_cost(rules, batches=(1, 32), repeats=repeats).reset_index()
    _write(
        "latency",
        frame,
        {
            "scoring_overhead_keep_0.5": overhead.to_dict(orient="records"),
            "threads": torch.get_num_threads(),
            "load_before": load_before,
            "load_after": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        },
    )
    print(overhead.to_string(index=False), flush=True)


def patch_analysis(model, val, test) -> None:
    """Clusters and per-block correlations on the validation split; the cluster-drop ablation
    (test) at the first default drop block."""
    stats = patches.patch_statistics(model, val.features)
    clusters = {name: patches.cluster_ranks(v) for name, v in stats.items()}
    table = patches.correlations(
        patches.block_scores(model, val.features), {name: c.ranks for name, c in clusters.items()}
    )
    _write("patch_correlation", table)
    _write("patch_clusters", pd.concat([c.table.assign(statistic=n) for n, c in clusters.items()]))
    # The test clips' intensity ranked by the validation clusters' edges (the same 5 bins).
    intensity = patches.patch_statistics(model, test.features)["intensity"]
    highs = torch.tensor(clusters["intensity"].table["high"].to_numpy()[:-1], dtype=intensity.dtype)
    test_ranks = torch.bucketize(intensity, highs, right=False)  # (N, P) in 0..4
    rows = [{"block": 1, "dropped": "none", "test_accuracy": _accuracy(model, test)}]
    for name, drop in (("two lowest", (0, 1)), ("two highest", (3, 4))):
        share = float(torch.isin(test_ranks, torch.tensor(drop)).float().mean())
        rows.append(
            {
                "block": 1,
                "dropped": name,
                "patch_share_dropped": share,
                "test_accuracy": patches.cluster_drop(
                    model, test.features, test.targets, test_ranks, 1, drop
                ),
            }
        )
    _write("cluster_drop", pd.DataFrame(rows))


def stack(model, extractor, labels, dataset, val, test) -> None:
    """One-shot per-head global Fisher head pruning at 50 % attention sparsity (the demo grid's
    best configuration), then token pruning (cls) at every keep rate."""
    from prunekit.heads.planner import make_plan
    from prunekit.heads.scoring import score
    from prunekit.heads.surgery import apply_plan

    dense_macs = count_macs(model)
    scores = score(model, "fisher", scoring_data(dataset, extractor, labels, "validation", clips=1000))
    heads = apply_plan(model, make_plan(scores, "per-head", "global", 0.5))
    rows = [
        {
            "variant": "heads 50%",
            "keep": 1.0,
            "macs": count_macs(heads),
            "val_accuracy": _accuracy(heads, val),
            "test_accuracy": _accuracy(heads, test),
        }
    ]
    for keep in KEEPS:
        stacked = prune_tokens(heads, keep)
        rows.append(
            {
                "variant": "heads 50% + tokens",
                "keep": keep,
                "macs": count_macs(stacked),
                "val_accuracy": _accuracy(stacked, val),
                "test_accuracy": _accuracy(stacked, test),
            }
        )
    frame = pd.DataFrame(rows)
    frame["mac_saving"] = 1 - frame["macs"] / dense_macs
    _write("stack", frame)


def stack_recovered(model, extractor, labels, dataset, val, test, seeds=(0, 1, 2)) -> None:
    """The stack on a recovered head-pruned model: one-shot per-head global Fisher at 50 %
    attention sparsity, LoRA recovery (rank 16, lr 1e-3, one epoch on 4,096 training clips,
    checkpoint on 500 validation clips, seed s), then token pruning (cls) one-shot at every keep
    rate. Rows (seed x keep) are appended to stack_recovered.csv as they finish; test accuracy
    paired with dense."""
    from prunekit.heads.planner import make_plan
    from prunekit.heads.scoring import score
    from prunekit.heads.surgery import apply_plan
    from prunekit.recovery.lora import RecoveryConfig, recover

    path = OUT / "stack_recovered.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["seed"])
    dense_macs = count_macs(model)
    dense_test = _correct(model, test).numpy()
    scores = score(model, "fisher", scoring_data(dataset, extractor, labels, "validation", clips=1000))
    heads = apply_plan(model, make_plan(scores, "per-head", "global", 0.5))
    for seed in seeds:
        if seed in set(done["seed"]):
            continue
        config = RecoveryConfig(
            lr=1e-3, train_clips=4096, validation_clips=500, validations_per_epoch=2, seed=seed
        )
        start = time.perf_counter()
        recovered, _ = recover(heads, extractor, labels, dataset, config=config)
        seconds = time.perf_counter() - start
        rows = []
        for keep in (1.0, *KEEPS):
            variant = recovered if keep == 1.0 else prune_tokens(recovered, keep)
            paired = compare_correct(dense_test, _correct(variant, test).numpy())
            rows.append(
                {
                    "seed": seed,
                    "keep": keep,
                    "recovery_seconds": seconds,
                    "macs": count_macs(variant),
                    "mac_saving": 1 - count_macs(variant) / dense_macs,
                    "val_accuracy": float(_correct(variant, val).float().mean()),
                    "test_accuracy": paired.accuracy[1],
                    "vs_dense": paired.difference,
                    "ci_low": paired.ci[0],
                    "ci_high": paired.ci[1],
                    "mcnemar_p": paired.p_value,
                }
            )
        done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if len(done) else pd.DataFrame(rows)
        done.to_csv(path, index=False)
        print(pd.DataFrame(rows).to_string(index=False), flush=True)


def _correct(model, data) -> torch.Tensor:
    return predict_logits(model, data.features).argmax(-1) == data.targets


GRID = OUT / "finetune_grid.csv"
# The order the grid runs in, most wanted first, so a stopped run has the rows that matter:
# the cls rule at the keep rates near the targets with 3 seeds, the other rules at 0.5, then the
# mild keep rates.
GRID_ORDER = (
    [("cls", keep, seed) for keep in (0.5, 0.6, 0.7) for seed in (0, 1, 2)]
    + [(rule, 0.5, 0) for rule in ("received", "intensity", "variation", "random")]
    + [("cls", keep, 0) for keep in (0.8, 0.9)]
)


def finetune(
    model, extractor, labels, dataset, val, test, cells=GRID_ORDER, train_clips=2000, epochs=2
) -> None:
    """Fine-tune a token-pruned copy (every weight; the keep rate shrinking from 1 over the first
    half of the steps, then held) on a seeded subset of the train split, for each (rule, keep,
    seed) cell; the checkpoint of the lowest validation loss is evaluated on test once, paired
    with dense and with the same cell one-shot. Rows are appended to finetune_grid.csv as they
    finish, and cells already there are skipped, so a stopped run resumes."""
    done = pd.read_csv(GRID) if GRID.is_file() else pd.DataFrame(columns=["rule", "keep", "seed"])
    finished = {
        (r, round(float(k), 2), int(s)) for r, k, s in done[["rule", "keep", "seed"]].itertuples(index=False)
    }
    dense_test = _correct(model, test).numpy()
    dense_val = float(_correct(model, val).float().mean())
    for rule, keep, seed in cells:
        if (rule, keep, seed) in finished:
            continue
        config = TokenFinetuneConfig(
            epochs=epochs, train_clips=train_clips, validations_per_epoch=2, seed=seed
        )
        train = split_data(dataset, extractor, labels, "train", train_clips, seed=seed)
        pruned = prune_tokens(model, keep, rule=rule, seed=seed)
        one_shot = _correct(pruned, test).numpy()
        load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
        start = time.perf_counter()
        tuned, history = finetune_tokens_on(pruned, train, val, config=config)
        seconds = time.perf_counter() - start
        history.to_csv(OUT / f"finetune_history_{rule}_keep{keep}_seed{seed}.csv", index=False)
        tuned_test = _correct(tuned, test).numpy()
        against_dense = compare_correct(dense_test, tuned_test, names=("dense", "fine-tuned"))
        against_oneshot = compare_correct(one_shot, tuned_test, names=("one-shot", "fine-tuned"))
        row = {
            "rule": rule,
            "keep": keep,
            "seed": seed,
            "epochs": epochs,
            "train_clips": train_clips,
            "seconds": seconds,
            "load_before": load_before,
            "threads": torch.get_num_threads(),
            "macs": count_macs(tuned),
            "dense_val": dense_val,
            "val_accuracy": float(_correct(tuned, val).float().mean()),
            "dense_test": float(dense_test.mean()),
            "oneshot_test": float(one_shot.mean()),
            "test_accuracy": against_dense.accuracy[1],
            "vs_dense": against_dense.difference,
            "vs_dense_ci_low": against_dense.ci[0],
            "vs_dense_ci_high": against_dense.ci[1],
            "vs_dense_p": against_dense.p_value,
            "vs_oneshot": against_oneshot.difference,
            "vs_oneshot_ci_low": against_oneshot.ci[0],
            "vs_oneshot_ci_high": against_oneshot.ci[1],
            "vs_oneshot_p": against_oneshot.p_value,
        }
        print(row, flush=True)
        frame = (
            pd.concat([done, pd.DataFrame([row])], ignore_index=True) if len(done) else pd.DataFrame([row])
        )
        OUT.mkdir(parents=True, exist_ok=True)
        frame.to_csv(GRID, index=False)
        done = frame


def main(parts: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    started = time.perf_counter()
    model, extractor, labels = load_model("demo")
    dataset = demo_dataset()
    val = split_data(dataset, extractor, labels, "validation", None)
    test = split_data(dataset, extractor, labels, "test", None)
    dense = classification_metrics(
        predict_logits(model, test.features), test.targets.numpy(), labels
    ).accuracy
    print(f"dense test accuracy {dense:.4f} on {len(test.features)} clips", flush=True)
    jobs = {
        "oneshot": lambda: oneshot(model, val, test),
        "latency": lambda: latency(model),
        "patches": lambda: patch_analysis(model, val, test),
        "stack": lambda: stack(model, extractor, labels, dataset, val, test),
        "finetune": lambda: finetune(model, extractor, labels, dataset, val, test),
        "stack-recovered": lambda: stack_recovered(model, extractor, labels, dataset, val, test),
    }
    for part in parts or list(jobs):
        t = time.perf_counter()
        jobs[part]()
        print(
            f"{part} done in {time.perf_counter() - t:.0f} s (total {time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
