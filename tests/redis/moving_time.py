"""What the Redis tier's maintenance tests share: a clock they move forward instead of
sleeping, and a run observer that records what it was told."""

from __future__ import annotations

import time

from comfyq.runs.hooks import RunHooks


class MovableClock:
    """The real time, plus however far the test moved it forward."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += seconds


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def run_changed(self, run_id: str, status_changed: bool) -> None:
        self.calls.append((run_id, status_changed))


def announced() -> tuple[list, RunHooks]:
    observer = RecordingObserver()
    return observer.calls, RunHooks([observer])
