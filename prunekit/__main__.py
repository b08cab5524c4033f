"""Command line: ``python -m prunekit <command>``. Each command says what it did and where it wrote."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .errors import PrunekitError


def _bar(desc: str, unit: str = "clip"):
    """A tqdm bar and a ``progress(done, total)`` callback that drives it."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, total=0)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def cmd_demo_data(args: argparse.Namespace) -> None:
    from .datasets import demo_dataset, demo_root

    start = time.perf_counter()
    bar, progress = _bar("generating synthetic speech commands")
    data = demo_dataset(args.seed, progress=progress)
    bar.close()
    counts = data.counts()
    print(f"Synthetic Speech Commands (seed {args.seed}) at {demo_root(args.seed)}")
    print(f"{len(data.clips)} clips, {len(data.labels)} labels; per split: " + ", ".join(
        f"{s} {int(counts[s].sum())}" for s in counts.columns))
    print(f"({time.perf_counter() - start:.1f} s)")


def cmd_demo_train(args: argparse.Namespace) -> None:
    from .demo import DemoTrainConfig, train_demo

    cfg = DemoTrainConfig(data_seed=args.data_seed, seed=args.seed)
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    record = train_demo(cfg, Path(args.out))
    print(f"Demo model written to {args.out}")
    print(f"validation accuracy {record['validation_accuracy']:.4f} (epoch {record['best_epoch']}), "
          f"test accuracy {record['test_accuracy']:.4f} on {record['test_clips']} held-out-voice clips, "
          f"{record['train_seconds']:.0f} s")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import evaluate as ev
    from .datasets import open_dataset
    from .models import load_model

    model, extractor, labels = load_model(args.model)
    bar, progress = _bar("preparing data")
    data = open_dataset(args.data, progress=progress)
    bar.close()
    bar, progress = _bar(f"evaluating on {args.split}")
    result = ev.evaluate(model, extractor, labels, data, args.split, batch_size=args.batch_size, progress=progress)
    bar.close()
    cost = ev.cost(model, repeats=args.repeats)
    row = cost.iloc[0]
    s = result.summary.iloc[0]
    print(f"model   {args.model}")
    print(f"data    {data.name} [{args.split}], {int(s['clips'])} clips")
    print(f"accuracy {s['accuracy']:.4f}   loss {s['loss']:.4f}")
    worst = result.per_class.sort_values("accuracy").head(5)
    print("lowest per-class accuracy: " + ", ".join(f"{r.label} {r.accuracy:.2f}" for r in worst.itertuples()))
    print(f"parameters {int(row['parameters']):,} (attention {int(row['attention_parameters']):,}), "
          f"MACs/clip {row['macs_per_clip'] / 1e6:.1f} M, latency b1 {row['latency_b1_ms']:.2f} ms, "
          f"b32 {row['latency_b32_ms']:.1f} ms")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m prunekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the synthetic speech-commands set into cache/")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("demo-train", help="train the embedded demo model from scratch")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "demo_model"))
    p.add_argument("--epochs", type=int, help="default: DemoTrainConfig.epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_train)

    p = sub.add_parser("evaluate", help="accuracy and cost of a model on a dataset split")
    p.add_argument("--model", default="demo", help="'demo', a local folder or a Hugging Face hub id")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20, help="timed runs for the latency median")
    p.add_argument("--csv", help="write per-clip predictions here")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PrunekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
