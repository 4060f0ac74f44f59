"""How a run record is stored: each field JSON text except ``status``; and how it is shown
(ComfyDeploy's ``WorkflowRunModel``). Every reader of records decodes through here."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from comfyq.errors import RunNotFound
from comfyq.models import RunStatus, WorkflowRunModel
from comfyq.storage import readable_outputs

#: One compact encoder for every field: ``json.dumps`` with arguments builds a new one per call.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_fields(fields: Mapping[str, Any]) -> list[str]:
    """Flatten ``fields`` into HSET's field/value list, JSON-encoding each value."""
    flat: list[str] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(encode_value(value))
    return flat


def encode_value(value: Any) -> str:
    """One field's JSON text; the plain values most fields hold skip the encoder's set-up,
    which costs more than encoding them (every submit writes about twenty fields)."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return _encode_json(value)


def decode_value(value: str | None) -> Any:
    """One stored field's value (None when the field is absent)."""
    return None if value is None else json.loads(value)


def decode_record(raw: Mapping[str, str]) -> dict[str, Any]:
    """A record hash as read from Redis, with its JSON values decoded."""
    record: dict[str, Any] = {}
    for name, value in raw.items():
        record[name] = value if name == "status" else json.loads(value)
    return record


def decode_fields(run_id: str, names: Sequence[str], values: Sequence[str | None]
                  ) -> dict[str, Any]:
    """HMGET's answer for ``["status", *names]`` as a record; RunNotFound when there is none."""
    if values[0] is None:
        raise RunNotFound(run_id)
    record: dict[str, Any] = {"status": values[0]}
    for name, value in zip(names, values[1:]):
        record[name] = decode_value(value)
    return record


def _datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _seconds_between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 6)


def run_model(record: dict[str, Any]) -> WorkflowRunModel:
    """A stored record as ComfyDeploy's ``WorkflowRunModel``, its outputs' URLs readable from
    any host (``s3://`` addresses signed now)."""
    times = {name: record.get(name) for name in
             ("created_at", "updated_at", "queued_at", "started_at", "ended_at")}
    return WorkflowRunModel(
        **{name: record.get(name) for name in (
            "id", "workflow_id", "workflow_inputs", "workflow_api", "machine_id", "origin",
            "gpu", "live_status", "webhook", "webhook_status", "webhook_intermediate_status",
            "worker", "error", "workflow_version_id", "deployment_id", "deployment_version",
            "executed_nodes", "cached_nodes", "blocked_nodes")},
        status=RunStatus(record["status"]),
        progress=record.get("progress") or 0.0,
        attempts=record.get("attempts") or 0,
        webhook_attempts=record.get("webhook_attempts") or [],
        outputs=readable_outputs(record.get("outputs") or []),
        **{name: _datetime(value) for name, value in times.items()},
        duration=_seconds_between(times["created_at"], times["ended_at"]),
        run_duration=_seconds_between(times["started_at"], times["ended_at"]),
        cold_start_duration=_seconds_between(times["queued_at"], times["started_at"]),
    )
