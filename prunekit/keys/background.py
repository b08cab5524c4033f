"""Learning key priors in the background: a run folder one process writes and the app polls.

``start_learning(out, args)`` runs ``python -m prunekit keys-learn --out OUT *args`` in its own
process (it outlives the page that started it), which calls ``run_learning``::

    OUT/settings.json   model, data and the KeyLearnConfig (a rerun must match them)
    OUT/status.json     state (running, finished, stopped, failed), optimiser steps done of
                        total, epochs finished, pid, times, error; rewritten at most once a second
    OUT/model/          the model with the best priors so far (``save_pruned``; loads with
                        ``load_model``), written when learning ends, is stopped, or fails after
                        a first checkpoint
    OUT/history.csv     one row per validation (``learn_priors``' history), appended per run

``stop_learning(out)`` interrupts it: learning ends at the next optimiser step with the best
priors so far, which are saved. Run it again with the same settings to resume: it starts from
the saved priors and runs the epochs not yet finished (the learning-rate schedule restarts; our
choice, since the optimiser state is not saved).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from prunekit.data.datasets import open_dataset
from prunekit.errors import ConfigurationError, PrunekitError, SweepError
from prunekit.heads.surgery import save_pruned
from prunekit.keys.learn import KeyLearnConfig, learn_priors
from prunekit.models.loading import load_model
from prunekit.progress import Progress
from prunekit.store import atomic_write_text, process_alive, start_command

__all__ = [
    "HISTORY_FILE",
    "MODEL_DIR",
    "SETTINGS_FILE",
    "STATUS_FILE",
    "find_runs",
    "learning_status",
    "run_learning",
    "start_learning",
    "stop_learning",
]

SETTINGS_FILE, STATUS_FILE, HISTORY_FILE, MODEL_DIR = "settings.json", "status.json", "history.csv", "model"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Status:
    def __init__(self, out: Path, epochs_done: int, epochs: int) -> None:
        self.path = out / STATUS_FILE
        self.data = {
            "state": "running",
            "pid": os.getpid(),
            "started": _now(),
            "updated": _now(),
            "stage": "loading the model and the dataset",
            "epochs": epochs,
            "epochs_done": epochs_done,
            "steps_done": 0,
            "steps_total": 0,
            "error": None,
        }
        self._written = 0.0
        self.update()

    def update(self, *, force: bool = True, **fields) -> None:
        self.data.update(fields, updated=_now())
        if force or time.monotonic() - self._written >= 1.0:
            atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")
            self._written = time.monotonic()


def _previous(out: Path) -> dict | None:
    path = out / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_learning(
    out_dir: str | os.PathLike,
    model: str,
    data: str,
    config: KeyLearnConfig,
    *,
    device: str | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Learn key priors for ``model`` on ``data`` into ``out_dir`` (or continue a stopped run
    there); return this run's history. ``progress(done, total)`` counts optimiser steps (besides
    status.json). SIGINT (``stop_learning``, Ctrl-C) ends it early with the
    best priors so far saved and the state "stopped"."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": model, "data": data, "config": config.to_dict()}
    path = out / SETTINGS_FILE
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ConfigurationError(
            f"{out} holds a key-prior run with other settings ({json.loads(path.read_text())}); "
            "use another name"
        )
    previous = _previous(out) or {}
    if (
        previous.get("state") == "running"
        and process_alive(previous.get("pid", -1))
        and previous["pid"] != os.getpid()
    ):
        raise SweepError(f"A key-prior run is already going in {out}")
    epochs_done = int(previous.get("epochs_done", 0))
    if (out / MODEL_DIR).is_dir() and epochs_done >= config.epochs:
        return pd.read_csv(out / HISTORY_FILE) if (out / HISTORY_FILE).is_file() else pd.DataFrame()
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")
    status = _Status(out, epochs_done, config.epochs)
    asked_to_stop = threading.Event()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: asked_to_stop.set())
    try:
        resume = (out / MODEL_DIR).is_dir()
        loaded = load_model(out / MODEL_DIR if resume else model)  # resumes from the saved priors
        dataset = open_dataset(data)
        remaining = KeyLearnConfig(**{**asdict(config), "epochs": config.epochs - epochs_done})
        status.update(stage="featurising the clips")

        def report(done: int, total: int) -> None:
            status.update(stage="learning", steps_done=done, steps_total=total, force=False)
            if progress is not None:
                progress(done, total)

        learned, history = learn_priors(
            loaded.model,
            loaded.feature_extractor,
            loaded.labels,
            dataset,
            config=remaining,
            progress=report,
            stop=asked_to_stop.is_set,
            device=device,
        )
        status.update(stage="saving")
        save_pruned(
            learned,
            out / MODEL_DIR,
            feature_extractor=loaded.feature_extractor,
            labels=loaded.labels,
            overwrite=True,
        )
        history = history.assign(run=int(previous.get("runs", 0)))
        old = pd.read_csv(out / HISTORY_FILE) if (out / HISTORY_FILE).is_file() else None
        atomic_write_text(out / HISTORY_FILE, pd.concat([old, history]).to_csv(index=False))
        total, done = status.data["steps_total"], status.data["steps_done"]
        per_epoch = total / remaining.epochs if total else 1
        finished = remaining.epochs if not history.attrs.get("stopped") else math.floor(done / per_epoch)
        stopped = bool(history.attrs.get("stopped"))
        status.update(
            state="stopped" if stopped else "finished",
            stage="stopped by you; start it again to continue" if stopped else "finished",
            epochs_done=epochs_done + finished,
            runs=int(previous.get("runs", 0)) + 1,
        )
        return history
    except BaseException as exc:
        message = str(exc) if isinstance(exc, PrunekitError) else f"{type(exc).__name__}: {exc}"
        status.update(state="failed", stage="failed", error=message)
        raise
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def learning_status(out_dir: str | os.PathLike) -> dict:
    """The run's status.json (a "running" run whose process is gone reads "stopped"), plus
    ``fraction`` of this run's optimiser steps done; ``{"state": "absent"}`` when none."""
    status = _previous(Path(out_dir))
    if status is None:
        return {"state": "absent", "fraction": 0.0}
    if status["state"] == "running" and not process_alive(status["pid"]):
        status["state"] = "stopped"
    total = status.get("steps_total") or 0
    status["fraction"] = status["steps_done"] / total if total else 0.0
    return status


