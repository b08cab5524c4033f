"""What a labelled clip is: its file, its label(s) and its split. The base every dataset layout and
the synthetic generator share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AUDIO_SUFFIXES", "SPLITS", "Clip"]

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
