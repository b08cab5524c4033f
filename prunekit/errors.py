"""Exceptions prunekit raises on bad input. Each message names the offending thing and the problem."""

from __future__ import annotations


class PrunekitError(Exception):
    """Base class: every error prunekit raises on purpose derives from it."""


class AudioError(PrunekitError, ValueError):
    """An audio file or waveform cannot be used (not audio, empty, NaN/inf, unreadable)."""


class DatasetError(PrunekitError, ValueError):
    """A dataset folder does not have a layout prunekit can read, or a split is empty."""


class ModelLoadError(PrunekitError, OSError):
    """A model source cannot be loaded (unknown hub id, offline, broken folder)."""
