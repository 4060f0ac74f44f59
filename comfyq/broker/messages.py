"""Broker messages as kombu writes them, read back for the run id they carry."""

from __future__ import annotations

import json
from collections.abc import Iterable


def message_run_id(raw: str | bytes) -> str | None:
    """The run id (Celery task id, which comfyq sets to the run id) of a raw kombu message, as a
    queue holds it or as the Redis transport's unacked hash holds it (``[message, exchange,
    routing key]``); None when it is not one of comfyq's."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):
            message = message[0]
        run_id = message["headers"]["id"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    return run_id if isinstance(run_id, str) else None


def message_run_ids(raw_messages: Iterable[str | bytes]) -> list[str]:
    """The run ids of ``raw_messages``, in order, skipping messages that are not comfyq's."""
    return [run_id for run_id in map(message_run_id, raw_messages) if run_id]
