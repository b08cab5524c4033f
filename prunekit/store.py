"""The cache/ folder: where runtime artifacts live, content-addressed keys, atomic writes.

The folder is ``$PRUNEKIT_CACHE`` when set, else ``cache/`` at the top of the checkout.
Everything in it can be deleted; prunekit regenerates what it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "content_key",
    "process_alive",
    "start_command",
]

_DEFAULT = Path(__file__).resolve().parent.parent / "cache"


def cache_dir() -> Path:
    """The cache folder, created on first use."""
    path = Path(os.environ.get("PRUNEKIT_CACHE", _DEFAULT)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (bytes are hashed as they are)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts; a zombie, which still answers
    ``kill(pid, 0)`` on Linux, does not): who owns a partial folder, a session or a status file."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def start_command(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``python -m prunekit *args`` in its own session (it outlives the caller's script run
    and Streamlit session), its output appended to ``log_path``; a thread reaps it whenever it
    ends (finished, stopped or killed), or it would linger as a zombie under a long-lived caller
    such as the app's server."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prunekit", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    return process
