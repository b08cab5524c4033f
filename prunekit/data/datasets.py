"""Labelled audio clips with train/validation/test splits, from three layouts and CSV manifests.

- Speech Commands v2: ``<root>/<label>/<speaker>_nohash_<n>.wav`` plus ``validation_list.txt``
  and ``testing_list.txt``; everything else is training; ``_background_noise_`` is excluded.
- Folder per class: ``<root>/<label>/*.{wav,flac,ogg}``, split deterministically by file.
- The synthetic demo set: espeak-ng speech written in the Speech Commands layout (``synth``),
  generated into the cache the first time it is needed; and its tagging counterpart
  (``"demo-tagging"``: one to three words and a background per clip, each a label; ``tagging``).
- A CSV manifest naming the files and their labels (ESC-50, UrbanSound8K, FSD50K, AudioSet or
  your own): read by ``prunekit.data.manifest``; ``open_dataset`` dispatches to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prunekit.data.clips import AUDIO_SUFFIXES, SPLITS, AudioDataset, Clip, hash_split
from prunekit.errors import DatasetError
from prunekit.store import cache_dir

__all__ = [
    "AUDIO_SUFFIXES",
    "DATA_KINDS",
    "DEMO_DATA_VERSION",
    "SPLITS",
    "AudioDataset",
    "Clip",
    "demo_dataset",
    "demo_generated",
    "demo_root",
    "hash_split",
    "is_speech_commands",
    "label_indices",
    "label_targets",
    "open_dataset",
    "read_class_folders",
    "read_speech_commands",
    "tagging_dataset",
    "tagging_generated",
    "tagging_root",
]

_SC_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_IGNORED_DIRS = {"_background_noise_"}


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _label_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DatasetError(f"No dataset folder at {root}.")
    dirs = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and d.name not in _IGNORED_DIRS and not d.name.startswith(".") and _audio_files(d)
    )
    if not dirs:
        raise DatasetError(
            f"{root} has no class folders with audio files "
            f"(expected <root>/<label>/*{'|'.join(AUDIO_SUFFIXES)})."
        )
    return dirs


def is_speech_commands(root: Path) -> bool:
    return all((Path(root) / name).is_file() for name in _SC_LISTS.values())


def read_speech_commands(root: str | Path, name: str | None = None) -> AudioDataset:
    """Read a Speech Commands v2 folder (the real download or the synthetic set)."""
    root = Path(root).expanduser()
    if not is_speech_commands(root):
        raise DatasetError(
            f"{root} is not in the Speech Commands layout: it needs "
            f"{' and '.join(_SC_LISTS.values())} beside the label folders."
        )
    listed: dict[str, str] = {}
    for split, filename in _SC_LISTS.items():
        for line in (root / filename).read_text().splitlines():
            if line.strip():
                listed[line.strip()] = split
    clips = []
    for folder in _label_dirs(root):
        for path in _audio_files(folder):
            clips.append(Clip(path, folder.name, listed.get(f"{folder.name}/{path.name}", "train")))
    labels = tuple(sorted({c.label for c in clips}))
    return AudioDataset(name or root.name, root, "speech-commands", labels, tuple(clips))


def read_class_folders(
    root: str | Path, *, validation: float = 0.1, test: float = 0.1, name: str | None = None
) -> AudioDataset:
    """Read ``<root>/<label>/*.wav``; each file goes to a split by a hash of its relative path,
    so the split is deterministic and does not change when files are added."""
    root = Path(root).expanduser()
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise DatasetError(f"Split fractions must be in [0, 1) and sum below 1, got {validation=}, {test=}.")
    clips = []
    for folder in _label_dirs(root):
        for path in _audio_files(folder):
            clips.append(Clip(path, folder.name, hash_split(f"{folder.name}/{path.name}", validation, test)))
    labels = tuple(sorted({c.label for c in clips}))
    return AudioDataset(name or root.name, root, "class-folders", labels, tuple(clips))


# Bump when the synthetic generator changes, so an old cached set is not mistaken for the new one.
DEMO_DATA_VERSION = 2  # 2: two takes per voice and word


def demo_root(seed: int = 0) -> Path:
    return cache_dir() / f"synthetic-speech-commands-v{DEMO_DATA_VERSION}-seed{seed}"


def demo_generated(seed: int = 0) -> bool:
    """Whether the synthetic set is already in the cache (its summary is written last)."""
    return (demo_root(seed) / "synthetic.json").is_file()


def demo_dataset(seed: int = 0, progress: Callable[[int, int], None] | None = None) -> AudioDataset:
    """The synthetic Speech Commands set, generated into the cache on first use."""
    from filelock import FileLock

    from prunekit.data import synth

    root = demo_root(seed)
    # Two app sessions (or a CLI and the app) may ask at once: one generates, the other waits.
    with _cache_trouble(root), FileLock(str(root) + ".lock"):
        synth.remove_stale_partials(root.parent)  # left by a killed run, which the rerun replaces
        _remove_old_locks(root.parent)
        if not demo_generated(seed):
            synth.generate(root, synth.SynthConfig(seed=seed), progress=progress)
    return read_speech_commands(root, name=f"synthetic speech commands (seed {seed})")


@contextlib.contextmanager
def _cache_trouble(root: Path):
    """The operating system's refusal to lock or write a synthetic set in the cache (read-only
    or full disk, a broken link in place of the lock file) as a DatasetError that says where."""
    try:
        yield
    except OSError as exc:
        raise DatasetError(
            f"Could not prepare the synthetic set {root.name} in the cache folder {root.parent}: "
            f"{exc.strerror or exc}. Check that the folder is writable and not full, or set "
            "PRUNEKIT_CACHE to another folder."
        ) from exc


def _remove_old_locks(folder: Path) -> None:
    """Lock files of synthetic sets of other format versions: no code of this version takes
    them, so they only accumulate (a lock of this version may be held by another process and
    is left alone: removing a held lock file would let a third process lock a new one)."""
    for lock in folder.glob("synthetic-speech-commands-v*-seed*.lock"):
        if not lock.name.startswith(f"synthetic-speech-commands-v{DEMO_DATA_VERSION}-"):
            lock.unlink(missing_ok=True)


# Bump when the tagging generator changes (prunekit.data.tagging.FORMAT_VERSION follows it).
TAGGING_DATA_VERSION = 1


def tagging_root(seed: int = 0) -> Path:
    return cache_dir() / f"synthetic-tagging-v{TAGGING_DATA_VERSION}-seed{seed}"


def tagging_generated(seed: int = 0) -> bool:
    """Whether the synthetic tagging set is already in the cache (its summary is written last)."""
    return (tagging_root(seed) / "tagging.json").is_file()


def tagging_dataset(seed: int = 0, progress: Callable[[int, int], None] | None = None) -> AudioDataset:
    """The synthetic tagging set (multi-label), generated into the cache on first use."""
    from filelock import FileLock

    from prunekit.data import manifest, synth, tagging

    root = tagging_root(seed)
    with _cache_trouble(root), FileLock(str(root) + ".lock"):
        synth.remove_stale_partials(root.parent)
        if not tagging_generated(seed):
            tagging.generate(root, tagging.TaggingConfig(seed=seed), progress=progress)
    return manifest.read_manifest(
        root / tagging.MANIFEST,
        file_column="file",
        label_columns="labels",
        label_separator=",",
        split_column="split",
        name=f"synthetic tagging (seed {seed})",
    )


DATA_KINDS = ("demo", "speech-commands", "folders")  # the layouts a dataset spec can name


def open_dataset(spec: str | Path, progress: Callable[[int, int], None] | None = None) -> AudioDataset:
    """The one reader of dataset specs (CLI, app and sweeps all pass theirs here):

    * ``"demo"``: the synthetic set (generated into the cache on first use);
    * ``"demo-tagging"``: the synthetic tagging set (multi-label; generated the same way);
    * ``"speech-commands:<folder>"`` or ``"folders:<folder>"``: that layout, no guessing;
    * ``<folder>``: Speech Commands when it has both split lists, folder-per-class otherwise.
      A folder with only one of the two lists is refused: reading it as folder-per-class
      would silently lose its speaker split;
    * ``<file>.csv``: a manifest, its preset detected from the header (``manifest.read_any``);
    * ``<preset>:<file>.csv`` (``esc50``, ``urbansound8k``, ``fsd50k``, ``audioset``): that preset.
    """
    from prunekit.data import manifest

    text = str(spec).strip()
    if text == "demo":
        return demo_dataset(progress=progress)
    if text == "demo-tagging":
        return tagging_dataset(progress=progress)
    kind, sep, folder = text.partition(":")
    if sep and kind in DATA_KINDS[1:]:
        root = Path(folder).expanduser()
        return read_speech_commands(root) if kind == "speech-commands" else read_class_folders(root)
    if sep and not Path(text).expanduser().exists() and manifest.looks_like_kind(kind):
        return manifest.read_preset(kind, Path(folder).expanduser())  # an unknown preset is refused there
    if not text:
        raise DatasetError("No dataset given: use 'demo' or a dataset folder.")
    root = Path(text).expanduser()
    if root.suffix.lower() == ".csv":
        return manifest.read_any(root)
    lists = [name for name in _SC_LISTS.values() if (root / name).is_file()]
    if len(lists) == 1:
        missing = next(name for name in _SC_LISTS.values() if name not in lists)
        raise DatasetError(
            f"{root} has {lists[0]} but no {missing}: a Speech Commands folder needs both split lists "
            f"(use 'folders:{root}' to read it as one folder per class with a hash split instead)."
        )
    return read_speech_commands(root) if lists else read_class_folders(root)


def _model_index(clips: Sequence[Clip], model_labels: Sequence[str]) -> dict[str, int]:
    """Each model class's index; every label of ``clips`` must be one the model knows."""
    index = {name: i for i, name in enumerate(model_labels)}
    unknown = sorted({label for c in clips for label in c.labels} - index.keys())
    if unknown:
        raise DatasetError(
            f"The model has no class for the dataset label(s) {unknown[:40]}; "
            f"its classes are {list(model_labels)[:40]}."
        )
    return index


def label_indices(clips: Sequence[Clip], model_labels: Sequence[str]) -> np.ndarray:
    """The model's class index for each clip's label (N,); every label must be one the model
    knows. Multi-label clips are refused: one index per clip would drop their other labels."""
    several = [c for c in clips if len(c.labels) != 1]
    if several:
        raise DatasetError(
            f"{len(several)} of {len(clips)} clips have several labels (e.g. {several[0].path.name}: "
            f"{list(several[0].labels)}): class indices hold one label per clip; use label_targets "
            f"for multi-label data."
        )
    index = _model_index(clips, model_labels)
    return np.array([index[c.label] for c in clips], dtype=np.int64)


def label_targets(clips: Sequence[Clip], model_labels: Sequence[str]) -> np.ndarray:
    """Multi-label targets (N, C) float32 in {0, 1}: row n has a 1 in the column of each of clip
    n's labels, columns in ``model_labels`` order (what BCE and mAP read)."""
    index = _model_index(clips, model_labels)
    targets = np.zeros((len(clips), len(model_labels)), dtype=np.float32)
    for n, clip in enumerate(clips):
        targets[n, [index[label] for label in clip.labels]] = 1.0
    return targets
