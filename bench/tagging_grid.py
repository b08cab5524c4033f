"""The head-pruning grid on the tagging demo (multi-label, mAP), one-shot and with LoRA recovery.

    .venv/bin/python bench/tagging_grid.py oneshot        # -> cache/tagging-grid/oneshot/ (resumable)
    .venv/bin/python -m prunekit sweep ... --out cache/tagging-grid/<name>   # see docs/tagging-grid/
    .venv/bin/python bench/tagging_grid.py recovered cache/tagging-grid/<sweep> ...   # paired, recovered
    .venv/bin/python bench/tagging_grid.py docs cache/tagging-grid/<sweep> ...   # -> docs/tagging-grid/

``oneshot``: score the tagging demo once (Fisher on its validation split, up to 1000 clips: the
split has 456; magnitude needs no data), prune to 10 ... 60 % attention sparsity with each of
Fisher / magnitude x per-head / entire-head x global / local (global per-head with separate Q/K
and V/O budgets, the default) and read test mAP (456 clips) once per configuration, without
recovery. Every configuration's row is written as soon as it is evaluated, its per-clip
sigmoids beside it, so a killed run continues where it stopped. Then, at 50 % and 60 %, Fisher
against magnitude for each pattern x threshold: a paired bootstrap 95 % interval of the mAP
difference (``paired.compare_map``: the same resampled clips for both models, 2,000 resamples).
Nothing is chosen on the test split: scorers, targets and thresholds are fixed in advance.

``recovered``: each sweep keeps its configurations' last recovered models (the 60 % step here);
their test sigmoids and paired mAP intervals, seed by seed: Fisher against magnitude,
entire-head against per-head (Fisher, global), global against local (magnitude).

``docs``: the one-shot CSVs, the recovered models' intervals and one or more sweep folders (``prunekit sweep``; finished or not:
their finished steps) into docs/tagging-grid/: oneshot.csv/.md, oneshot_paired.csv,
results.csv and structure.csv (the sweeps' rows together), sweeps.json (their settings),
recovered.csv (every configuration x seed x target: mAP after recovery at the step nearest the
target), recovered.md (its mean over seeds, with the range) and paper.md (the paper's AudioSet
numbers beside ours, as shares of dense mAP).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from prunekit.data.datasets import open_dataset
from prunekit.evaluation import metrics
from prunekit.evaluation.paired import average_precisions, bootstrap_map_difference
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score, scoring_data
from prunekit.heads.surgery import apply_plan
from prunekit.models import load_model
from prunekit.recovery import sweep
from prunekit.store import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "cache" / "tagging-grid"
DOCS = REPO / "docs" / "tagging-grid"
SCORERS = ("fisher", "magnitude")
PATTERNS = ("per-head", "entire-head")
THRESHOLDS = ("global", "local")
TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
PAIRED_TARGETS = (0.5, 0.6)
SHORT = sweep.SHORT_NAMES  # PH, EH, G, L, Fisher, Mag: the paper's table
# The paper's AudioSet sentence (balanced subset, AST-base, iterative pruning with LoRA recovery).
PAPER_DENSE = 0.3226
PAPER_60 = {("per-head", "global", "fisher"): 0.3086, ("per-head", "global", "magnitude"): 0.2590,
            ("entire-head", "global", "fisher"): 0.3110}  # fmt: skip


def _name(scorer: str, pattern: str, threshold: str, target: float) -> str:
    return f"{scorer}_{pattern}_{threshold}_{round(100 * target)}"


def _save_scores(path: Path, values: np.ndarray) -> None:
    """Per-clip sigmoids (N, C), written atomically."""
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, values)
    os.replace(tmp, path)


def _write_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def oneshot(out: Path, resamples: int) -> None:
    started = time.perf_counter()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    (out / "scores").mkdir(parents=True, exist_ok=True)
    rows_path = out / "oneshot.csv"
    rows = pd.read_csv(rows_path).to_dict(orient="records") if rows_path.is_file() else []
    done = {r["name"] for r in rows if (out / "scores" / f"{r['name']}.npy").is_file()}
    rows = [r for r in rows if r["name"] in done]
    model, extractor, labels = load_model("demo-tagging")
    dataset = open_dataset("demo-tagging")
    dense = metrics.evaluate(model, extractor, labels, dataset, "test")
    _save_scores(out / "scores" / "dense.npy", dense.scores)
    np.save(out / "targets.npy", dense.targets)
    print(f"dense test mAP {dense.mean_average_precision:.4f} ({len(dense.targets)} clips)", flush=True)
    data = scoring_data(dataset, extractor, labels, "validation", clips=1000)
    for scorer in SCORERS:
        table = None
        for pattern in PATTERNS:
            for threshold in THRESHOLDS:
                for target in TARGETS:
                    name = _name(scorer, pattern, threshold, target)
                    if name in done:
                        continue
                    if table is None:
                        tick = time.perf_counter()
                        table = score(model, scorer, data)
                        print(f"{scorer} scores ({time.perf_counter() - tick:.0f} s)", flush=True)
                    plan = make_plan(table, pattern, threshold, target)
                    result = metrics.evaluate(apply_plan(model, plan), extractor, labels, dataset, "test")
                    _save_scores(out / "scores" / f"{name}.npy", result.scores)
                    qk = sum(lp.qk_channels for lp in plan.layers) / sum(
                        s.heads * s.qk_dim for s in plan.base
                    )
                    vo = sum(lp.vo_channels for lp in plan.layers) / sum(s.heads * s.v_dim for s in plan.base)
                    rows.append(
                        {
                            "name": name,
                            "scorer": scorer,
                            "pattern": pattern,
                            "threshold": threshold,
                            "target": target,
                            "sparsity": round(plan.attention_sparsity(), 4),
                            "qk_removed": round(1 - qk, 4),
                            "vo_removed": round(1 - vo, 4),
                            "heads_left": sum(len(lp.heads) for lp in plan.layers),
                            "map": result.mean_average_precision,
                            "dense_map": dense.mean_average_precision,
                            "share_of_dense": result.mean_average_precision / dense.mean_average_precision,
                            "score_clips": len(data.features),
                        }
                    )
                    _write_rows(rows_path, rows)
                    print(f"{name}: mAP {result.mean_average_precision:.4f}", flush=True)
    paired = _paired(out, rows, resamples)
    atomic_write_text(out / "oneshot_paired.csv", paired.to_csv(index=False))
    print(paired.to_string(index=False))
    print(f"written to {out} ({time.perf_counter() - started:.0f} s)")


def _paired(out: Path, rows: list[dict], resamples: int) -> pd.DataFrame:
    """Fisher (candidate) against magnitude (reference) per pattern x threshold at PAIRED_TARGETS."""
    targets = np.load(out / "targets.npy")
    found = {r["name"]: r for r in rows}
    result = []
    for pattern in PATTERNS:
        for threshold in THRESHOLDS:
            for target in PAIRED_TARGETS:
                names = [_name(s, pattern, threshold, target) for s in ("magnitude", "fisher")]
                if not all(n in found for n in names):
                    continue
                magnitude, fisher = (np.load(out / "scores" / f"{n}.npy") for n in names)
                low, high = bootstrap_map_difference(magnitude, fisher, targets, resamples=resamples)
                maps = [float(np.nanmean(average_precisions(v, targets))) for v in (magnitude, fisher)]
                result.append(
                    {
                        "pattern": pattern,
                        "threshold": threshold,
                        "target": target,
                        "magnitude_map": maps[0],
                        "fisher_map": maps[1],
                        "difference": maps[1] - maps[0],
                        "ci_low": low,
                        "ci_high": high,
                        "resamples": resamples,
                        "clips": len(targets),
                    }
                )
    return pd.DataFrame(result)


# --- the recovered models --------------------------------------------------------------------
def recovered(sweeps: list[Path], out: Path, resamples: int) -> None:
    """Test sigmoids of every configuration's last recovered model (``runs/<name>/step-<k>``, the
    one a sweep keeps: the 60 % step here) and paired mAP intervals between them, seed by seed:
    Fisher against magnitude (same pattern and threshold), entire-head against per-head
    (Fisher, global) and global against local (magnitude, same pattern). Resumable: a model's
    sigmoids are kept and not recomputed."""
    started = time.perf_counter()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    (out / "scores").mkdir(parents=True, exist_ok=True)
    dataset = open_dataset("demo-tagging")
    rows = []
    for folder in sweeps:
        results, _ = sweep.load_results(folder)
        for key, run in results.groupby(list(sweep.CONFIG_COLUMNS), sort=False):
            last = run.sort_values("step").iloc[-1]
            scorer, pattern, threshold, seed = key
            name = f"{scorer}_{pattern}_{threshold}_seed{seed}"  # sweep.run_name
            model_dir = folder / "runs" / name / f"step-{int(last['step'])}"
            name += f"_step{int(last['step'])}"
            path = out / "scores" / f"{name}.npy"
            if not path.is_file():
                model, extractor, labels = load_model(model_dir)
                result = metrics.evaluate(model, extractor, labels, dataset, "test")
                _save_scores(path, result.scores)
                if not (out / "targets.npy").is_file():
                    np.save(out / "targets.npy", result.targets)
                print(f"{name}: mAP {result.mean_average_precision:.4f}", flush=True)
            rows.append(
                {
                    **dict(zip(sweep.CONFIG_COLUMNS, key)),
                    "step": int(last["step"]),
                    "sparsity": round(float(last["attention_sparsity"]), 4),
                    "map_in_sweep": float(last["map_after"]),
                    "name": name,
                }
            )
    models = pd.DataFrame(rows)
    targets = np.load(out / "targets.npy")
    pairs = []
    for r in models.itertuples():
        if r.scorer == "magnitude":
            pairs.append(("fisher vs magnitude", r, _find(models, r, scorer="fisher")))
            if r.threshold == "local":
                pairs.append(("global vs local (magnitude)", r, _find(models, r, threshold="global")))
        if r.scorer == "fisher" and r.pattern == "per-head" and r.threshold == "global":
            pairs.append(
                ("entire-head vs per-head (Fisher, global)", r, _find(models, r, pattern="entire-head"))
            )
    compared = []
    for question, reference, candidate in pairs:
        if candidate is None:
            continue
        a, b = (np.load(out / "scores" / f"{m.name}.npy") for m in (reference, candidate))
        low, high = bootstrap_map_difference(a, b, targets, resamples=resamples)
        maps = [float(np.nanmean(average_precisions(v, targets))) for v in (a, b)]
        compared.append(
            {
                "question": question,
                "seed": reference.seed,
                "reference": f"{reference.scorer} {reference.pattern} {reference.threshold}",
                "reference_sparsity": reference.sparsity,
                "candidate": f"{candidate.scorer} {candidate.pattern} {candidate.threshold}",
                "candidate_sparsity": candidate.sparsity,
                "reference_map": maps[0],
                "candidate_map": maps[1],
                "difference": maps[1] - maps[0],
                "ci_low": low,
                "ci_high": high,
                "resamples": resamples,
                "clips": len(targets),
            }
        )
    paired = pd.DataFrame(compared)
    atomic_write_text(out / "recovered_models.csv", models.to_csv(index=False))
    atomic_write_text(out / "recovered_paired.csv", paired.to_csv(index=False))
    print(paired.drop(columns=["resamples", "clips"]).to_string(index=False))
    print(f"written to {out} ({time.perf_counter() - started:.0f} s)")


def _find(models: pd.DataFrame, row, **change):
    """The model like ``row`` but for ``change`` (same seed), or None when it was not run."""
    want = {c: getattr(row, c) for c in sweep.CONFIG_COLUMNS} | change
    hit = models
    for column, value in want.items():
        hit = hit[hit[column] == value]
    return next(hit.itertuples(), None)


# --- docs ------------------------------------------------------------------------------------
def docs(oneshot_dir: Path, sweeps: list[Path], target: Path, recovered_dir: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("recovered_models.csv", "recovered_paired.csv"):
        if (recovered_dir / name).is_file():
            atomic_write_text(target / name, (recovered_dir / name).read_text())
    frame = pd.read_csv(oneshot_dir / "oneshot.csv")
    atomic_write_text(target / "oneshot.csv", frame.drop(columns="name").to_csv(index=False))
    paired = pd.read_csv(oneshot_dir / "oneshot_paired.csv")
    atomic_write_text(target / "oneshot_paired.csv", paired.to_csv(index=False))
    atomic_write_text(target / "oneshot.md", _oneshot_markdown(frame))
    results, structure, settings = [], [], {}
    for folder in sweeps:
        r, s = sweep.load_results(folder)
        results.append(r)
        structure.append(s)
        settings[folder.name] = json.loads((folder / sweep.SWEEP_FILE).read_text())
    results = pd.concat(results, ignore_index=True)
    atomic_write_text(target / "results.csv", results.to_csv(index=False))
    atomic_write_text(target / "structure.csv", pd.concat(structure, ignore_index=True).to_csv(index=False))
    atomic_write_text(target / "sweeps.json", json.dumps(settings, indent=1) + "\n")
    seeds = _seed_values(results)
    atomic_write_text(target / "recovered.csv", seeds.to_csv(index=False))
    atomic_write_text(target / "recovered.md", _recovered_markdown(seeds))
    atomic_write_text(target / "paper.md", _paper_markdown(frame, seeds))
    print(
        f"wrote oneshot.csv/.md, oneshot_paired.csv, results.csv, structure.csv, sweeps.json, recovered.csv/.md, paper.md to {target}"
    )


def _oneshot_markdown(frame: pd.DataFrame) -> str:
    columns = [f"{round(100 * t)}%" for t in TARGETS]
    lines = [
        "| scheme | thr | score | dense | " + " | ".join(columns) + " |",
        "|---" * (4 + len(columns)) + "|",
    ]
    for (pattern, threshold, scorer), run in frame.groupby(["pattern", "threshold", "scorer"], sort=False):
        values = run.set_index("target", drop=False)
        cells = [_cell(values.loc[t]) if t in values.index else "" for t in TARGETS]
        lines.append(
            f"| {SHORT[pattern]} | {SHORT[threshold]} | {SHORT[scorer]} | {run['dense_map'].iloc[0]:.4f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _cell(row: pd.Series) -> str:
    """mAP, with the sparsity reached when the pattern's granularity missed the target by over
    a point (entire-head: whole heads; local entire-head: a sixth of every layer at a time)."""
    off = abs(row["sparsity"] - row["target"]) > 0.01
    return f"{row['map']:.4f}" + (f" ({row['sparsity']:.1%})" if off else "")


def _seed_values(results: pd.DataFrame) -> pd.DataFrame:
    """Every configuration x seed x target: mAP after recovery at the step whose reached
    attention sparsity is nearest the target (linear steps land within a point of it, except
    where whole heads set the grain: entire-head reaches 11.1 ... 61.1 %, local entire-head
    16.7 ... 66.7 %), and its share of the dense mAP. A target more than 5 points beyond the
    last finished step is left out (a run stopped early)."""
    rows = []
    for (scorer, pattern, threshold, seed), run in results.groupby(list(sweep.CONFIG_COLUMNS), sort=False):
        steps = run.sort_values("step").drop_duplicates("attention_sparsity")  # a repeat removed nothing
        dense = steps.loc[steps["step"] == 0, "map_after"].iloc[0]
        for target in TARGETS:
            if target > steps["attention_sparsity"].max() + 0.05:
                continue  # not reached: the run stopped early
            gap = (steps["attention_sparsity"] - target).abs()
            step = steps.loc[gap.idxmin()]
            rows.append(
                {
                    "scorer": scorer,
                    "pattern": pattern,
                    "threshold": threshold,
                    "seed": seed,
                    "target": target,
                    "step": int(step["step"]),
                    "sparsity": round(float(step["attention_sparsity"]), 4),
                    "map": float(step["map_after"]),
                    "dense_map": dense,
                    "share_of_dense": float(step["map_after"]) / dense,
                }
            )
    return pd.DataFrame(rows)


def _recovered_markdown(seeds: pd.DataFrame) -> str:
    """mAP after recovery at each target (the nearest step), mean over seeds; with more than one
    seed the range follows in brackets, and a reached sparsity off the target by over a point in
    parentheses."""
    columns = [f"{round(100 * t)}%" for t in TARGETS]
    lines = [
        "| scheme | thr | score | seeds | " + " | ".join(columns) + " |",
        "|---" * (4 + len(columns)) + "|",
    ]
    for (pattern, threshold, scorer), run in seeds.groupby(["pattern", "threshold", "scorer"], sort=False):
        cells = []
        for target in TARGETS:
            at = run[np.isclose(run["target"], target)]
            if not len(at):
                cells.append("")
                continue
            cell = f"{at['map'].mean():.4f}"
            if len(at) > 1:
                cell += f" [{at['map'].min():.4f}-{at['map'].max():.4f}]"
            if abs(at["sparsity"].mean() - target) > 0.01:
                cell += f" ({at['sparsity'].mean():.1%})"
            cells.append(cell)
        lines.append(
            f"| {SHORT[pattern]} | {SHORT[threshold]} | {SHORT[scorer]} | {run['seed'].nunique()} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _paper_markdown(oneshot_frame: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """The paper's 60 % numbers as shares of its dense mAP beside ours (recovered: mean and range
    over seeds; one-shot)."""
    lines = [
        "| configuration at 60 % | paper mAP | paper share of dense | ours recovered mAP | ours recovered share"
        " (seeds: mean, range) | ours one-shot share |",
        "|---|---|---|---|---|---|",
    ]
    oneshot_60 = oneshot_frame[np.isclose(oneshot_frame["target"], 0.6)].set_index(
        ["pattern", "threshold", "scorer"]
    )
    for pattern in PATTERNS:
        for threshold in THRESHOLDS:
            for scorer in SCORERS:
                key = (pattern, threshold, scorer)
                paper = PAPER_60.get(key)
                ours = seeds[
                    (seeds["pattern"] == pattern)
                    & (seeds["threshold"] == threshold)
                    & (seeds["scorer"] == scorer)
                    & np.isclose(seeds["target"], 0.6)
                ]
                recovered = share = ""
                if len(ours):
                    recovered = f"{ours['map'].mean():.4f}"
                    share = (
                        f"{ours['share_of_dense'].mean():.1%} ({len(ours)} seed{'s' if len(ours) > 1 else ''}"
                    )
                    low, high = ours["share_of_dense"].min(), ours["share_of_dense"].max()
                    share += f": {low:.1%} - {high:.1%})" if len(ours) > 1 else ")"
                one = oneshot_60["share_of_dense"].get(key)
                lines.append(
                    f"| {SHORT[pattern]}-{SHORT[threshold]}-{SHORT[scorer]} | "
                    + (f"{paper:.4f} | {paper / PAPER_DENSE:.1%}" if paper else " | ")
                    + f" | {recovered} | {share} | "
                    + ("" if one is None else f"{one:.1%}")
                    + " |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("oneshot", help="the one-shot grid and its paired intervals")
    p.add_argument("--out", type=Path, default=WORK / "oneshot")
    p.add_argument("--resamples", type=int, default=2000)
    p = sub.add_parser("recovered", help="paired intervals between the sweeps' last recovered models")
    p.add_argument("sweeps", type=Path, nargs="+", help="sweep folders (prunekit sweep --out)")
    p.add_argument("--out", type=Path, default=WORK / "recovered")
    p.add_argument("--resamples", type=int, default=2000)
    p = sub.add_parser("docs", help="one-shot CSVs and sweep folders into docs/tagging-grid/")
    p.add_argument("sweeps", type=Path, nargs="+", help="sweep folders (prunekit sweep --out)")
    p.add_argument("--oneshot", type=Path, default=WORK / "oneshot")
    p.add_argument("--recovered", type=Path, default=WORK / "recovered")
    p.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    if args.command == "oneshot":
        oneshot(args.out, args.resamples)
    elif args.command == "recovered":
        recovered(args.sweeps, args.out, args.resamples)
    else:
        docs(args.oneshot, args.sweeps, args.out, args.recovered)


if __name__ == "__main__":
    main()
