"""Command-line commands for token pruning: ``tokens`` and ``patch-stats``.

``add_commands(subparsers)`` registers them on ``python -m prunekit``'s parser; every error
they raise on purpose is a ``PrunekitError``, which the CLI's ``main`` turns into a message
and exit code 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from prunekit.devices import add_device_arguments, place, processes
from prunekit.errors import ConfigurationError, OutputExistsError
from prunekit.progress import console_bar

__all__ = ["add_commands", "parse_blocks"]


def parse_blocks(text: str | None) -> tuple[int, ...] | None:
    """ "3,6,9" -> (3, 6, 9); None or "default" -> None (the model's default blocks)."""
    if text is None or text.strip() == "default":
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigurationError(
            f"--blocks takes block indices separated by commas (e.g. 3,6,9), got {text!r}"
        ) from None


def cmd_tokens(args: argparse.Namespace) -> None:
    from prunekit.data.datasets import open_dataset
    from prunekit.evaluation.cost import count_macs
    from prunekit.evaluation.metrics import evaluate
    from prunekit.heads.surgery import save_pruned
    from prunekit.models.loading import load_model
    from prunekit.tokens.finetune import TokenFinetuneConfig, finetune_tokens
    from prunekit.tokens.topk import prune_tokens

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if args.finetune_epochs < 0:
        raise ConfigurationError(
            f"--finetune-epochs must be 0 (one-shot) or more, got {args.finetune_epochs}"
        )
    model, extractor, labels = load_model(args.model)
    place(model, args.device)
    pruned = prune_tokens(
        model, args.keep, parse_blocks(args.blocks), args.rule, seed=args.seed
    )  # checks options
    bar, progress = console_bar("preparing data")
    data = open_dataset(args.data, progress=progress)
    bar.close()
    if args.finetune_epochs:
        config = TokenFinetuneConfig(
            epochs=args.finetune_epochs,
            lr=args.lr,
            train_clips=args.train_clips,
            validation_clips=args.val_clips,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        start = time.perf_counter()
        bar, progress = console_bar("fine-tuning with a shrinking keep rate", unit="step")
        pruned, history = finetune_tokens(
            pruned, extractor, labels, data, config=config, progress=progress, precision=args.precision
        )
        bar.close()
        best = history[history["kept"]].iloc[0]
        print(
            f"fine-tuned {args.finetune_epochs} epoch(s) in {time.perf_counter() - start:.0f} s; kept step "
            f"{int(best['step'])} (validation accuracy {best['val_accuracy']:.4f})"
        )
    settings = pruned.token_pruning()
    rows = {}
    for name, variant in (("dense", model), ("token-pruned", pruned)):
        bar, progress = console_bar(f"evaluating {name} on {args.split}")
        result = evaluate(
            variant,
            extractor,
            labels,
            data,
            args.split,
            batch_size=args.batch_size,
            progress=progress,
            precision=args.precision,
        )
        bar.close()
        rows[name] = (result.accuracy, count_macs(variant))
    dense_macs = rows["dense"][1]
    for name, (accuracy, macs) in rows.items():
        extra = (
            (
                f" ({macs / dense_macs - 1:+.1%}), keep {settings.keep:g} in blocks "
                f"{','.join(map(str, settings.blocks))} by {settings.rule}"
            )
            if name != "dense"
            else ""
        )
        print(f"{name:<13} accuracy {accuracy:.4f}   MACs/clip {macs / 1e6:.1f} M{extra}")
    if out is not None and processes().main:
        save_pruned(
            pruned,
            out,
            feature_extractor=extractor,
            labels=labels,
            origin=args.model,
            overwrite=args.overwrite,
        )
        print(f"token-pruned model written to {out} (loads with prunekit.models.load_model)")


def cmd_patch_stats(args: argparse.Namespace) -> None:
    import pandas as pd

    from prunekit.data.datasets import open_dataset
    from prunekit.heads.scoring import scoring_data
    from prunekit.models.loading import load_model
    from prunekit.tokens.patches import (
        PAPER_AST_SPEECH_COMMANDS,
        block_scores,
        cluster_ranks,
        correlations,
        patch_statistics,
    )

    model, extractor, labels = load_model(args.model)
    place(model, args.device)
    bar, progress = console_bar("preparing data")
    dataset = open_dataset(args.data, progress=progress)
    bar.close()
    count = args.clips or len(dataset.split(args.split))
    bar, progress = console_bar(f"features of {args.split}")
    data = scoring_data(dataset, extractor, labels, args.split, clips=count, progress=progress)
    bar.close()
    statistics = patch_statistics(model, data.features)
    clusters = {name: cluster_ranks(values, args.clusters) for name, values in statistics.items()}
    for name, c in clusters.items():
        print(f"{name} clusters over {statistics[name].numel()} patches of {len(data.features)} clips:")
        print(c.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    bar, progress = console_bar("attention scores")
    scores = block_scores(model, data.features, progress=progress)
    bar.close()
    table = correlations(scores, {name: c.ranks for name, c in clusters.items()})
    wide = table.pivot(index="block", columns="statistic", values=["authors_kendall", "tau_b"])
    wide.columns = [f"{stat} {kind}" for kind, stat in wide.columns]
    print(
        f"per block: Kendall between CLS attention and cluster rank ({data.name}); "
        "'authors' counts ties as concordant, tau-b is scipy's"
    )
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    means = table.groupby("statistic")[["authors_kendall", "tau_b"]].mean()
    for stat, row in means.iterrows():
        paper = sum(PAPER_AST_SPEECH_COMMANDS[stat]) / len(PAPER_AST_SPEECH_COMMANDS[stat])
        print(
            f"mean over blocks, {stat}: authors' count {row['authors_kendall']:.3f}, tau-b {row['tau_b']:.3f} "
            f"(paper, AST-base on Speech Commands v2, authors' count: {paper:.2f})"
        )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        clusters_frame = pd.concat([c.table.assign(statistic=name) for name, c in clusters.items()])
        table.to_csv(out, index=False)
        clusters_frame.to_csv(out.with_name(out.stem + "-clusters.csv"), index=False)
        print(f"correlation table written to {out}, clusters to {out.with_name(out.stem + '-clusters.csv')}")


def add_commands(sub) -> None:
    """Register ``tokens`` and ``patch-stats`` on the CLI's subparsers."""
    from prunekit.models.token_rules import RULES

    p = sub.add_parser("tokens", help="Top-K token pruning: accuracy and MACs of dense and token-pruned")
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder")
    p.add_argument("--keep", type=float, required=True, help="keep rate in (0, 1] at each drop block")
    p.add_argument("--blocks", help="drop blocks, e.g. 3,6,9 (default: 1/4, 1/2, 3/4 of the depth)")
    p.add_argument(
        "--rule", default="cls", choices=RULES, help="token score (default: cls, the paper's for AST)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random rule and of fine-tuning")
    p.add_argument(
        "--finetune-epochs", type=int, default=0, help="0: one-shot; N: fine-tune with a shrinking keep rate"
    )
    p.add_argument(
        "--train-clips", type=int, help="fine-tuning: a seeded subset of the train split (default: all)"
    )
    p.add_argument("--val-clips", type=int, help="fine-tuning: validation clips that pick the checkpoint")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument(
        "--split", default="test", choices=["train", "validation", "test"], help="evaluation split"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="save the token-pruned model here (save_pretrained layout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    _device_options(p)
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser(
        "patch-stats",
        help="patch intensity/variation clusters and their Kendall correlation with attention, per block",
    )
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument("--clips", type=int, help="a seeded subset of the split (default: all of it)")
    p.add_argument("--clusters", type=int, default=5, help="k-means clusters (the paper: 5)")
    p.add_argument("--out", help="write the per-block table (CSV) here, the clusters beside it")
    add_device_arguments(p, precision=None)
    p.set_defaults(func=cmd_patch_stats)


def _device_options(p: argparse.ArgumentParser) -> None:
    add_device_arguments(p, precision="evaluation and fine-tuning")
