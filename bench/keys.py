"""Learned key priors on the demo: learning time and accuracy, the realised speed of per-layer key
pruning, and key pruning against its untrained baselines and Top-K tokens at equal attention MACs.

    nice -n 10 .venv/bin/python bench/keys.py [learn] [speed] [compare] [--seeds 0 1] [--train-clips N]
        [--priors DIR]   # learn: take the priors a `prunekit keys --out DIR` run learned

Writes bench/results/keys/<part>.csv and .json and prints what it measured. Accuracies are read
on the 1,330 test clips of held-out voices once per reported number (paired with the dense
model's on the same clips: McNemar and a bootstrap interval); every choice (the checkpoint of the
priors) is made on the validation split. Timings are ratios to the dense model measured
interleaved round by round in one run, with a bootstrap interval over rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

from prunekit.data.datasets import demo_dataset
from prunekit.evaluation.cost import compare_cost, count_macs
from prunekit.evaluation.metrics import predict_logits
from prunekit.evaluation.paired import compare_correct
from prunekit.heads.scores import ScoringData
from prunekit.heads.surgery import save_pruned
from prunekit.keys.cost import attention_macs
from prunekit.keys.learn import KeyLearnConfig, learn_priors_on
from prunekit.keys.priors import add_key_priors, random_scores, received_attention_scores
from prunekit.keys.prune import prune_keys, unprune_keys
from prunekit.models import load_model
from prunekit.recovery.lora import RecoveryConfig, recover, split_data
from prunekit.tokens.topk import prune_tokens

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "keys"
PRIORS = REPO / "cache" / "bench-keys"
SPARSITIES = (0.25, 0.5, 0.75)


def _correct(model, data) -> torch.Tensor:
    return predict_logits(model, data.features).argmax(-1) == data.targets


def _write(name: str, frame: pd.DataFrame, extra: dict | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    frame.to_csv(OUT / f"{name}.csv", index=False)
    if extra is not None:
        (OUT / f"{name}.json").write_text(json.dumps(extra, indent=2, default=float) + "\n")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)


def _load_avg() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def learned_accuracy(model, test, folder: Path) -> None:
    """The test accuracy of priors learned elsewhere (e.g. by ``python -m prunekit keys --out``,
    whose key-pruned model keeps every prior), unpruned, paired with dense."""
    learned = unprune_keys(load_model(folder).model)
    dense = _correct(model, test).numpy()
    paired = compare_correct(dense, _correct(learned, test).numpy())
    save_pruned(learned, PRIORS / "priors-seed0", overwrite=True)
    row = {
        "priors_from": str(folder),
        "dense_test": float(dense.mean()),
        "priors_test": paired.accuracy[1],
        "difference": paired.difference,
        "ci_low": paired.ci[0],
        "ci_high": paired.ci[1],
        "mcnemar_p": paired.p_value,
        "disagreements": f"{paired.only_reference} only dense, {paired.only_candidate} only priors",
    }
    _write("learned", pd.DataFrame([row]))


def learn(model, extractor, labels, data, test, seeds, train_clips) -> None:
    """Wall time of one epoch of prior learning (base frozen, no penalty: the defaults) and the
    test accuracy of the learned, unpruned priors against dense, per seed."""
    train = split_data(data, extractor, labels, "train", None)  # the whole split: cached features
    if train_clips is not None:  # a seeded subset, cut in memory so the cached features serve
        pick = torch.randperm(len(train.features), generator=torch.Generator().manual_seed(0))[:train_clips]
        train = ScoringData(
            train.features[pick], train.targets[pick], name=f"{train.name}:subset{train_clips}"
        )
    validation = split_data(data, extractor, labels, "validation", None)
    dense = _correct(model, test).numpy()
    rows = []
    for seed in seeds:
        load_before = _load_avg()
        start = time.perf_counter()
        learned, history = learn_priors_on(model, train, validation, config=KeyLearnConfig(seed=seed))
        seconds = time.perf_counter() - start
        folder = save_pruned(learned, PRIORS / f"priors-seed{seed}", overwrite=True)
        paired = compare_correct(dense, _correct(learned, test).numpy())
        best = history[history["kept"]].iloc[0]
        rows.append(
            {
                "seed": seed,
                "train_clips": len(train.features),
                "steps": int(history["step"].max()),
                "epoch_seconds": seconds,  # one epoch, its 3 validations (1,330 clips each) included
                "seconds_per_step": seconds / int(history["step"].max()),
                "load_before": load_before,
                "load_after": _load_avg(),
                "kept_step": int(best["step"]),
                "entropy": float(best["entropy"]),
                "dense_test": float(dense.mean()),
                "priors_test": paired.accuracy[1],
                "difference": paired.difference,
                "ci_low": paired.ci[0],
                "ci_high": paired.ci[1],
                "mcnemar_p": paired.p_value,
                "saved": str(folder.relative_to(REPO)),
            }
        )
    frame = pd.DataFrame(rows)
    if (OUT / "learn.csv").is_file():  # other seeds' rows stay
        earlier = pd.read_csv(OUT / "learn.csv")
        frame = pd.concat([earlier[~earlier["seed"].isin(seeds)], frame], ignore_index=True)
    _write(
        "learn",
        frame.sort_values("seed"),
        {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    )


def _learned(model, seed: int = 0):
    folder = PRIORS / f"priors-seed{seed}"
    if folder.is_dir():
        return load_model(folder).model
    print(f"no learned priors in {folder} (run the learn part): uniform priors used", flush=True)
    return add_key_priors(model)


def speed(model) -> None:
    """Per-layer key pruning: the MACs it removes (attention and whole model) against the latency
    ratio at batch 1 and 32, all variants timed interleaved with the dense model. A local budget
    (the same number of keys in every layer), so the cost depends on the sparsity alone, not on
    which keys the scores pick."""
    priors = add_key_priors(model)  # which keys go does not change the cost under a local budget
    variants = {"dense": model}
    for s in SPARSITIES:
        variants[f"layer {s:g}"] = prune_keys(priors, s, "layer", "local")
    variants["head 0.5"] = prune_keys(priors, 0.5, "head", "local")
    load_before = _load_avg()
    frame = compare_cost(variants, batches=(1, 32), repeats=80).reset_index()  # 20 rounds at batch 32
    dense_attention = attention_macs(model)
    frame["attention_macs"] = [attention_macs(m) for m in variants.values()]
    frame["attention_needed"] = [attention_macs(m, needed=True) for m in variants.values()]
    frame["attention_saving"] = 1 - frame["attention_macs"] / dense_attention
    frame["mac_saving"] = 1 - frame["macs_per_clip"] / frame["macs_per_clip"].iloc[0]
    for b in (1, 32):
        frame[f"latency_b{b}_saving"] = 1 - frame[f"latency_b{b}_ratio"]
        frame[f"realised_b{b}"] = frame[f"latency_b{b}_saving"] / frame["mac_saving"].where(
            frame["mac_saving"] > 0
        )
    columns = [
        "model",
        "macs_per_clip",
        "mac_saving",
        "attention_saving",
        "attention_needed",
        "latency_b1_ms",
        "latency_b1_ratio",
        "latency_b1_ratio_low",
        "latency_b1_ratio_high",
        "latency_b32_ms",
        "latency_b32_ratio",
        "latency_b32_ratio_low",
        "latency_b32_ratio_high",
        "latency_b32_rounds",
        "realised_b1",
        "realised_b32",
    ]
    _write("speed", frame[columns], {"load_before": load_before, "load_after": _load_avg()})


def compare(model, extractor, labels, data, validation, test) -> None:
    """One-shot key pruning per layer (global budget) by learned prior, by the plain model's mean
    received attention and by random scores (seeds 0-2), at each sparsity: attention MACs and
    validation and test accuracy; Top-K tokens (the ``cls`` rule, default blocks) at keep rates
    that span the same attention MACs. One-shot only: the fine-tuned comparison is not done yet."""
    priors = _learned(model)
    received = received_attention_scores(model, validation.features)
    sources = {"learned prior": (priors, None), "received attention": (model, received)}
    for seed in (0, 1, 2):
        sources[f"random {seed}"] = (model, random_scores(model, seed))
    dense_test = _correct(model, test).numpy()
    rows = [
        {
            "scores": "dense",
            "sparsity": 0.0,
            "attention_macs": attention_macs(model),
            "macs": count_macs(model),
        }
    ]
    rows[0].update(
        validation=float(_correct(model, validation).float().mean()), test=float(dense_test.mean())
    )
    for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        for name, (base, scores) in sources.items():
            pruned = prune_keys(base, s, "layer", "global", scores=scores, scores_name=name)
            paired = compare_correct(dense_test, _correct(pruned, test).numpy())
            rows.append(
                {
                    "scores": name,
                    "sparsity": s,
                    "attention_macs": attention_macs(pruned),
                    "macs": count_macs(pruned),
                    "validation": float(_correct(pruned, validation).float().mean()),
                    "test": paired.accuracy[1],
                    "ci_low": paired.ci[0],
                    "ci_high": paired.ci[1],
                }
            )
    for keep in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4):
        pruned = prune_tokens(model, keep)
        paired = compare_correct(dense_test, _correct(pruned, test).numpy())
        rows.append(
            {
                "scores": "Top-K tokens (cls)",
                "sparsity": 1 - keep,
                "attention_macs": attention_macs(pruned),
                "macs": count_macs(pruned),
                "validation": float(_correct(pruned, validation).float().mean()),
                "test": paired.accuracy[1],
                "ci_low": paired.ci[0],
                "ci_high": paired.ci[1],
            }
        )
    frame = pd.DataFrame(rows)
    frame["attention_share"] = frame["attention_macs"] / frame["attention_macs"].iloc[0]
    _write("compare", frame, {"load": _load_avg()})
    docs = REPO / "docs" / "keys-demo"
    docs.mkdir(parents=True, exist_ok=True)
    frame.to_csv(docs / "compare.csv", index=False)
    write_svg(frame, docs / "compare.svg")
    (docs / "README.md").write_text(
        "# Key pruning against its baselines and Top-K tokens on the demo (one-shot)\n\n"
        "Made by `nice -n 10 .venv/bin/python bench/keys.py compare` (after `learn`, whose priors it "
        "reads from cache/bench-keys/).\n\n" + _markdown(frame) + "\n"
    )


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table (pandas' to_markdown needs tabulate, which is not installed)."""

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def write_svg(frame: pd.DataFrame, path: Path, *, width: int = 640, height: int = 400) -> None:
    """Test accuracy against attention MACs (share of dense), one line per method (random: mean
    over its seeds), dense as a dot: a plain SVG (no plotting library is installed)."""
    frame = frame.assign(
        method=frame["scores"].str.replace(r"random \d+", "random (mean of seeds)", regex=True)
    )
    curves = (
        frame[frame["method"] != "dense"]
        .groupby(["method", "attention_share"], as_index=False)["test"]
        .mean()
    )
    left, right, top, bottom = 60, 190, 20, 50
    x0, x1 = float(curves["attention_share"].min()), 1.0
    y0, y1 = 0.0, 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (width - left - right),
            height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom),
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">'
    ]
    parts.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    for tick in range(0, 11, 2):
        y = tick / 10
        a, b = px(x0, y), px(x1, y)
        parts.append(f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#ddd"/>')
        parts.append(f'<text x="{a[0] - 6}" y="{a[1] + 4}" text-anchor="end">{y:.1f}</text>')
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        a = px(x, y0)
        parts.append(f'<text x="{a[0]}" y="{a[1] + 16}" text-anchor="middle">{x:.2f}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">attention MACs (share of dense)</text>'
    )
    parts.append(
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">test accuracy</text>'
    )
    for i, (method, rows) in enumerate(curves.groupby("method")):
        rows = rows.sort_values("attention_share")
        points = " ".join(
            f"{a:.1f},{b:.1f}" for a, b in (px(x, y) for x, y in zip(rows["attention_share"], rows["test"]))
        )
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in zip(rows["attention_share"], rows["test"]):
            cx, cy = px(x, y)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{width - right + 10}" y="{top + 16 + 18 * i}" fill="{colour}">{method}</text>'
        )
    dense = frame[frame["method"] == "dense"].iloc[0]
    cx, cy = px(1.0, float(dense["test"]))
    parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="black"/>')
    parts.append(f'<text x="{width - right + 10}" y="{top + 16 + 18 * (i + 1)}">dense (dot)</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


FINETUNE = RecoveryConfig(lr=1e-3, train_clips=2048, validation_clips=500, validations_per_epoch=2)


def finetune(model, extractor, labels, data, test, seeds) -> None:
    """The same fine-tuning budget for each method at about the same attention-MAC cut: LoRA
    (rank 16, lr 1e-3, the sweep's) for one epoch on 2,048 training clips, checkpoint chosen on
    500 validation clips. Key pruning per layer (global budget) of 50 % of the keys (26.5 % of
    the attention MACs) by learned prior, by mean received attention and by random scores,
    against Top-K tokens (cls rule) at keep 0.7 (28.6 %). Seed s seeds the LoRA run, the priors
    (those learned with seed s, when ``learn`` made them) and the random scores. Test accuracy
    paired with dense; one row per method and seed, appended to finetune.csv as it finishes
    (rows already there are skipped, so a stopped run resumes)."""
    validation = split_data(data, extractor, labels, "validation", None)
    received = received_attention_scores(model, validation.features)
    dense_test = _correct(model, test).numpy()
    path = OUT / "finetune.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["method", "seed"])
    finished = {(m, int(s)) for m, s in done[["method", "seed"]].itertuples(index=False)}
    for seed in seeds:
        variants = {
            "learned prior": lambda s=seed: prune_keys(_learned(model, s), 0.5, "layer", "global"),
            "received attention": lambda: prune_keys(model, 0.5, "layer", "global", scores=received),
            "random": lambda s=seed: prune_keys(
                model, 0.5, "layer", "global", scores=random_scores(model, s)
            ),
            "Top-K tokens (cls, keep 0.7)": lambda: prune_tokens(model, 0.7),
        }
        for name, make in variants.items():
            if (name, seed) in finished:
                continue
            pruned = make()
            one_shot = compare_correct(dense_test, _correct(pruned, test).numpy())
            load_before = _load_avg()
            start = time.perf_counter()
            config = dataclasses.replace(FINETUNE, seed=seed)
            tuned, _ = recover(pruned, extractor, labels, data, config=config)
            seconds = time.perf_counter() - start
            paired = compare_correct(dense_test, _correct(tuned, test).numpy())
            row = {
                "method": name,
                "seed": seed,
                "attention_share": attention_macs(pruned) / attention_macs(model),
                "one_shot_test": one_shot.accuracy[1],
                "finetuned_test": paired.accuracy[1],
                "difference": paired.difference,
                "ci_low": paired.ci[0],
                "ci_high": paired.ci[1],
                "mcnemar_p": paired.p_value,
                "seconds": seconds,
                "threads": torch.get_num_threads(),
                "load": load_before,
            }
            print(row, flush=True)
            done = (
                pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                if len(done)
                else pd.DataFrame([row])
            )
            OUT.mkdir(parents=True, exist_ok=True)
            done.to_csv(path, index=False)
    (OUT / "finetune.json").write_text(
        json.dumps(
            {"recovery": dataclasses.asdict(FINETUNE), "dense_test": float(dense_test.mean())}, indent=2
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "parts", nargs="*", default=["learn", "speed"], choices=["learn", "speed", "compare", "finetune"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-clips", type=int, help="a seeded subset of the train split (default: all)")
    parser.add_argument(
        "--priors", type=Path, help="learn: read learned priors from this saved model instead"
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model, extractor, labels = load_model("demo")
    data = demo_dataset()
    test = split_data(data, extractor, labels, "test", None)
    if "learn" in args.parts and args.priors is not None:
        learned_accuracy(model, test, args.priors)
    elif "learn" in args.parts:
        learn(model, extractor, labels, data, test, args.seeds, args.train_clips)
    if "speed" in args.parts:
        speed(model)
    if "compare" in args.parts:
        validation = split_data(data, extractor, labels, "validation", None)
        compare(model, extractor, labels, data, validation, test)
    if "finetune" in args.parts:
        finetune(model, extractor, labels, data, test, args.seeds)


if __name__ == "__main__":
    main()
