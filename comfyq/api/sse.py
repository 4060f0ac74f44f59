"""The server-sent events of ``POST /run/workflow/stream``, in ComfyDeploy's shapes.

Each event is ``event: event_update`` with ``data: {"event": <name>, "data": ...}`` or
``event: log_update`` with ``data: {"logs": <text>, "timestamp": <ISO time>}`` (see
:class:`~comfyq.api.schemas.EventUpdate` for the names). The stream opens with ``run_created``,
reports every status and progress change as the run's pub/sub channel announces it, and ends
with the final status (with outputs and error), or with ``stream_timeout`` if the run outlives
the server's limit. A comment line keeps an idle connection open through proxies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from comfyq.api.schemas import RunState
from comfyq.runs.follow import RunFollower, RunSnapshot

#: Media type of the stream.
EVENT_STREAM = "text/event-stream"
#: Seconds without a change after which a keep-alive comment is sent.
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"


def server_event(event: str, data_json: str) -> bytes:
    """One event; ``data_json`` is JSON without line breaks, so it fits one ``data:`` line."""
    return f"event: {event}\ndata: {data_json}\n\n".encode()


def event_update(name: str, data: Any) -> bytes:
    payload = data.model_dump_json() if isinstance(data, RunState) else json.dumps(data)
    return server_event("event_update", f'{{"event":{json.dumps(name)},"data":{payload}}}')


def log_update(text: str) -> bytes:
    moment = datetime.now(UTC).isoformat()
    return server_event("log_update", json.dumps({"logs": text, "timestamp": moment}))


def _state(snapshot: RunSnapshot) -> RunState:
    return RunState(run_id=snapshot.run_id, status=snapshot.status,
                    live_status=snapshot.live_status, progress=snapshot.progress)


async def run_events(follower: RunFollower, run_id: str, timeout: float,
                     keepalive_seconds: float = KEEPALIVE_SECONDS) -> AsyncIterator[bytes]:
    """The events of one run, from ``run_created`` to its final status (or the time limit)."""
    yield event_update("run_created", {"run_id": run_id})
    previous: RunSnapshot | None = None
    async for snapshot in follower.watch(run_id, timeout, keepalive_seconds):
        if snapshot is None:
            yield KEEPALIVE
            continue
        if snapshot.live_status and (previous is None
                                     or snapshot.live_status != previous.live_status):
            yield log_update(snapshot.live_status)
        yield await _status_event(follower, snapshot, previous)
        previous = snapshot
    if previous is not None and not previous.status.is_final:
        yield event_update("stream_timeout", _state(previous))


async def _status_event(follower: RunFollower, snapshot: RunSnapshot,
                        previous: RunSnapshot | None) -> bytes:
    state = _state(snapshot)
    if snapshot.status.is_final:
        run = await follower.get(snapshot.run_id)
        state.outputs, state.error = run.outputs, run.error
    status_changed = previous is None or snapshot.status != previous.status
    return event_update("status" if status_changed else "progress", state)
