"""What a node sees of the run it executes in: its output folder, progress and cancellation.

Node classes follow ComfyUI's convention and take no extra arguments, so the executor publishes
the current run through a context variable, the way ComfyUI exposes ``folder_paths`` and
``comfy.utils.ProgressBar`` as module-level services.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


class RunCancelled(Exception):
    """Raised inside a run when it was cancelled; the executor turns it into ``cancelled``."""


def _no_progress(value: float, maximum: float, node_id: str | None) -> None:
    return None


def _never_cancelled() -> None:
    return None


def _nothing_cached(node_ids: list[str]) -> None:
    return None


@dataclass
class RunContext:
    """The run a node is executing in.

    :param run_id: the run's id.
    :param output_dir: this run's own folder for ``type: output`` files; no other run writes here.
    :param temp_dir: this run's own folder for ``type: temp`` files (previews).
    :param report_progress: called with ``(value, max, node_id)`` as a node advances.
    :param check_cancelled: raises :class:`RunCancelled` once the run has been cancelled.
    :param device: the device this worker is pinned to (e.g. ``"cuda:0"`` or ``"cpu"``).
    """

    run_id: str
    output_dir: Path
    temp_dir: Path
    report_progress: Callable[[float, float, str | None], None] = _no_progress
    check_cancelled: Callable[[], None] = _never_cancelled
    device: str = "cpu"
    current_node: str | None = field(default=None)
    #: What the engine did, as ComfyUI's ``executing`` and ``execution_cached`` messages tell
    #: it: the nodes executed, in order, and those answered from the cache.
    executed_nodes: list[str] = field(default_factory=list)
    cached_nodes: list[str] = field(default_factory=list)
    #: Nodes an ``ExecutionBlocker`` with a message stopped: ``{"node_id", "node_type",
    #: "exception_message"}`` each (the run goes on, as in ComfyUI).
    blocked_nodes: list[dict] = field(default_factory=list)
    #: Told the cached nodes once they are known, before the first node executes.
    report_cached: Callable[[list[str]], None] = _nothing_cached

    @property
    def subfolder(self) -> str:
        """The ``subfolder`` of this run's files in ComfyUI's output records."""
        return self.run_id


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "comfyq_run_context", default=None
)


def current_context() -> RunContext:
    """The run being executed; raises RuntimeError outside a run."""
    context = _current.get()
    if context is None:
        raise RuntimeError("no comfyq run is executing in this context")
    return context


@contextlib.contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` the current run for the duration of the block."""
    context.output_dir.mkdir(parents=True, exist_ok=True)
    context.temp_dir.mkdir(parents=True, exist_ok=True)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


class ProgressBar:
    """ComfyUI's ``comfy.utils.ProgressBar`` for comfyq nodes: report steps within a node.

    Each update is also a cancellation point, as in ComfyUI.
    """

    def __init__(self, total: float) -> None:
        self.total = total
        self.current = 0.0

    def update_absolute(self, value: float, total: float | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        context = current_context()
        context.check_cancelled()
        context.report_progress(self.current, self.total, context.current_node)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)