def start_learning(out_dir: str | os.PathLike, args: Sequence[str] = (), *, timeout: float = 60) -> int:
    """Start ``python -m prunekit keys-learn --out out_dir *args`` in its own process (output in
    ``<out_dir>.log``); return its pid once it has begun (its status says running) or ended.
    Raises SweepError with its own message when it fails at once (bad settings, a model or
    dataset it cannot read)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if learning_status(out)["state"] == "running":
        raise SweepError(f"A key-prior run is already going in {out}")
    log_path = Path(f"{out}.log")
    started = time.time()
    process = start_command(["keys-learn", "--out", str(out), *args], log_path)
    status_file = out / STATUS_FILE
    while time.time() - started <= timeout:
        fresh = status_file.is_file() and status_file.stat().st_mtime >= started - 1
        status = learning_status(out) if fresh else None
        if status is not None and status["state"] == "failed":
            raise SweepError(f"The key-prior run failed at start: {status['error']}")
        if status is not None and status["stage"] not in ("loading the model and the dataset",):
            return process.pid
        if process.poll() is not None:
            if status is not None and status["state"] == "finished":
                return process.pid
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SweepError(f"The key-prior run stopped at once: {' '.join(tail)}")
        time.sleep(0.2)
    return process.pid


def stop_learning(out_dir: str | os.PathLike) -> bool:
    """Ask a running run to stop (it saves its best priors so far); False when none was running."""
    status = learning_status(out_dir)
    if status["state"] != "running":
        return False
    os.kill(status["pid"], signal.SIGINT)
    return True


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders (with a settings.json) directly under ``root``, newest first."""
    root = Path(root)
    found = [p for p in root.iterdir() if (p / SETTINGS_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / SETTINGS_FILE).stat().st_mtime, reverse=True)
