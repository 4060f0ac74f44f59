"""Who hears of run changes: one extension point instead of callers wiring each listener.

The producer, the runner and the reaper call :meth:`RunHooks.changed` after every record change
they applied; observers (webhook events today) decide what the change means to them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

logger = logging.getLogger(__name__)


class RunObserver(Protocol):
    def run_changed(self, run_id: str, status_changed: bool) -> None:
        """React to a change of ``run_id``'s record (``status_changed``: its status moved)."""


class RunHooks:
    """Fans one run change out to every observer, in order."""

    def __init__(self, observers: Iterable[RunObserver] = ()) -> None:
        self.observers = list(observers)

    def changed(self, run_id: str, status_changed: bool) -> None:
        for observer in self.observers:
            observer.run_changed(run_id, status_changed)
