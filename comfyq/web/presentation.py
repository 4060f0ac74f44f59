"""How runs read on the run pages: times, durations and progress as text, per list row and per run.

Everything here is a pure function of a run and the current time, so the server-rendered
fragments and the live JSON that keeps them current say exactly the same thing. Values are plain
text; the templates escape them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from comfyq.models import RunStatus, WorkflowRunModel
from comfyq.runs.listing import RunSummary

#: Shown where a value does not exist (yet).
NOTHING = "—"
#: Characters of a run id the list shows (ids are UUIDs; the full id is on the run's page).
SHORT_ID_LENGTH = 8


def format_seconds(seconds: float | None) -> str:
    """A duration for people: ``0.4 s``, ``42 s``, ``3 min 12 s``, ``1 h 05 min``."""
    if seconds is None:
        return NOTHING
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_moment(moment: float | None, zone: bool = True) -> str:
    """A Unix time as ``2025-01-31 14:05:09 UTC`` (without `` UTC`` unless ``zone``)."""
    if moment is None:
        return NOTHING
    text = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if zone else text


def iso_moment(moment: float | None) -> str:
    """A Unix time in ISO 8601 for ``<time datetime>``; empty when there is none."""
    return "" if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def percent(progress: float) -> int:
    """Progress 0..1 as a whole percentage, never above 100."""
    return max(0, min(100, int(progress * 100)))


def _ongoing(seconds: float) -> str:
    return f"{format_seconds(seconds)} so far"


def queue_wait_text(queued_at: float | None, started_at: float | None, final: bool,
                    moment: float) -> str:
    """Time from queueing to start, or the wait so far of a run nobody picked up yet."""
    if queued_at is None:
        return NOTHING
    if started_at is not None:
        return format_seconds(started_at - queued_at)
    return NOTHING if final else _ongoing(moment - queued_at)


def run_time_text(started_at: float | None, ended_at: float | None, final: bool,
                  moment: float) -> str:
    """Time from start to end, or the time so far of a run still executing."""
    if started_at is None:
        return NOTHING
    if ended_at is not None:
        return format_seconds(ended_at - started_at)
    return NOTHING if final else _ongoing(moment - started_at)


@dataclass(frozen=True)
class LiveValues:
    """What changes while a run goes on: the ``data-live`` elements of the pages, by name."""

    status: str
    worker: str
    queue_wait: str
    run_time: str
    percent: int
    percent_text: str
    live_status: str
    final: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _live(status: str, worker: str | None, progress: float, live_status: str | None,
          times: tuple[float | None, float | None, float | None], moment: float) -> LiveValues:
    queued_at, started_at, ended_at = times
    final = RunStatus(status).is_final
    shown = percent(progress)
    return LiveValues(status=status, worker=worker or NOTHING,
                      queue_wait=queue_wait_text(queued_at, started_at, final, moment),
                      run_time=run_time_text(started_at, ended_at, final, moment),
                      percent=shown, percent_text=f"{shown}%", live_status=live_status or "",
                      final=final)


@dataclass(frozen=True)
class RunRow:
    """One line of the recent runs table."""

    id: str
    short_id: str
    workflow_id: str
    gpu: str
    created: str
    created_iso: str
    live: LiveValues

    def live_dict(self) -> dict[str, Any]:
        """The row's live values with its id, as the list's live JSON carries them."""
        return {"id": self.id, **self.live.as_dict()}


def run_row(summary: RunSummary, moment: float) -> RunRow:
    """A listed run as its table row reads at ``moment`` (Unix seconds)."""
    live = _live(summary.status, summary.worker, summary.progress, summary.live_status,
                 (summary.queued_at, summary.started_at, summary.ended_at), moment)
    return RunRow(id=summary.id, short_id=summary.id[:SHORT_ID_LENGTH],
                  workflow_id=summary.workflow_id or "", gpu=summary.gpu or NOTHING,
                  created=format_moment(summary.created_at, zone=False),
                  created_iso=iso_moment(summary.created_at), live=live)


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def run_live_values(run: WorkflowRunModel, moment: float) -> LiveValues:
    """A whole run's live values at ``moment``."""
    times = (_timestamp(run.queued_at), _timestamp(run.started_at), _timestamp(run.ended_at))
    return _live(run.status.value, run.worker, run.progress, run.live_status, times, moment)


def run_revision(run: WorkflowRunModel) -> str:
    """Changes whenever the parts of a run's page that are not live values change.

    The page compares it with the one its fragment was rendered with, and renders the run again
    only when it differs: new outputs, an error, a webhook attempt, a new status or worker.
    """
    parts = [run.status.value, run.worker, run.attempts, run.error, run.webhook_status,
             len(run.webhook_attempts), [output.id for output in run.outputs]]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def value_text(value: Any) -> str:
    """An input or output value as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2 if isinstance(value, (dict, list))
                      else None)


@dataclass(frozen=True)
class ErrorView:
    """A failed run's error as its page shows it: the failing node first."""

    node_id: str
    node_type: str
    exception_type: str
    message: str
    traceback: str


def error_view(error: dict[str, Any] | None) -> ErrorView | None:
    """The error record of a run (executor, ComfyUI or maintenance), or None without one."""
    if not error:
        return None
    traceback = error.get("traceback") or ""
    if isinstance(traceback, list):
        traceback = "".join(str(line) for line in traceback)
    return ErrorView(node_id=str(error.get("node_id") or ""),
                     node_type=str(error.get("node_type") or ""),
                     exception_type=str(error.get("exception_type") or "Error"),
                     message=str(error.get("exception_message") or ""),
                     traceback=str(traceback).rstrip())


@dataclass(frozen=True)
class DeliveryRow:
    """One attempt to deliver one webhook event of a run."""

    seq: str
    attempt: str
    at: str
    at_iso: str
    status_code: str
    latency: str
    error: str


def delivery_rows(attempts: list[dict[str, Any]]) -> list[DeliveryRow]:
    """A run's ``webhook_attempts`` (oldest first) as table rows."""
    rows = []
    for attempt in attempts:
        latency = attempt.get("latency_ms")
        rows.append(DeliveryRow(
            seq=str(attempt.get("seq", NOTHING)), attempt=str(attempt.get("attempt", NOTHING)),
            at=format_moment(attempt.get("at")), at_iso=iso_moment(attempt.get("at")),
            status_code=str(attempt.get("status_code") or NOTHING),
            latency=NOTHING if latency is None else f"{latency:g} ms",
            error=str(attempt.get("error") or "")))
    return rows
