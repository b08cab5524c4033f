"""Command-line command for key priors: ``keys``.

``add_commands(subparsers)`` registers it on ``python -m prunekit``'s parser; every error it
raises on purpose is a ``PrunekitError``, which the CLI's ``main`` turns into a message and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prunekit.devices import add_device_arguments, processes
from prunekit.errors import ConfigurationError, OutputExistsError
from prunekit.progress import console_bar

__all__ = ["add_commands"]


def cmd_keys(args: argparse.Namespace) -> None:
    from prunekit.data.datasets import open_dataset
    from prunekit.devices import place
    from prunekit.evaluation.cost import count_macs
    from prunekit.evaluation.metrics import evaluate
    from prunekit.heads.scoring import scoring_data
    from prunekit.heads.surgery import save_pruned
    from prunekit.keys.cost import attention_macs
    from prunekit.keys.learn import KeyLearnConfig, learn_priors_on
    from prunekit.keys.priors import add_key_priors
    from prunekit.keys.prune import check_sparsity, prune_keys
    from prunekit.models.loading import load_model
    from prunekit.recovery.lora import RecoveryConfig, recover

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if args.epochs < 0:
        raise ConfigurationError(
            f"--epochs must be 0 (use the model's own priors) or more, got {args.epochs}"
        )
    if args.finetune_epochs < 0:
        raise ConfigurationError(
            f"--finetune-epochs must be 0 (one-shot) or more, got {args.finetune_epochs}"
        )
    sparsity = check_sparsity(args.key_sparsity)
    config = None
    if args.epochs:
        config = KeyLearnConfig(
            epochs=args.epochs,
            lr=args.lr,
            penalty=args.penalty,
            lora_rank=args.lora_rank,
            batch_size=args.batch_size,
            train_clips=args.train_clips,
            validation_clips=args.val_clips,
            seed=args.seed,
        )  # checks the penalty before anything is loaded
    elif args.penalty < 0:
        raise ConfigurationError(f"--penalty must be >= 0, got {args.penalty}")
    model, extractor, labels = load_model(args.model)
    place(model, args.device)  # every copy below (priors, pruned) follows it
    bar, progress = console_bar("preparing data")
    data = open_dataset(args.data, progress=progress)
    bar.close()
    if config is not None:
        splits = {}
        for split, clips in (("train", config.train_clips), ("validation", config.validation_clips)):
            bar, progress = console_bar(f"features of {split}")
            count = len(data.split(split)) if clips is None else clips
            splits[split] = scoring_data(
                data, extractor, labels, split, clips=count, seed=config.seed, progress=progress
            )  # the clips learn_priors would pick, with a bar while they are featurised
            bar.close()
        start = time.perf_counter()
        bar, progress = console_bar("learning key priors", unit="step")
        priors, history = learn_priors_on(
            model, splits["train"], splits["validation"], config=config, progress=progress
        )
        bar.close()
        best = history[history["kept"]].iloc[0]
        print(
            f"learned key priors for {args.epochs} epoch(s) in {time.perf_counter() - start:.0f} s; kept step "
            f"{int(best['step'])} (validation accuracy {best['val_accuracy']:.4f}, prior entropy "
            f"{best['entropy']:.3f} of uniform)"
        )
    else:
        priors = add_key_priors(model)
    pruned = prune_keys(priors, sparsity, args.granularity, args.threshold)
    if args.finetune_epochs:
        bar, progress = console_bar("LoRA recovery of the key-pruned model", unit="step")
        recovery = RecoveryConfig(
            epochs=args.finetune_epochs,
            batch_size=args.batch_size,
            train_clips=args.train_clips,
            validation_clips=args.val_clips,
            seed=args.seed,
        )
        pruned, _ = recover(pruned, extractor, labels, data, config=recovery, progress=progress)
        bar.close()
    rows = {}
    variants = {"dense": model, "priors": priors, "key-pruned": pruned}
    if config is None:
        del variants["priors"]
    for name, variant in variants.items():
        bar, progress = console_bar(f"evaluating {name} on {args.split}")
        result = evaluate(
            variant, extractor, labels, data, args.split, batch_size=args.batch_size, progress=progress
        )
        bar.close()
        rows[name] = (result.accuracy, count_macs(variant), attention_macs(variant))
    dense_macs, dense_attention = rows["dense"][1], rows["dense"][2]
    for name, (accuracy, macs, attention) in rows.items():
        extra = ""
        if name == "key-pruned":
            extra = f", {args.granularity} keys, sparsity {sparsity:g} ({args.threshold})"
            if args.granularity == "head":
                needed = attention_macs(pruned, needed=True)
                extra += (
                    f"; a per-head mask computes every score: skipping masked keys would save "
                    f"{1 - needed / dense_attention:.1%} of attention MACs"
                )
        print(
            f"{name:<11} accuracy {accuracy:.4f}   MACs/clip {macs / 1e6:.1f} M ({macs / dense_macs - 1:+.1%})"
            f"   attention {attention / 1e6:.1f} M ({attention / dense_attention - 1:+.1%}){extra}"
        )
    if out is not None and processes().main:  # one writer under torchrun
        save_pruned(
            pruned,
            out,
            feature_extractor=extractor,
            labels=labels,
            origin=args.model,
            overwrite=args.overwrite,
        )
        if config is not None:
            (out / "key_learning.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        print(f"key-pruned model written to {out} (loads with prunekit.models.load_model)")


def cmd_keys_learn(args: argparse.Namespace) -> None:
    from prunekit.keys.background import learning_status, run_learning
    from prunekit.keys.learn import KeyLearnConfig

    config = KeyLearnConfig(
        epochs=args.epochs,
        lr=args.lr,
        penalty=args.penalty,
        batch_size=args.batch_size,
        train_clips=args.train_clips,
        validation_clips=args.val_clips,
        seed=args.seed,
    )
    bar, progress = console_bar("learning key priors", unit="step")
    history = run_learning(args.out, args.model, args.data, config, device=args.device, progress=progress)
    bar.close()
    status = learning_status(args.out)
    kept = history[history["kept"]] if len(history) and "kept" in history else history
    best = (
        f"; kept step {int(kept['step'].iloc[-1])}, validation loss {kept['val_loss'].iloc[-1]:.4f}"
        if len(kept)
        else ""
    )
    print(
        f"key priors {status['state']} after {status.get('epochs_done', 0)} of {config.epochs} epoch(s){best}; "
        f"the model with its priors is in {args.out}/model"
    )


def add_commands(sub) -> None:
    """Register ``keys`` and ``keys-learn`` on the CLI's subparsers."""
    from prunekit.keys.prune import PRUNE_GRANULARITIES, THRESHOLDS

    p = sub.add_parser(
        "keys", help="learned key priors (FiAK): learn, prune keys, accuracy and MACs of dense and key-pruned"
    )
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder")
    p.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs of prior learning (0: the model's own priors, else uniform)",
    )
    p.add_argument(
        "--penalty", type=float, default=0.0, help="weight of the prior-entropy penalty (default 0)"
    )
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the log-priors (default 0.05)")
    p.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank with the priors")
    p.add_argument("--key-sparsity", type=float, required=True, help="share of patch keys dropped, in [0, 1)")
    p.add_argument("--granularity", default="layer", choices=PRUNE_GRANULARITIES)
    p.add_argument("--threshold", default="global", choices=THRESHOLDS)
    p.add_argument(
        "--finetune-epochs", type=int, default=0, help="LoRA recovery epochs after pruning (0: one-shot)"
    )
    p.add_argument("--train-clips", type=int, help="a seeded subset of the train split (default: all)")
    p.add_argument("--val-clips", type=int, help="validation clips that pick the checkpoint (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split", default="test", choices=["train", "validation", "test"], help="evaluation split"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="save the key-pruned model here (save_pretrained layout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    add_device_arguments(p, precision=None)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser(
        "keys-learn",
        help="learn key priors into a run folder (status.json for pollers; Ctrl-C stops and keeps the "
        "best priors; run again to continue): what the app's Key priors page starts",
    )
    p.add_argument("--out", required=True, help="the run folder (cache/keys/NAME from the app)")
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder")
    p.add_argument("--epochs", type=int, default=1, help="epochs of prior learning")
    p.add_argument(
        "--penalty", type=float, default=0.0, help="weight of the prior-entropy penalty (default 0)"
    )
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the log-priors (default 0.05)")
    p.add_argument("--train-clips", type=int, help="a seeded subset of the train split (default: all)")
    p.add_argument("--val-clips", type=int, help="validation clips that pick the checkpoint (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    add_device_arguments(p, precision=None)
    p.set_defaults(func=cmd_keys_learn)
