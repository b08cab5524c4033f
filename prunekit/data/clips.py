"""What a labelled clip is (its file, its label(s) and its split) and what a dataset is (clips and
their labels): the base every dataset layout, the manifest reader and the synthetic generator share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from prunekit.errors import DatasetError

__all__ = ["AUDIO_SUFFIXES", "SPLITS", "AudioDataset", "Clip", "hash_split"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Clip:
    """One audio file. ``labels`` holds every label of the clip: ``(label,)`` for single-label
    data (filled in when omitted, so ``Clip(path, label, split)`` stays the single-label form).
    A multi-label clip (``Clip.tagged``) keeps its labels joined by " | " in ``label``, for
    display only: single-label code refuses such clips (``label_indices``) rather than read the
    joined string as a class."""

    path: Path
    label: str
    split: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.labels:
            object.__setattr__(self, "labels", (self.label,))

    @classmethod
    def tagged(cls, path: Path, labels: Sequence[str], split: str) -> Clip:
        """A clip with any number (>= 1) of labels, as multi-label datasets hold them."""
        return cls(path, " | ".join(labels), split, tuple(labels))


@dataclass(frozen=True)
class AudioDataset:
    """A set of labelled clips. ``labels`` are sorted; ``layout`` says how it was read.

    ``multilabel`` is a property of the source, not of the clips that happen to be in it: a
    tagging manifest stays multi-label (sigmoid outputs, mAP) even where every clip of a split
    has one tag. A single-label dataset must have exactly one label per clip.
    """

    name: str
    root: Path
    layout: str
    labels: tuple[str, ...]
    clips: tuple[Clip, ...]
    multilabel: bool = False

    def __post_init__(self) -> None:
        if not self.multilabel:
            several = [c for c in self.clips if len(c.labels) != 1]
            if several:
                raise DatasetError(
                    f"{len(several)} clips of the single-label dataset {self.name} have {len(several[0].labels)} "
                    f"labels, e.g. {several[0].path.name}: {list(several[0].labels)}; read it as multi-label"
                )

    def split(self, name: str) -> list[Clip]:
        """The clips of one split (``train``, ``validation`` or ``test``); never empty."""
        if name not in SPLITS:
            raise DatasetError(f"Unknown split '{name}'; choose one of {', '.join(SPLITS)}.")
        clips = [c for c in self.clips if c.split == name]
        if not clips:
            raise DatasetError(f"The {name} split of {self.root} is empty.")
        return clips

    def sample(self, split: str, clips: int, *, seed: int = 0) -> AudioDataset:
        """This dataset with ``split`` cut to a seeded sample of ``clips`` of its clips (in their
        order; the other splits untouched), named so; itself when the split holds no more. The
        app evaluates such a sample when a whole split would take too long (AST-base on a CPU)."""
        if clips < 1:
            raise DatasetError(f"A sample needs at least one clip, got {clips}")
        positions = [k for k, c in enumerate(self.clips) if c.split == split]
        if not positions:
            self.split(split)  # the message for an unknown or empty split
        if clips >= len(positions):
            return self
        chosen = np.random.default_rng(seed).choice(len(positions), clips, replace=False)
        keep = {positions[k] for k in chosen.tolist()}
        return replace(
            self,
            name=f"{self.name} ({clips} of its {len(positions)} {split} clips)",
            clips=tuple(c for k, c in enumerate(self.clips) if c.split != split or k in keep),
        )

    def counts(self) -> pd.DataFrame:
        """Clips per label and split: index label, columns the splits (a multi-label clip counts
        once under each of its labels)."""
        frame = pd.DataFrame(
            [(label, c.split) for c in self.clips for label in c.labels], columns=["label", "split"]
        )
        table = frame.value_counts().unstack(fill_value=0)
        return table.reindex(columns=list(SPLITS), fill_value=0)


def hash_split(key: str, validation: float, test: float) -> str:
    """The split of the file ``key`` (its path relative to the dataset root) by a hash of it: the
    same file always lands in the same split, whatever else the dataset holds."""
    digest = hashlib.sha1(key.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test else "validation" if u < test + validation else "train"
