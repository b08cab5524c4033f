"""Exceptions prunekit raises on bad input. Each message names the offending thing and the problem.

The contract: every error prunekit raises on purpose derives from ``PrunekitError``. The app
and the CLI catch ``PrunekitError`` only and show its message (the CLI exits with code 2);
anything else is a bug and keeps its traceback. The subclasses also derive from the built-in
exception a Python user would expect (``ValueError``, ``OSError``, ...), so ``except
ValueError`` in user code keeps working.

A process that shows messages to people who must not see its file system (the served app) sets
a message filter (``set_message_filter``): ``str()`` of every PrunekitError passes through it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "AudioError",
    "ConfigurationError",
    "DatasetError",
    "DeviceError",
    "ModelError",
    "ModelLoadError",
    "OutputExistsError",
    "PlanError",
    "PrunekitError",
    "ScoresError",
    "SweepError",
    "check_settings",
    "set_message_filter",
]

_filter: Callable[[str], str] | None = None


def set_message_filter(message_filter: Callable[[str], str] | None) -> None:
    """Pass every PrunekitError's message through ``message_filter`` (None: shown as raised)."""
    global _filter
    _filter = message_filter


class PrunekitError(Exception):
    """Base class: every error prunekit raises on purpose derives from it."""

    def __str__(self) -> str:
        text = super().__str__()
        return text if _filter is None else _filter(text)


class ConfigurationError(PrunekitError, ValueError):
    """An option or setting is invalid: an unknown name, a count below 1, a value out of range."""


class DeviceError(ConfigurationError):
    """A device or precision this machine cannot give: CUDA asked for where there is no GPU, an
    unknown device name, a model on the ``meta`` device (never a silent fallback to the CPU)."""


class AudioError(PrunekitError, ValueError):
    """An audio file or waveform cannot be used (not audio, empty, NaN/inf, unreadable)."""


class DatasetError(PrunekitError, ValueError):
    """A dataset folder does not have a layout prunekit can read, or a split is empty."""


class ModelLoadError(PrunekitError, OSError):
    """A model source cannot be loaded (unknown hub id, offline, broken folder)."""


class ModelError(PrunekitError, ValueError):
    """A model is not one prunekit can work on, or its modules and its stored structure disagree."""


class ScoresError(PrunekitError, ValueError):
    """A score table is malformed or belongs to another model shape."""


class PlanError(PrunekitError, ValueError):
    """A pruning plan cannot be made (an unreachable sparsity, conflicting forced heads) or does
    not fit the model it is applied to."""


class OutputExistsError(PrunekitError, FileExistsError):
    """An output folder exists and holds something prunekit was not told to replace."""


class SweepError(PrunekitError, RuntimeError):
    """A sweep cannot start or continue (already running, another sweep's folder, failed at start)."""


def check_settings(checks, what: str, rules: str) -> None:
    """Raise a ConfigurationError naming every field whose check failed: ``checks`` holds
    (name, value, ok) triples; the message reads "Invalid <what> {name: value}: <rules>"."""
    bad = {name: value for name, value, ok in checks if not ok}
    if bad:
        raise ConfigurationError(f"Invalid {what} {bad}: {rules}")
