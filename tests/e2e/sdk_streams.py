"""What the tests of ComfyDeploy's SDK share."""

from __future__ import annotations

from typing import Any


def stream_updates(answer: Any) -> list[Any]:
    """The ``event_update`` events of an SDK stream answer (``run.*.stream``), in order."""
    with answer.run_stream as events:
        received = list(events)
    return [event.data for event in received if event.EVENT.value == "event_update"]
