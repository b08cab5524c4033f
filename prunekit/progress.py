"""Progress reporting: the one callback shape every long-running function accepts."""

from __future__ import annotations

from collections.abc import Callable

from prunekit.devices import processes

__all__ = ["Progress", "console_bar", "halves"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called as work finishes; ``done`` grows to ``total``."""


def halves(progress: Progress | None) -> tuple[Progress | None, Progress | None]:
    """Two callbacks for a job in two parts of equal weight: the first part fills the first half
    of ``progress``, the second part the rest (``(None, None)`` when ``progress`` is None)."""
    if progress is None:
        return None, None
    return (lambda d, n: progress(d // 2, n)), (lambda d, n: progress((n + d) // 2, n))


def console_bar(desc: str, unit: str = "clip"):
    """A tqdm bar for the command line and a ``progress(done, total)`` callback that drives it;
    close the bar when the work is done. In a multi-process launch only rank 0 draws (the others
    get a silent bar), so the terminal shows one bar, not one per process."""
    from tqdm.auto import tqdm

    if not processes().main:
        return tqdm(disable=True), lambda done, total: None
    bar = tqdm(desc=desc, unit=unit, total=0)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress
