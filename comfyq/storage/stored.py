"""What a storage kind offers the worker that keeps a run's files, and the retention that
drops them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


def _nothing_to_check() -> None:
    return None


@dataclass(frozen=True)
class RunFiles:
    """The execution whose files are being kept.

    :param run_id: the run.
    :param execution: names this execution of the run (the random part of its lease token);
        each keeps its files apart, so a worker cut off mid-run that comes back late cannot
        overwrite what its successor kept.
    :param worker: the worker keeping them (recorded with each object).
    :param check: raises when the execution must stop (its lease was lost); called before each
        upload attempt.
    """

    run_id: str
    execution: str = "1"
    worker: str = ""
    check: Callable[[], None] = _nothing_to_check


class OutputStorage(Protocol):
    """Where a run's output files are kept."""

    #: Whether recorded URLs open without credentials (plain public URLs, not presigned).
    is_public: bool

    def keep(self, run: RunFiles, path: Path, name: str) -> str:
        """Keep the file at ``path`` and return the URL to record for it. ``name`` is the file's
        path as its record names it (``<subfolder>/<filename>``, the subfolder starting with the
        run id)."""
        ...

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        """Delete every file kept for these runs; how many were deleted."""
        ...

    def delete_uploads_before(self, cutoff: float) -> int:
        """Delete the uploaded input files kept since before ``cutoff`` (a Unix time); how
        many were deleted."""
        ...
