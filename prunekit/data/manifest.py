"""Datasets described by a CSV manifest: one row per audio file, its label(s) and maybe its split.

``read_manifest`` reads any such table (you name the columns); ``read_preset`` reads the layouts
the datasets people prune on ship with, and ``read_any`` picks a preset from a manifest's header
or guesses the columns. Every manifest is checked before a clip is made, and each problem is
refused with its count and an example, never skipped: a missing column, a row without a file or
label, a label not in the class table, a file named twice, a file outside the dataset folder
(``../``, an absolute path elsewhere, a symlink out), a missing file, an empty split.

Splits come from a split column (split names, or fold numbers: folds ``test_folds`` are test,
``validation_folds`` validation, the rest train), from the file a row is in (FSD50K's eval.csv,
AudioSet's eval_segments.csv), or else from a hash of the file's path as in
``read_class_folders``. Our choice for the fold layouts is the last fold for test and the one
before it for validation (ESC-50: 5 and 4; UrbanSound8K: 10 and 9): the datasets define folds
for cross-validation, not one held-out split, so any fixed choice is ours.
"""

from __future__ import annotations

import os
import re
import stat
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from prunekit.data.clips import SPLITS, AudioDataset, Clip, hash_split
from prunekit.errors import DatasetError

__all__ = [
    "FILE_GUESSES",
    "LABEL_GUESSES",
    "PRESETS",
    "SPLIT_GUESSES",
    "ManifestOptions",
    "looks_like_kind",
    "read_any",
    "read_manifest",
    "read_preset",
]

# Split names a split column may hold, and the split each one means.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}
# Column names read_any tries, in order, for a manifest that is none of the presets.
FILE_GUESSES = ("file", "filename", "file_name", "path", "filepath", "audio", "fname")
LABEL_GUESSES = ("label", "labels", "class", "category", "tags")
SPLIT_GUESSES = ("split", "fold", "set", "subset")
_LIST_COLUMNS = {"labels", "tags"}  # plural label columns hold comma-separated lists


@dataclass(frozen=True)
class ManifestOptions:
    """How to read a manifest's rows (see ``read_manifest`` for each field)."""

    file_column: str
    label_columns: tuple[str, ...]
    label_separator: str | None = None
    split_column: str | None = None
    test_folds: tuple[int, ...] = (5,)
    validation_folds: tuple[int, ...] = (4,)
    class_table: Path | None = None
    class_columns: tuple[str, str] | None = None
    audio_folder: str = ""
    file_suffix: str = ""
    validation: float = 0.1
    test: float = 0.1

    @property
    def multilabel(self) -> bool:
        return self.label_separator is not None or len(self.label_columns) > 1


@dataclass(frozen=True)
class _Table:
    """One CSV of a dataset: ``split`` is every row's split, or None (split column, or hash)."""

    path: Path
    split: str | None = None
    audio_folder: str | None = None  # None: the options' audio_folder


@dataclass(frozen=True)
class _Row:
    table: Path
    line: int  # line number in the file, for messages
    file: str  # as written, with the suffix added
    path: str  # normalised absolute path
    labels: tuple[str, ...]
    split: str | None


def read_manifest(
    path: str | Path,
    *,
    file_column: str,
    label_columns: str | Sequence[str],
    label_separator: str | None = None,
    split_column: str | None = None,
    test_folds: Sequence[int] = (5,),
    validation_folds: Sequence[int] = (4,),
    class_table: str | Path | None = None,
    class_columns: tuple[str, str] | None = None,
    audio_folder: str = "",
    file_suffix: str = "",
    validation: float = 0.1,
    test: float = 0.1,
    name: str | None = None,
) -> AudioDataset:
    """Read a CSV manifest; audio paths are relative to its folder (the dataset root).

    * ``file_column``: the audio file of each row; ``audio_folder`` is put in front of it (it
      may name columns, as in ``"audio/fold{fold}"``) and ``file_suffix`` after it when missing
      (FSD50K's ``fname`` and AudioSet's ``YTID`` are bare ids).
    * ``label_columns``: one column, or several whose non-empty cells are all labels of the
      row; with ``label_separator`` each cell is a list. Either makes the dataset multi-label.
    * ``split_column``: split names (train; val, valid, validation; test, eval) or fold numbers
      (``test_folds`` test, ``validation_folds`` validation, other folds train). Without one,
      each file's split comes from a hash of its path (``validation`` and ``test`` fractions).
    * ``class_table``: a CSV mapping the label ids in the manifest to names: ``class_columns``
      (id, name), by default AudioSet's ``mid, display_name`` or else the first two columns.
    """
    path = Path(path).expanduser()
    options = ManifestOptions(
        file_column,
        (label_columns,) if isinstance(label_columns, str) else tuple(label_columns),
        label_separator,
        split_column,
        tuple(test_folds),
        tuple(validation_folds),
        None if class_table is None else Path(class_table).expanduser(),
        class_columns,
        audio_folder,
        file_suffix,
        validation,
        test,
    )
    return _read([_Table(path)], path.parent, options, name=name or path.stem, layout="manifest")


