"""This process's memory, for the benchmarks that report it (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def memory_mb() -> dict[str, int]:
    """Resident memory now and its peak since start or the last ``reset_peak`` (VmRSS, VmHWM), MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: round(int(fields[k].split()[0]) / 1024) for k in ("VmRSS", "VmHWM")}


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again from now
