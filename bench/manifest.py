"""How fast a CSV manifest is read: rows per second on a generated AudioSet-style layout.

    .venv/bin/python bench/manifest.py            # writes bench/results/manifest.json
    .venv/bin/python bench/manifest.py --rows 5000 --repeats 1   # a quick look

The layout is AudioSet's: 527 classes in class_labels_indices.csv, segment CSVs with the comment
header, 1 to 4 mids per segment; ``--rows`` segments in all (96 % in balanced_train_segments.csv,
4 % in eval_segments.csv). Every segment has its own file under audio/: hard links to a few
hundred real 0.1 s WAVs, so the existence and symlink checks stat real directory entries (warm
page cache: the files were just written). Three timings, each the median of ``--repeats``:

1. parse + validate: reading the CSVs and the class table, labels, duplicates, paths, splits
   (``manifest._parse``, no audio file touched);
2. file checks: every file's lstat and the folders' realpath (``manifest._check_files``);
3. the whole ``open_dataset("audioset:...")``, clips and dataset built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from prunekit.data import manifest
from prunekit.data.datasets import open_dataset

REPO = Path(__file__).resolve().parent.parent

CLASSES = 527
SOURCES = 300  # real WAVs the segment files are hard links to


def write_layout(root: Path, rows: int, seed: int = 0) -> Path:
    """An AudioSet-style folder with ``rows`` segments; returns its balanced_train_segments.csv."""
    rng = np.random.default_rng(seed)
    mids = [f"/m/c{k:04d}" for k in range(CLASSES)]
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{k},{m},"Class {k}, a sound"\n' for k, m in enumerate(mids))
    )
    audio = root / "audio"
    audio.mkdir(parents=True)
    sources = []
    for k in range(SOURCES):
        path = audio / f"_source{k:03d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000, subtype="PCM_16")
        sources.append(path)
    evaluation = rows * 4 // 100
    for name, ids in (
        ("balanced_train_segments.csv", range(evaluation, rows)),
        ("eval_segments.csv", range(evaluation)),
    ):
        lines = [
            "# Segments csv created by bench/manifest.py",
            f"# num_ytids={len(ids)}, num_segs={len(ids)}, num_unique_labels={CLASSES}",
            "# YTID, start_seconds, end_seconds, positive_labels",
        ]
        for i in ids:
            ytid = f"y{i:010d}"
            labels = ",".join(mids[k] for k in rng.choice(CLASSES, rng.integers(1, 5), replace=False))
            lines.append(f'{ytid}, 30.000, 40.000, "{labels}"')
            os.link(sources[i % SOURCES], audio / f"{ytid}.wav")
        (root / name).write_text("\n".join(lines) + "\n")
    return root / "balanced_train_segments.csv"


def median_seconds(job, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "manifest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        train = write_layout(root, args.rows)
        print(
            f"wrote an AudioSet-style layout of {args.rows:,} segments in {time.perf_counter() - start:.1f} s"
        )
        # The preset's own tables and options, timed stage by stage (private functions: this is a
        # measurement of the reader's parts, not an API).
        tables = [manifest._Table(train), manifest._Table(root / "eval_segments.csv", "test")]
        options = manifest.ManifestOptions(
            "YTID",
            ("positive_labels",),
            label_separator=",",
            file_suffix=".wav",
            audio_folder="audio",
            class_table=root / "class_labels_indices.csv",
            class_columns=("mid", "display_name"),
            test=0.0,
        )
        rows = manifest._parse(tables, root, options)
        assert len(rows) == args.rows
        parse = median_seconds(lambda: manifest._parse(tables, root, options), args.repeats)
        check = median_seconds(lambda: manifest._check_files(rows, root, train.name), args.repeats)
        whole = median_seconds(lambda: open_dataset(f"audioset:{train}"), args.repeats)
        data = open_dataset(f"audioset:{train}")
    splits = Counter(c.split for c in data.clips)
    result = {
        "rows": args.rows,
        "classes": CLASSES,
        "repeats": args.repeats,
        "labels_per_row": round(sum(len(c.labels) for c in data.clips) / len(data.clips), 3),
        "splits": {s: splits[s] for s in ("train", "validation", "test")},
        "parse_validate_seconds": round(parse, 3),
        "parse_validate_rows_per_s": round(args.rows / parse),
        "file_checks_seconds": round(check, 3),
        "file_checks_rows_per_s": round(args.rows / check),
        "open_dataset_seconds": round(whole, 3),
        "open_dataset_rows_per_s": round(args.rows / whole),
        "files": f"every row its own hard link to one of {SOURCES} real 0.1 s WAVs; warm page cache",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"parse + validate {parse:.2f} s ({result['parse_validate_rows_per_s']:,} rows/s), file checks {check:.2f} s "
        f"({result['file_checks_rows_per_s']:,} rows/s), open_dataset {whole:.2f} s "
        f"({result['open_dataset_rows_per_s']:,} rows/s)"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