# --- presets ---------------------------------------------------------------------------------------
def _metadata_root(path: Path, folder: str) -> Path:
    """The dataset folder: the manifest's own, or its parent when the manifest sits in the layout's
    metadata folder (ESC-50's meta/, UrbanSound8K's metadata/, FSD50K.ground_truth/)."""
    return path.parent.parent if path.parent.name == folder else path.parent


def _sibling(path: Path, name: str, preset: str) -> Path:
    found = path.parent / name
    if not found.is_file():
        present = sorted(p.name for p in path.parent.glob("*.csv"))
        raise DatasetError(
            f"The {preset} layout needs {name} beside {path.name} in {path.parent} "
            f"(CSV files there: {', '.join(present) or 'none'})."
        )
    return found


def _esc50(path: Path) -> AudioDataset:
    options = ManifestOptions(
        "filename",
        ("category",),
        split_column="fold",
        test_folds=(5,),
        validation_folds=(4,),
        audio_folder="audio",
    )
    return _read(
        [_Table(path)], _metadata_root(path, "meta"), options, name=f"ESC-50 ({path.name})", layout="esc50"
    )


def _urbansound8k(path: Path) -> AudioDataset:
    options = ManifestOptions(
        "slice_file_name",
        ("class",),
        split_column="fold",
        test_folds=(10,),
        validation_folds=(9,),
        audio_folder="audio/fold{fold}",
    )
    return _read(
        [_Table(path)],
        _metadata_root(path, "metadata"),
        options,
        name=f"UrbanSound8K ({path.name})",
        layout="urbansound8k",
    )


def _fsd50k(path: Path) -> AudioDataset:
    """dev.csv (its split column: train, val) and eval.csv (test), read together."""
    dev, evaluation = _sibling(path, "dev.csv", "fsd50k"), _sibling(path, "eval.csv", "fsd50k")
    options = ManifestOptions(
        "fname", ("labels",), label_separator=",", split_column="split", file_suffix=".wav"
    )
    tables = [_Table(dev, None, "FSD50K.dev_audio"), _Table(evaluation, "test", "FSD50K.eval_audio")]
    return _read(tables, _metadata_root(path, "FSD50K.ground_truth"), options, name="FSD50K", layout="fsd50k")


def _audioset(path: Path) -> AudioDataset:
    """A training segments file (balanced_train_segments.csv unless another ``*train*`` file is
    given) and eval_segments.csv (test) with class_labels_indices.csv beside them; audio in
    ``audio/<YTID>.wav`` (AudioSet ships no audio: that naming is ours). AudioSet has no
    validation split: 10 % of the training files, by a hash of the path, are ours."""
    train = path if "train" in path.name else _sibling(path, "balanced_train_segments.csv", "audioset")
    tables = [_Table(train), _Table(_sibling(path, "eval_segments.csv", "audioset"), "test")]
    options = ManifestOptions(
        "YTID",
        ("positive_labels",),
        label_separator=",",
        file_suffix=".wav",
        audio_folder="audio",
        class_table=_sibling(path, "class_labels_indices.csv", "audioset"),
        class_columns=("mid", "display_name"),
        validation=0.1,
        test=0.0,
    )
    return _read(tables, path.parent, options, name=f"AudioSet ({train.name})", layout="audioset")


