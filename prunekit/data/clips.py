"""What a labelled clip is: its file, its label and its split. The base every dataset layout and
the synthetic generator share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AUDIO_SUFFIXES", "SPLITS", "Clip"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    split: str
