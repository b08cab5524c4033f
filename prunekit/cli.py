"""Command line: ``python -m prunekit <command>``. Each command says what it did and where it wrote.

Every command is a pair: ``add_<command>(subparsers)`` declares its options next to
``cmd_<command>(args)``, which runs it through the same library calls the app uses. Bad input
ends with a one-line message and exit code 2 (``PrunekitError``); anything else is a bug and
keeps its traceback. The work's imports happen inside the commands; the parser itself reads its
choices (scorers, patterns, splits) from the library, which imports torch (a few seconds).

``--device`` picks where the work runs (default auto: a GPU when there is one); a device the
machine lacks is an error, not a fallback. Under ``torchrun`` (or ``accelerate launch``) every
process runs the same command: scoring, evaluation and recovery split their batches over the
processes, a sweep its configurations; only rank 0 prints and writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from prunekit.data.datasets import SPLITS
from prunekit.devices import add_device_arguments, processes, start_processes, stop_processes
from prunekit.errors import PrunekitError
from prunekit.progress import console_bar

__all__ = ["build_parser", "main"]


# --- shared helpers --------------------------------------------------------------------------------
_BARS: list = []  # bars of the running command: main closes them so an error starts its own line


def _bar(desc: str, unit: str = "clip"):
    """A console bar (``progress.console_bar``: rank 0's only) that ``main`` closes if the command
    fails."""
    bar, progress = console_bar(desc, unit)
    _BARS.append(bar)
    return bar, progress


def _positive(text: str) -> int:
    """An integer >= 1 (batch sizes, repeats, clip counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _heads(text: str) -> list[tuple[int, int]]:
    """(layer, head) pairs written as ``0:1,3:2``."""
    pairs = []
    for item in filter(None, text.split(",")):
        layer, sep, head = item.partition(":")
        if not sep or not layer.strip().isdigit() or not head.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected LAYER:HEAD pairs such as 0:1,3:2, got {item!r}")
        pairs.append((int(layer), int(head)))
    return pairs


def _fraction(text: str) -> float:
    """A number in [0, 1] (a sparsity), checked before any model is loaded or scored."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _count_or_all(text: str) -> int | None:
    """A clip count >= 1, or "all" (None)."""
    return None if text == "all" else _positive(text)


def _open_data(spec: str):
    from prunekit.data.datasets import open_dataset

    bar, progress = _bar("preparing data")
    try:
        return open_dataset(spec, progress=progress)
    finally:
        bar.close()


def _model_options(p: argparse.ArgumentParser, data_help: str = "'demo' or a dataset folder") -> None:
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument(
        "--data",
        default="demo",
        help=data_help
        + " (a folder's layout is detected; force it with speech-commands:DIR or folders:DIR); "
        "or a CSV manifest naming audio files and labels",
    )
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="read --data as this manifest layout: esc50, urbansound8k, fsd50k or audioset "
        "(default: detected from the manifest's header)",
    )
    device_options(p)


def device_options(p: argparse.ArgumentParser) -> None:
    add_device_arguments(p)


def _load(args: argparse.Namespace):
    """``load_model(args.model)`` with the model on ``args.device``."""
    from prunekit.devices import place
    from prunekit.models import load_model

    loaded = load_model(args.model)
    place(loaded.model, args.device)
    return loaded


def _scoring_options(p: argparse.ArgumentParser) -> None:
    from prunekit.heads.scoring import scorer_names

    _model_options(p, "'demo' or a dataset folder (gradient scorers read it)")
    p.add_argument("--scorer", default="fisher", choices=scorer_names())
    p.add_argument(
        "--score-split",
        default="validation",
        choices=SPLITS,
        help="split the gradient scorers read (default: validation, as in the paper)",
    )
    p.add_argument("--clips", type=_positive, default=1000, help="clips the gradient scorers read")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--norm", default="l1", choices=["l1", "l2"], help="magnitude's norm")
    p.add_argument("--seed", type=int, default=0, help="random's seed")


BUDGET_HELP = (
    "with a global threshold over channels (per-head, same-channel): 'separate' gives the Q/K and "
    "the V/O channels each the target share of their own weights (the paper's), 'joint' one budget "
    "for both; ignored by entire-head and local thresholds"
)


def _scores(args: argparse.Namespace, loaded, dataset=None):
    """``args.scorer``'s table for ``loaded``; gradient scorers read ``args.clips`` clips of
    ``args.score_split`` of ``dataset`` (``args.data``, opened here when not given)."""
    from prunekit.heads.scoring import needs_data, score_split

    if needs_data(args.scorer) and dataset is None:
        dataset = _open_data(args.data)
    features_bar, features = _bar(f"features of {args.score_split}")
    scores_bar, progress = _bar(f"{args.scorer} scores")
    try:
        return score_split(
            *loaded,
            args.scorer,
            dataset,
            split=args.score_split,
            clips=args.clips,
            batch_size=args.batch_size,
            norm=args.norm,
            seed=args.seed,
            features_progress=features,
            progress=progress,
        )
    finally:
        features_bar.close()
        scores_bar.close()


# --- demo-data / demo-train --------------------------------------------------------------------------
def add_demo_data(sub) -> None:
    p = sub.add_parser("demo-data", help="generate the synthetic speech-commands set into cache/")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)


def cmd_demo_data(args: argparse.Namespace) -> None:
    from prunekit.data.datasets import demo_dataset, demo_root

    start = time.perf_counter()
    bar, progress = _bar("generating synthetic speech commands")
    data = demo_dataset(args.seed, progress=progress)
    bar.close()
    counts = data.counts()
    print(f"Synthetic Speech Commands (seed {args.seed}) at {demo_root(args.seed)}")
    print(
        f"{len(data.clips)} clips, {len(data.labels)} labels; per split: "
        + ", ".join(f"{s} {int(counts[s].sum())}" for s in counts.columns)
    )
    print(f"({time.perf_counter() - start:.1f} s)")


def add_demo_train(sub) -> None:
    from prunekit.demo.train import TASKS

    p = sub.add_parser("demo-train", help="train an embedded demo model from scratch")
    p.add_argument(
        "--task",
        default="speech",
        choices=TASKS,
        help="speech: keyword spotting (prunekit/demo_model/); tagging: the multi-label demo on the "
        "synthetic tagging set (prunekit/demo_tagging_model/)",
    )
    p.add_argument("--out", help="default: the task's folder in the package")
    p.add_argument("--epochs", type=_positive, help="default: DemoTrainConfig.epochs")
    p.add_argument(
        "--views",
        type=int,
        help="augmented copies of the training clips (speed, equaliser, band-limiting, reverberation, "
        "noise, gain, VTLP); default 0, the clips as they are",
    )
    p.add_argument("--clean-epochs", type=int, help="epochs on the clips as they are before the copies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_train)


def cmd_demo_train(args: argparse.Namespace) -> None:
    from prunekit.demo.train import DemoTrainConfig, demo_dir, train_demo

    cfg = DemoTrainConfig(task=args.task, data_seed=args.data_seed, seed=args.seed)
    chosen = {"epochs": args.epochs, "views": args.views, "clean_epochs": args.clean_epochs}
    if any(v is not None for v in chosen.values()):
        cfg = dataclasses.replace(cfg, **{k: v for k, v in chosen.items() if v is not None})
    out = Path(args.out) if args.out else demo_dir(args.task)
    record = train_demo(cfg, out)
    print(f"{args.task.capitalize()} demo model written to {out}")
    metric = "mAP" if args.task == "tagging" else "accuracy"
    print(
        f"validation {metric} {record[f'validation_{metric}']:.4f} (epoch {record['best_epoch']}), "
        f"test {metric} {record[f'test_{metric}']:.4f} on {record['test_clips']} held-out-voice clips, "
        f"{record['train_seconds']:.0f} s"
    )


# --- evaluate -------------------------------------------------------------------------------------
def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy and cost of a model on a dataset split")
    _model_options(p)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--repeats", type=_positive, default=20, help="timed runs for the latency median")
    p.add_argument("--csv", help="write per-clip predictions here")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from prunekit.evaluation.cost import cost
    from prunekit.evaluation.metrics import evaluate

    model, extractor, labels = _load(args)
    data = _open_data(args.data)
    bar, progress = _bar(f"evaluating on {args.split}")
    result = evaluate(
        model,
        extractor,
        labels,
        data,
        args.split,
        batch_size=args.batch_size,
        progress=progress,
        precision=args.precision,
    )
    bar.close()
    if not processes().main:  # the evaluation was shared; reporting and timing are rank 0's
        return
    row = cost(model, repeats=args.repeats).iloc[0]
    s = result.summary.iloc[0]
    print(f"model   {args.model}")
    print(f"data    {data.name} [{args.split}], {int(s['clips'])} clips")
    if data.multilabel:  # tagging: mAP is the headline, as in the paper's AudioSet table
        print(f"mAP {s['mAP']:.4f}   mAUC {s['mAUC']:.4f}   loss {s['loss']:.4f} (binary cross-entropy)")
        worst = result.per_class.dropna(subset=["ap"]).sort_values("ap").head(5)
        print("lowest per-class AP: " + ", ".join(f"{r.label} {r.ap:.2f}" for r in worst.itertuples()))
    else:
        print(f"accuracy {s['accuracy']:.4f}   loss {s['loss']:.4f}")
        worst = result.per_class.sort_values("accuracy").head(5)
        print(
            "lowest per-class accuracy: "
            + ", ".join(f"{r.label} {r.accuracy:.2f}" for r in worst.itertuples())
        )
    print(
        f"parameters {int(row['parameters']):,} (attention {int(row['attention_parameters']):,}), "
        f"MACs/clip {row['macs_per_clip'] / 1e6:.1f} M, latency b1 {row['latency_b1_ms']:.2f} ms, "
        f"b32 {row['latency_b32_ms']:.1f} ms"
    )
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.predictions.to_csv(out, index=False)
        print(f"per-clip predictions written to {out}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": args.model,
            "data": str(args.data),
            "split": args.split,
            "summary": result.summary.iloc[0].to_dict(),
            "cost": row.to_dict(),
            "per_class": result.per_class.to_dict(orient="records"),
        }
        out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        print(f"report written to {out}")


# --- score ----------------------------------------------------------------------------------------
def add_score(sub) -> None:
    p = sub.add_parser("score", help="importance of every head and channel, as a CSV table")
    _scoring_options(p)
    p.add_argument("--out", help="write the score table (CSV) here")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> None:
    table = _scores(args, _load(args))
    if not processes().main:
        return
    frame = table.frame
    heads = frame[frame.group == "head"].pivot(index="layer", columns="head", values="score")
    print(f"{args.scorer} scores of {args.model}: {len(frame)} rows")
    print("whole-head scores (layers x heads):")
    print(heads.to_string(float_format=lambda v: f"{v:.3g}"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
        print(f"score table written to {out}")


# --- prune ----------------------------------------------------------------------------------------
def add_prune(sub) -> None:
    from prunekit.heads.planner import BUDGETS, PATTERNS, THRESHOLDS

    p = sub.add_parser(
        "prune", help="score, plan, physically prune, save, and evaluate against the dense model"
    )
    _scoring_options(p)
    p.add_argument("--pattern", default="per-head", choices=PATTERNS)
    p.add_argument("--threshold", default="global", choices=THRESHOLDS)
    p.add_argument("--budget", default="separate", choices=BUDGETS, help=BUDGET_HELP)
    p.add_argument("--sparsity", type=_fraction, default=0.5, help="target attention sparsity in [0, 1]")
    p.add_argument(
        "--force-remove",
        type=_heads,
        default=[],
        metavar="L:H,...",
        help="heads to remove whatever their score, e.g. 0:1,3:2 (they count towards the sparsity)",
    )
    p.add_argument(
        "--force-keep",
        type=_heads,
        default=[],
        metavar="L:H,...",
        help="heads never to remove (entire-head pattern only)",
    )
    p.add_argument("--out", required=True, help="folder for the pruned model (save_pretrained layout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
    p.add_argument("--split", default="test", choices=SPLITS, help="evaluation split")
    p.add_argument("--repeats", type=_positive, default=20, help="timed runs for the latency median")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> None:
    import pandas as pd

    from prunekit.evaluation.metrics import evaluate
    from prunekit.heads.pipeline import prune_and_evaluate
    from prunekit.heads.planner import budget_applies, make_plan
    from prunekit.heads.surgery import check_output, save_pruned

    out = Path(args.out)
    check_output(out, overwrite=args.overwrite)  # before the work, not after it
    loaded = _load(args)
    data = _open_data(args.data)  # read once: the scorer and the evaluation share it
    plan = make_plan(
        _scores(args, loaded, data),
        args.pattern,
        args.threshold,
        args.sparsity,
        budget=args.budget,
        force_keep=args.force_keep,
        force_remove=args.force_remove,
    )
    budget = f", {args.budget} Q/K and V/O budgets" if budget_applies(args.pattern, args.threshold) else ""
    print(
        f"plan: {args.scorer} scores, {args.pattern} pattern, {args.threshold} threshold{budget}, "
        f"target {args.sparsity:.1%} -> attention sparsity reached {plan.attention_sparsity():.1%}"
    )
    print(plan.summary().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    bar, progress = _bar(f"evaluating dense on {args.split}")
    dense = evaluate(
        loaded.model,
        loaded.feature_extractor,
        loaded.labels,
        data,
        args.split,
        batch_size=args.batch_size,
        progress=progress,
        precision=args.precision,
    )
    bar.close()
    bar, progress = _bar(f"pruning and evaluating on {args.split}")
    variant = prune_and_evaluate(
        *loaded,
        plan,
        data,
        args.split,
        dense=dense,
        repeats=args.repeats,
        progress=progress,
        precision=args.precision,
    )
    bar.close()
    if not processes().main:
        return
    save_pruned(
        variant.model,
        out,
        plan=plan,
        feature_extractor=loaded.feature_extractor,
        labels=loaded.labels,
        origin=args.model,
        overwrite=args.overwrite,
    )
    print(f"pruned model written to {out}")
    quality = {  # accuracy, or mAP (and mAUC) on multi-label data
        name: {
            **(
                {"mAP": e.headline, "mAUC": float(e.summary["mAUC"].iloc[0])}
                if e.multilabel
                else {"accuracy": e.headline}
            ),
            "loss": float(e.summary["loss"].iloc[0]),
        }
        for name, e in (("dense", dense), ("pruned", variant.evaluation))
    }
    table = pd.concat([pd.DataFrame(quality).T, variant.cost], axis=1).T  # latencies timed interleaved
    table["pruned / dense"] = table["pruned"] / table["dense"]
    print(f"evaluation on {data.name} [{args.split}]:")
    print(table.to_string(float_format=lambda v: f"{v:,.4g}"))
    print(f"paired, clip by clip: {variant.comparison.describe()}")


# --- sweep ----------------------------------------------------------------------------------------
def add_sweep(sub) -> None:
    from prunekit.heads.planner import BUDGETS, PATTERNS, THRESHOLDS
    from prunekit.heads.scoring import scorer_names
    from prunekit.recovery.sweep import SweepConfig

    p = sub.add_parser(
        "sweep",
        help="iterative pruning with LoRA recovery over scorers x patterns x "
        "thresholds; resumable: rerun the same command to continue",
    )
    defaults = SweepConfig()
    run, recovery = defaults.run, defaults.run.recovery
    _model_options(p)
    p.add_argument("--out", required=True, help="folder for the results and the resumable state")
    p.add_argument(
        "--overwrite", action="store_true", help="start afresh in --out even if it holds another sweep"
    )
    p.add_argument("--scorers", nargs="+", default=list(defaults.scorers), choices=scorer_names())
    p.add_argument("--patterns", nargs="+", default=list(defaults.patterns), choices=PATTERNS)
    p.add_argument("--thresholds", nargs="+", default=list(defaults.thresholds), choices=THRESHOLDS)
    p.add_argument("--budget", default=run.budget, choices=BUDGETS, help=BUDGET_HELP)
    p.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    p.add_argument(
        "--steps", type=_positive, default=len(run.schedule), help="pruning steps per configuration"
    )
    p.add_argument(
        "--fraction", type=float, default=0.1, help="geometric: each step removes this share of what remains"
    )
    p.add_argument(
        "--target", type=float, help="linear steps up to this attention sparsity instead of geometric ones"
    )
    p.add_argument("--no-recovery", action="store_true", help="prune only (no LoRA between steps)")
    p.add_argument("--epochs", type=_positive, default=recovery.epochs, help="LoRA epochs per step")
    p.add_argument(
        "--train-clips",
        type=_count_or_all,
        default=recovery.train_clips,
        help="training clips per step (a seeded subset per step), or 'all'",
    )
    p.add_argument(
        "--val-clips",
        type=_count_or_all,
        default=recovery.validation_clips,
        help="validation clips that pick the best checkpoint, or 'all'",
    )
    p.add_argument("--lr", type=float, default=recovery.lr)
    p.add_argument("--rank", type=_positive, default=recovery.rank)
    p.add_argument("--alpha", type=float, default=recovery.alpha)
    p.add_argument("--freq-mask", type=int, default=recovery.freq_mask, help="SpecAugment mel band (0: off)")
    p.add_argument(
        "--time-mask", type=int, default=recovery.time_mask, help="SpecAugment frame band (0: off)"
    )
    p.add_argument("--clips", type=_positive, default=run.score_clips, help="clips the gradient scorers read")
    p.add_argument("--split", default=run.eval_split, choices=SPLITS, help="evaluation split")
    p.add_argument(
        "--eval-clips", type=_count_or_all, default=run.eval_clips, help="evaluation clips, or 'all'"
    )
    p.add_argument("--batch-size", type=_positive, default=run.batch_size)
    p.add_argument(
        "--repeats", type=_positive, default=run.latency_repeats, help="timed runs for the latency median"
    )
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> None:
    from prunekit.recovery.iterative import geometric_schedule, linear_schedule, quality_column
    from prunekit.recovery.sweep import (
        RESULTS_FILE,
        STRUCTURE_FILE,
        TABLE_MARKDOWN,
        SweepConfig,
        interpolated_table,
        run_sweep,
        table_markdown,
    )
    from prunekit.report.figures import FIGURE_HTML, write_sweep_figure

    base = SweepConfig().run
    schedule = (
        geometric_schedule(args.steps, args.fraction)
        if args.target is None
        else linear_schedule(args.steps, args.target)
    )
    recovery = (
        None
        if args.no_recovery
        else dataclasses.replace(
            base.recovery,
            epochs=args.epochs,
            train_clips=args.train_clips,
            validation_clips=args.val_clips,
            lr=args.lr,
            rank=args.rank,
            alpha=args.alpha,
            batch_size=args.batch_size,
            freq_mask=args.freq_mask,
            time_mask=args.time_mask,
        )
    )
    run = dataclasses.replace(
        base,
        schedule=schedule,
        recovery=recovery,
        budget=args.budget,
        score_clips=args.clips,
        eval_split=args.split,
        eval_clips=args.eval_clips,
        batch_size=args.batch_size,
        latency_repeats=args.repeats,
    )
    config = SweepConfig(
        model=args.model,
        data=args.data,
        scorers=args.scorers,
        patterns=args.patterns,
        thresholds=args.thresholds,
        seeds=args.seeds,
        run=run,
    )
    start = time.perf_counter()
    bar, progress = _bar(f"sweep of {len(config.runs())} configurations", unit="step")

    def on_step(name: str, r: dict) -> None:
        metric = "mAP" if "map_after" in r else "accuracy"  # multi-label data: mAP
        key = "map" if "map_after" in r else "accuracy"
        bar.write(
            f"{name} step {r['step']}: attention sparsity {r['attention_sparsity']:.1%} "
            f"(target {r['target_sparsity']:.1%}), {metric} {r[f'{key}_before']:.4f} -> "
            f"{r[f'{key}_after']:.4f} after recovery, {r['seconds']:.0f} s"
        )
        if processes().main:
            write_sweep_figure(args.out)  # the figure follows the run, step by step

    results = run_sweep(
        config,
        args.out,
        overwrite=args.overwrite,
        progress=progress,
        on_step=on_step,
        device=args.device,
        precision=args.precision,
    )
    bar.close()
    if not processes().main:
        return
    write_sweep_figure(args.out)
    multilabel = quality_column(results).startswith("map")
    print(
        f"{'mAP' if multilabel else 'accuracy (%)'} after recovery, interpolated at attention "
        f"sparsities, {args.split} split:"
    )
    print(table_markdown(interpolated_table(results, spread=True), digits=4 if multilabel else 2), end="")
    print(
        f"written to {args.out}: {RESULTS_FILE}, {STRUCTURE_FILE}, {TABLE_MARKDOWN}, {FIGURE_HTML}, runs/ "
        f"({time.perf_counter() - start:.0f} s)"
    )


# --- report ---------------------------------------------------------------------------------------
def add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page on a pruned model for people who are not ML engineers",
    )
    p.add_argument("--model", required=True, help="the pruned model: a folder prunekit saved")
    p.add_argument(
        "--data", default="demo", help="the dataset whose split the two models answer (as for evaluate)"
    )
    p.add_argument("--preset", metavar="NAME", help="read --data as this manifest layout (as for evaluate)")
    device_options(p)
    p.add_argument(
        "--original",
        help="the model it was pruned from (default: the one its folder records, config.prunekit_origin)",
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--clips", type=_positive, default=6, help="clips to play in the report")
    p.add_argument("--repeats", type=_positive, default=20, help="timed rounds for the latency ratio")
    p.add_argument("--out", default="report.html", help="the HTML file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_report)


def _pruned_name(folder: str) -> str:
    """The folder's name, and the plan it was pruned with when it holds one."""
    from prunekit.heads.pipeline import describe_plan
    from prunekit.heads.surgery import load_plan

    name = Path(folder).name or str(folder)
    try:
        plan = load_plan(folder)
    except (OSError, PrunekitError):
        plan = None
    return f"{name} ({describe_plan(plan)})" if plan is not None else name


def cmd_report(args: argparse.Namespace) -> None:
    from prunekit.devices import place
    from prunekit.errors import ConfigurationError, OutputExistsError
    from prunekit.heads.surgery import recorded_origin
    from prunekit.models import load_model
    from prunekit.report.handover import build_report, write_report

    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite:  # before minutes of work, not after
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    original_source = args.original or recorded_origin(args.model)
    if original_source is None:
        raise ConfigurationError(
            f"{args.model} does not record the model it was pruned from (folders saved before "
            "prunekit recorded it, or not by prunekit); pass --original SOURCE"
        )
    pruned = _load(args).model
    original = load_model(original_source)
    place(original.model, args.device)
    data = _open_data(args.data)
    bar, progress = _bar("report: evaluating both, timing, clips", unit="stage")
    text = build_report(
        original,
        pruned,
        data,
        args.split,
        original_name=original_source,
        pruned_name=_pruned_name(args.model),
        data_name=data.name,
        clips=args.clips,
        repeats=args.repeats,
        progress=progress,
        device=args.device,
    )
    bar.close()
    if not processes().main:
        return
    path = write_report(out, text, overwrite=args.overwrite)
    print(f"report written to {path} ({path.stat().st_size / 1024:.0f} KB); open it in any browser")


# --- entry ----------------------------------------------------------------------------------------
COMMANDS = (add_demo_data, add_demo_train, add_evaluate, add_score, add_prune, add_sweep, add_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prunekit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    from prunekit.tokens.cli import add_commands as add_token_commands  # tokens, patch-stats

    add_token_commands(sub)
    from prunekit.keys.cli import add_commands as add_key_commands  # keys

    add_key_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "preset", None):  # every command passes the one spec on (the sweep records it)
        args.data = f"{args.preset}:{args.data}"
    try:
        if hasattr(args, "device"):  # joins a torchrun/accelerate launch's processes, if any
            args.device = start_processes(args.device)
        quiet = open(os.devnull, "w") if not processes().main else None  # noqa: SIM115
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            args.func(args)
    except PrunekitError as exc:  # bad input: a message, not a traceback; a bug keeps its traceback
        for bar in _BARS:  # a bar left open mid-line would run into the message
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _BARS.clear()
        stop_processes()
    return 0