# name -> (reader, the header columns that identify the layout)
PRESETS: dict[str, tuple[Callable[[Path], AudioDataset], frozenset[str]]] = {
    "esc50": (_esc50, frozenset({"filename", "fold", "target", "category"})),
    "urbansound8k": (_urbansound8k, frozenset({"slice_file_name", "fold", "classID", "class"})),
    "fsd50k": (_fsd50k, frozenset({"fname", "labels"})),
    "audioset": (_audioset, frozenset({"YTID", "positive_labels"})),
}


def looks_like_kind(text: str) -> bool:
    """Whether ``text`` (before the ':' of a dataset spec) reads as a kind or preset name."""
    return re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", text) is not None


def read_preset(preset: str, path: str | Path) -> AudioDataset:
    """``path`` (a manifest CSV) read as ``preset`` lays it out."""
    if preset not in PRESETS:
        raise DatasetError(
            f"Unknown manifest preset '{preset}'; presets: {', '.join(PRESETS)} "
            f"(other dataset kinds: speech-commands:DIR, folders:DIR)."
        )
    return PRESETS[preset][0](Path(path).expanduser())


def read_any(path: str | Path) -> AudioDataset:
    """A manifest whose header tells its preset, or else one read with guessed columns: the
    first of ``FILE_GUESSES`` for the files, of ``LABEL_GUESSES`` for the labels (``labels`` and
    ``tags`` hold comma-separated lists), of ``SPLIT_GUESSES`` for the split (else a hash split)."""
    path = Path(path).expanduser()
    columns = set(_load_table(path)[0].columns)
    for reader, signature in PRESETS.values():
        if signature <= columns:
            return reader(path)
    file_column = next((c for c in FILE_GUESSES if c in columns), None)
    label_column = next((c for c in LABEL_GUESSES if c in columns), None)
    if file_column is None or label_column is None:
        raise DatasetError(
            f"Cannot tell which columns of {path.name} name the {'files' if file_column is None else 'labels'} "
            f"(its columns: {', '.join(sorted(columns))}); expected one of "
            f"{', '.join(FILE_GUESSES if file_column is None else LABEL_GUESSES)}, or a preset's header "
            f"({'; '.join(f'{p}: ' + ', '.join(sorted(s)) for p, (_, s) in PRESETS.items())})."
        )
    return read_manifest(
        path,
        file_column=file_column,
        label_columns=label_column,
        label_separator="," if label_column in _LIST_COLUMNS else None,
        split_column=next((c for c in SPLIT_GUESSES if c in columns), None),
    )


# --- reading and checking ----------------------------------------------------------------------------
def _load_table(path: Path) -> tuple[pd.DataFrame, int]:
    """The manifest's cells as stripped strings, and the file line of its first row. A header
    in a leading comment (AudioSet's ``# YTID, start_seconds, ...``) is read as the header."""
    if not path.is_file():
        raise DatasetError(f"No manifest at {path}.")
    comments = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            comments.append(line)
    names = [c.strip() for c in comments[-1].lstrip("#").split(",")] if comments else None
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            skiprows=len(comments),
            header=None if names else "infer",
            names=names,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not a CSV table prunekit can read: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.fillna("").apply(lambda column: column.str.strip()), len(comments) + (1 if names else 2)


def _require(frame: pd.DataFrame, path: Path, needed: Sequence[str]) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path.name} has no column {', '.join(repr(c) for c in missing)} "
            f"(its columns: {', '.join(frame.columns)})."
        )


def _class_names(options: ManifestOptions) -> dict[str, str] | None:
    """Label id -> class name from the class table, or None without one."""
    if options.class_table is None:
        return None
    frame, _ = _load_table(options.class_table)
    columns = options.class_columns or (
        ("mid", "display_name") if {"mid", "display_name"} <= set(frame.columns) else tuple(frame.columns[:2])
    )
    if len(columns) != 2:
        raise DatasetError(
            f"The class table {options.class_table.name} needs an id and a name column "
            f"(its columns: {', '.join(frame.columns)})."
        )
    _require(frame, options.class_table, columns)
    ids = frame[columns[0]]
    if ids.duplicated().any():
        twice = sorted(set(ids[ids.duplicated()]))
        raise DatasetError(
            f"{_n(len(twice), 'id')} {_verb(len(twice), 'is', 'are')} listed twice in column '{columns[0]}' of {options.class_table.name}, "
            f"e.g. {twice[0]}."
        )
    return dict(zip(ids, frame[columns[1]], strict=True))


