"""Live processes of a worker fleet, read from ``/proc``, for fault tests that kill them.

Victims are chosen among processes alive now (a worker's presence key outlives the worker), and
each is told apart from a later process that reuses its pid by its start time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, ... (None when gone)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class LiveProcess:
    """One process: its pid and its start time in clock ticks since boot."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> LiveProcess | None:
        fields = _stat_fields(pid)
        return None if fields is None else cls(pid, int(fields[19]))

    def alive(self) -> bool:
        """Running (not a zombie awaiting its parent), and not a newer process with its pid."""
        fields = _stat_fields(self.pid)
        return fields is not None and int(fields[19]) == self.start_ticks and (
            fields[0] not in ("Z", "X"))

    def group(self) -> int | None:
        fields = _stat_fields(self.pid)
        return None if fields is None else int(fields[2])

    def children(self) -> list[LiveProcess]:
        found = []
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None and int(fields[1]) == self.pid and fields[0] not in "ZX":
                    found.append(LiveProcess(int(entry.name), int(fields[19])))
        return found

    def environ(self) -> dict[str, str]:
        try:
            raw = (PROC / str(self.pid) / "environ").read_bytes()
        except OSError:
            return {}
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {key.decode(errors="replace"): value.decode(errors="replace")
                for key, value in pairs}

    def argv(self) -> list[str]:
        try:
            raw = (PROC / str(self.pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def gpu_workers(supervisor_pid: int, gpu_type: str) -> list[LiveProcess]:
    """The live Celery workers of ``gpu_type`` that a ``comfyq worker`` supervisor runs now."""
    supervisor = LiveProcess.of(supervisor_pid)
    if supervisor is None:
        return []
    return [child for child in supervisor.children()
            if child.environ().get("COMFYQ_WORKER_GPU_TYPE") == gpu_type]


def pool_processes(worker: LiveProcess) -> list[LiveProcess]:
    """A prefork Celery worker's live pool processes: the children forked with its command line
    (not helpers such as multiprocessing's resource tracker)."""
    argv = worker.argv()
    return [child for child in worker.children() if child.argv() == argv]


def worker_name(worker: LiveProcess) -> str | None:
    """The supervisor's name of a Celery worker (``gpu0`` of ``-n gpu0@host``)."""
    argv = worker.argv()
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-n":
            return value.split("@", 1)[0]
    return None