def _n(count: int, noun: str) -> str:
    """'1 file', '12 files': a count in a message."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _example(rows: Sequence[_Row]) -> str:
    return f"{rows[0].file} ({rows[0].table.name} line {rows[0].line})"


def _parse(tables: Sequence[_Table], root: Path, options: ManifestOptions) -> list[_Row]:
    """Every row of ``tables``, checked without touching the audio files: columns, empty cells,
    class-table labels, duplicates, paths outside ``root``, and each row's split."""
    classes = _class_names(options)
    root_text = os.path.realpath(root)
    rows: list[_Row] = []
    unlabelled, nameless, unknown = [], [], Counter()
    for table in tables:
        frame, first_line = _load_table(table.path)
        folder = options.audio_folder if table.audio_folder is None else table.audio_folder
        fields = [f for _, f, _, _ in string.Formatter().parse(folder) if f]
        split_column = options.split_column if table.split is None else None
        _require(
            frame,
            table.path,
            [options.file_column, *options.label_columns, *fields, *([split_column] if split_column else [])],
        )
        used = list(dict.fromkeys([options.file_column, *options.label_columns, *fields]))
        records = [dict(zip(used, values, strict=True)) for values in zip(*(frame[c].tolist() for c in used))]
        splits = _column_splits(frame, table.path, split_column, options) if split_column else None
        for i, record in enumerate(records):
            file = record[options.file_column]
            if options.file_suffix and file and not file.lower().endswith(options.file_suffix):
                file += options.file_suffix
            labels = []
            for column in options.label_columns:
                cell = record[column]
                labels += cell.split(options.label_separator) if options.label_separator else [cell]
            labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
            if classes is not None:
                unknown.update(label for label in labels if label not in classes)
                labels = [classes.get(label, label) for label in labels]
            place = folder.format(**record) if fields else folder
            row = _Row(
                table.path,
                first_line + i,
                file,
                os.path.normpath(os.path.join(root_text, place, file)),
                tuple(labels),
                table.split if splits is None else splits[i],
            )
            (nameless if not file else unlabelled if not labels else rows).append(row)
    name = " and ".join(t.path.name for t in tables)
    if nameless:
        raise DatasetError(
            f"{_n(len(nameless), 'row')} of {name} {_verb(len(nameless), 'has', 'have')} no file in column '{options.file_column}', "
            f"e.g. {nameless[0].table.name} line {nameless[0].line}."
        )
    if unlabelled:
        raise DatasetError(
            f"{_n(len(unlabelled), 'row')} of {name} {_verb(len(unlabelled), 'has', 'have')} no label in "
            f"{', '.join(repr(c) for c in options.label_columns)}, e.g. {_example(unlabelled)}."
        )
    if unknown:
        raise DatasetError(
            f"{_n(len(unknown), 'label')} named in {name} {_verb(len(unknown), 'is', 'are')} not in the class table {options.class_table.name} "
            f"({_n(sum(unknown.values()), 'mention')}), e.g. "
            + ", ".join(f"{k} ({n})" for k, n in unknown.most_common(3))
        )
    seen = Counter(row.path for row in rows)
    twice = [row for row in rows if seen[row.path] > 1]
    if twice:
        again = [row for row in twice if row.path == twice[0].path]
        repeated = sum(1 for n in seen.values() if n > 1)
        raise DatasetError(
            f"{_n(repeated, 'file')} {_verb(repeated, 'is', 'are')} named more than once in {name} "
            f"({len(twice)} rows), e.g. {twice[0].file} (lines {', '.join(str(r.line) for r in again)})."
        )
    outside = [row for row in rows if not _inside(row.path, root_text)]
    if outside:
        raise DatasetError(
            f"{_n(len(outside), 'file')} named in {name} {_verb(len(outside), 'lies', 'lie')} "
            f"outside the dataset folder {root_text}, "
            f"e.g. {_example(outside)}: paths must stay inside it."
        )
    inside = len(root_text.rstrip(os.sep)) + 1  # every path starts with the root and a separator now
    rows = [
        row
        if row.split
        else replace(row, split=hash_split(row.path[inside:], options.validation, options.test))
        for row in rows
    ]
    counts = Counter(row.split for row in rows)
    for split in SPLITS:
        if not counts[split]:
            given = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
            raise DatasetError(
                f"The {split} split of {name} is empty ({len(rows)} rows: {given}); "
                + _split_hint(split, tables, options)
            )
    return rows


def _split_hint(split: str, tables: Sequence[_Table], options: ManifestOptions) -> str:
    if any(t.split is None for t in tables) and options.split_column:
        folds = options.test_folds if split == "test" else options.validation_folds
        return (
            f"column '{options.split_column}' marks it by the names "
            f"{', '.join(k for k, v in SPLIT_NAMES.items() if v == split)}"
            + (f" or fold {', '.join(map(str, folds))}" if split != "train" else "")
            + "."
        )
    return (
        f"the hash split gives validation {options.validation:.0%} and test {options.test:.0%} of the files: "
        f"add rows or a split column."
    )


def _column_splits(frame: pd.DataFrame, path: Path, column: str, options: ManifestOptions) -> list[str]:
    """Each row's split from ``column``: fold numbers when every cell is one, else split names."""
    values = frame[column]
    if values.str.fullmatch(r"\d+").all():
        folds = values.astype(int)
        return [
            "test" if f in options.test_folds else "validation" if f in options.validation_folds else "train"
            for f in folds
        ]
    bad = values[~values.str.lower().isin(SPLIT_NAMES)]
    if len(bad):
        shown = ", ".join(f"{v!r} ({_n(n, 'row')})" for v, n in bad.value_counts().head(5).items())
        raise DatasetError(
            f"Column '{column}' of {path.name} holds {_n(len(bad), 'cell')} that "
            f"{_verb(len(bad), 'is', 'are')} neither fold numbers "
            f"nor split names: {shown}; split names are {', '.join(SPLIT_NAMES)}."
        )
    return [SPLIT_NAMES[v] for v in values.str.lower()]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_files(rows: Sequence[_Row], root: Path, name: str) -> None:
    """Every file exists and is inside ``root`` once symlinks are followed (the file's own and
    its folders'; each folder is resolved once)."""
    root_text = os.path.realpath(root)
    folders: dict[str, bool] = {}
    missing, escaped = [], []
    for row in rows:
        parent = os.path.dirname(row.path)
        if parent not in folders:
            folders[parent] = _inside(os.path.realpath(parent), root_text)
        try:
            mode = os.lstat(row.path).st_mode
        except OSError:
            missing.append(row)
            continue
        if not folders[parent] or (stat.S_ISLNK(mode) and not _inside(os.path.realpath(row.path), root_text)):
            escaped.append(row)
        elif stat.S_ISLNK(mode) and not os.path.exists(row.path):
            missing.append(row)
    if escaped:
        raise DatasetError(
            f"{_n(len(escaped), 'file')} named in {name} {_verb(len(escaped), 'leads', 'lead')} outside the dataset folder {root_text} "
            f"through a symlink, e.g. {_example(escaped)}: paths must stay inside it."
        )
    if missing:
        folder = os.path.dirname(missing[0].path)
        raise DatasetError(
            f"{_n(len(missing), 'file')} named in {name} {_verb(len(missing), 'is', 'are')} missing, e.g. {missing[0].file} "
            f"(looked in {folder}; {missing[0].table.name} line {missing[0].line})."
        )


def _read(
    tables: Sequence[_Table], root: Path, options: ManifestOptions, *, name: str, layout: str
) -> AudioDataset:
    rows = _parse(tables, root, options)
    _check_files(rows, root, " and ".join(t.path.name for t in tables))
    if options.multilabel:
        clips = tuple(Clip.tagged(Path(r.path), r.labels, r.split) for r in rows)
    else:
        clips = tuple(Clip(Path(r.path), r.labels[0], r.split) for r in rows)
    labels = tuple(sorted({label for c in clips for label in c.labels}))
    return AudioDataset(
        name, Path(os.path.realpath(root)), layout, labels, clips, multilabel=options.multilabel
    )
