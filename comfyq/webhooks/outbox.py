"""The webhook outbox: every run change worth telling becomes an event kept in Redis until its
receiver has it, however long that takes.

- :func:`record_event` (the worker, on each run change) stores the event with the run's next
  `seq` and queues it behind the run's earlier events.
- :func:`enqueue_due` (a periodic task, every second) hands each event whose attempt is due to a
  delivery task, claiming it first so that several schedulers never send one attempt twice.
- :func:`deliver_event` (the delivery task) makes one signed attempt, records it, and either
  schedules the next attempt, dead-letters the event, or releases the run's next event.

Long waits live in Redis (a sorted set of due times), never in Celery countdowns, which the
Redis broker would redeliver after its visibility timeout. A claim and an attempt each have a
deadline: if the task message or the worker is lost, :func:`enqueue_due` hands the event out
again once that deadline passes, so an event is never lost (and receivers may see it twice,
which the stable `webhook-id` lets them notice).

Order: one run's events are delivered one at a time, in `seq` order; the final status is
recorded last, so nothing overtakes it. A progress-only event not yet attempted makes way for a
newer event of its run (every body is a full snapshot), and progress-only sends of a run are at
least `webhook_progress_interval_seconds` apart; status changes are never dropped.

The Redis client must be created with `decode_responses=True`.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.redis import keys
from comfyq.webhooks import scripts
from comfyq.webhooks.delivery_states import LIST_STATES
from comfyq.webhooks.safety import (
    UnresolvableWebhookHost,
    UnsafeWebhookURL,
    check_webhook_url,
    display_url,
)
from comfyq.webhooks.secret_store import signing_secrets
from comfyq.webhooks.settings import WebhookSettings, get_webhook_settings
from comfyq.webhooks.signing import signature_headers
from comfyq.webhooks.transport import AttemptResult, Outcome, post

logger = logging.getLogger(__name__)

#: `event_type` of every body, as ComfyDeploy sends it.
EVENT_TYPE = "run.updated"
#: Fields of ComfyDeploy's webhook body, with the value used when the caller leaves one out.
BODY_DEFAULTS: Mapping[str, Any] = {"live_status": None, "progress": 0.0, "outputs": []}
#: Events claimed per script call in :func:`enqueue_due`.
CLAIM_BATCH = 500
#: Latest attempts kept in a run record's `webhook_attempts`.
RUN_ATTEMPTS_KEPT = 50
#: Delivered events listed by :func:`list_deliveries` (older ones stay only in run records).
DELIVERED_INDEX_SIZE = 1000
#: Run outbox keys outlive the longest retry schedule by this much.
RUN_KEYS_MARGIN_SECONDS = 7 * 24 * 3600

_VERDICT_STATE = {"delivered": "delivered", "retry": "retrying", "rejected": "dead",
                  "exhausted": "dead", "gone": "gone"}


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one call of :func:`deliver_event` did.

    `state` is the event's state afterwards: delivered, retrying, dead, gone, or skipped (the
    event was not due, already taken by another task, settled, or unknown: nothing was sent).
    `next_event_id` is the run's next event, claimed for delivery: hand it to a task at once.
    """

    event_id: str
    state: str
    attempt: int | None = None
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    next_event_id: str | None = None


def _require_decoded(client: redis.Redis) -> None:
    if not client.get_encoder().decode_responses:
        raise ValueError("redis client: create it with decode_responses=True")


def _run_keys_ttl(settings: WebhookSettings) -> int:
    longest = sum(settings.webhook_schedule) * (1 + settings.webhook_jitter)
    longest += settings.webhook_max_retry_after_seconds * len(settings.webhook_schedule)
    return int(longest + RUN_KEYS_MARGIN_SECONDS)


def _body_text(run_id: str, body: Mapping[str, Any]) -> str:
    """The JSON body without its closing brace; the outbox appends `"seq"` when it assigns it."""
    if not isinstance(body, Mapping):
        raise ValueError(f"body: must be a dict, got {type(body).__name__}")
    if body.get("run_id", run_id) != run_id:
        raise ValueError(f"body.run_id: {body['run_id']!r} differs from run_id {run_id!r}")
    if not isinstance(body.get("status"), str):
        raise ValueError("body.status: required, a run status such as 'running'")
    fields = {"event_type": EVENT_TYPE, "run_id": run_id, "status": body["status"], **BODY_DEFAULTS,
              **{name: value for name, value in body.items() if name not in ("seq", "event_type")}}
    try:
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"body: not JSON-serialisable ({error})") from None
    return text[:-1]


def record_event(client: redis.Redis, run_id: str, webhook_url: str | None,
                 body: Mapping[str, Any], *, final: bool, status_changed: bool,
                 now: float | None = None, settings: WebhookSettings | None = None) -> str | None:
    """Queue a webhook event for a change of run `run_id`; returns its id (its `webhook-id`).

    :param webhook_url: the run's webhook; no event when empty.
    :param body: ComfyDeploy's webhook body: `run_id`, `status`, `live_status`, `progress`,
        `outputs` (extra fields are kept); `event_type` and `seq` are added.
    :param final: the run reached a final status; later calls for this run record nothing.
    :param status_changed: the status changed; when False the event is progress-only and may
        make way for a newer one.
    :returns: the event id, or None when nothing was recorded: no URL, the run already had its
        final event, or the URL answered 410 Gone before. The event is due at once (progress
        after the coalescing window): the caller may hand it to a delivery task right away, or
        leave it to :func:`enqueue_due`.
    """
    if not webhook_url:
        return None
    _require_decoded(client)
    settings = settings or get_webhook_settings()
    text = _body_text(run_id, body)
    event_id = f"msg_{uuid.uuid4().hex}"
    kind = "status" if status_changed or final else "progress"
    answer = scripts.record(client, run_id, event_id, [
        webhook_url, kind, "1" if final else "0", repr(time.time() if now is None else now),
        settings.webhook_progress_interval_seconds, text, _run_keys_ttl(settings),
    ])
    if answer[0] != "recorded":
        logger.info("no webhook event for run %s: %s", run_id,
                    "its final event was already recorded" if answer[0] == "final"
                    else f"{display_url(webhook_url)} answered 410 Gone before")
        return None
    return event_id


def _attempt(client: redis.Redis, event_id: str, event: Mapping[str, str],
             settings: WebhookSettings) -> AttemptResult:
    """Check the URL again, sign, and POST once."""
    url = event["url"]
    try:
        check_webhook_url(url, settings.address_policy)
    except UnresolvableWebhookHost as error:
        return AttemptResult(Outcome.RETRY, None, 0.0, str(error))
    except UnsafeWebhookURL as error:
        return AttemptResult(Outcome.REJECTED, None, 0.0, str(error))
    body = event["body"].encode("utf-8")
    headers = signature_headers(signing_secrets(client, settings), event_id, body)
    return post(url, body, headers, timeout=settings.webhook_timeout_seconds,
                max_response_bytes=settings.webhook_max_response_bytes,
                policy=settings.address_policy)


def retry_delay(attempts_made: int, settings: WebhookSettings,
                retry_after: float | None = None) -> float | None:
    """Seconds before the next attempt after `attempts_made` failed ones; None when exhausted.

    The schedule's wait gets jitter; a receiver's Retry-After can lengthen it, up to
    `webhook_max_retry_after_seconds`, never shorten it.
    """
    schedule = settings.webhook_schedule
    if attempts_made >= len(schedule):
        return None
    jitter = settings.webhook_jitter
    delay = schedule[attempts_made] * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.webhook_max_retry_after_seconds))
    return delay


def _settle(client: redis.Redis, event_id: str, event: Mapping[str, str], attempt: int,
            result: AttemptResult, started: float, settings: WebhookSettings) -> DeliveryOutcome:
    """Record an attempt's result and move the event (and its run) on accordingly."""
    finished = started + result.latency_ms / 1000.0
    next_at = None
    verdict = {Outcome.DELIVERED: "delivered", Outcome.GONE: "gone",
               Outcome.REJECTED: "rejected"}.get(result.outcome)
    if verdict is None:
        delay = retry_delay(attempt - int(event.get("schedule_base") or 0), settings,
                            result.retry_after_seconds)
        verdict = "exhausted" if delay is None else "retry"
        next_at = None if delay is None else finished + delay
    run_id = event["run_id"]
    record = {"event_id": event_id, "seq": int(event["seq"]), "attempt": attempt,
              "at": round(started, 3), "status_code": result.status_code,
              "latency_ms": result.latency_ms, "error": result.error}
    log = json.loads(event.get("log") or "[]") + [record]
    answer = scripts.finish(client, run_id, event_id, [
        attempt, verdict, repr(finished), repr(next_at or 0.0),
        json.dumps(record, separators=(",", ":")), json.dumps(log, separators=(",", ":")),
        settings.webhook_progress_interval_seconds,
        repr(finished + settings.webhook_claim_timeout_seconds),
        int(settings.webhook_delivered_retention_seconds), DELIVERED_INDEX_SIZE,
        "" if result.status_code is None else result.status_code, result.error or "",
        _run_keys_ttl(settings), RUN_ATTEMPTS_KEPT, repr(started),
    ])
    if answer[0] == "stale":
        logger.warning("webhook %s attempt %d finished after it was presumed lost; its outcome "
                       "(%s) is only logged", event_id, attempt, result.error or result.outcome)
        return DeliveryOutcome(event_id, "skipped", attempt, result.status_code,
                               "attempt outlived its lease; another attempt took over")
    state = _VERDICT_STATE[verdict]
    log_level = logging.INFO if state in ("delivered", "retrying") else logging.WARNING
    logger.log(log_level, "webhook %s (run %s, seq %s) attempt %d to %s: %s%s", event_id, run_id,
               event["seq"], attempt, display_url(event["url"]), state,
               f" ({result.error})" if result.error else "")
    return DeliveryOutcome(event_id, state, attempt, result.status_code, result.error, next_at,
                           answer[1] or None)


def deliver_event(client: redis.Redis, event_id: str, now: float | None = None, *,
                  settings: WebhookSettings | None = None) -> DeliveryOutcome:
    """Make one delivery attempt of `event_id`, if it is claimed or due; see DeliveryOutcome.

    Safe to call for any id at any time: an event that is not due, is being delivered by
    another task, is already settled, or does not exist is skipped without sending anything.
    """
    _require_decoded(client)
    settings = settings or get_webhook_settings()
    started = time.time() if now is None else now
    answer = scripts.start(client, event_id,
                           [repr(started), repr(started + settings.lease_seconds)])
    if answer[0] == "skip":
        return DeliveryOutcome(event_id, "skipped", error=f"nothing to send (event {answer[1]})")
    attempt, url_gone, flat = int(answer[1]), answer[2] == 1, answer[3]
    event = dict(zip(flat[::2], flat[1::2]))
    if url_gone:
        result = AttemptResult(Outcome.GONE, None, 0.0,
                               "not sent: the URL answered 410 Gone to an earlier delivery")
    else:
        result = _attempt(client, event_id, event, settings)
    return _settle(client, event_id, event, attempt, result, started, settings)


def _settle_lost(client: redis.Redis, event_id: str, attempt: int, now: float,
                 settings: WebhookSettings) -> DeliveryOutcome:
    """Count an attempt whose worker vanished as failed, so it is retried on schedule."""
    event = client.hgetall(keys.webhook_event(event_id))
    started = float(event.get("started_at") or now)
    result = AttemptResult(Outcome.RETRY, None, round((now - started) * 1000.0, 1),
                           "the delivery worker was lost during the attempt")
    return _settle(client, event_id, event, attempt, result, started, settings)


def _hand_off(client: redis.Redis, event_ids: list[str], send: Callable[[str], Any],
              now: float) -> int:
    """`send` each claimed event; on a failure, put it and the rest back to due, and re-raise."""
    for index, event_id in enumerate(event_ids):
        try:
            send(event_id)
        except Exception:
            for unsent in event_ids[index:]:
                scripts.unclaim(client, unsent, now)
            raise
    return len(event_ids)


def enqueue_due(client: redis.Redis, now: float, send: Callable[[str], Any], *,
                settings: WebhookSettings | None = None) -> int:
    """Hand every due attempt to `send(event_id)`, exactly once each; returns how many.

    Each event is claimed atomically before `send`, so concurrent callers never send the same
    attempt. A claim whose task has not started within `webhook_claim_timeout_seconds` is sent
    again; an attempt that outlived its lease (its worker died) counts as failed and is retried
    on schedule. If `send` raises, the unsent events go back to due and the error propagates.
    """
    _require_decoded(client)
    settings = settings or get_webhook_settings()
    total = 0
    while True:
        found = scripts.claim(client, now, now + settings.webhook_claim_timeout_seconds,
                              now + settings.lease_seconds, CLAIM_BATCH)
        claimed = found.claimed
        for event_id, attempt in zip(found.lost, found.lost_attempts):
            outcome = _settle_lost(client, event_id, int(attempt), now, settings)
            if outcome.next_event_id:
                claimed.append(outcome.next_event_id)
        total += _hand_off(client, claimed, send, now)
        if not found.more:
            return total


def deliver_due(client: redis.Redis, now: float | None = None, *,
                settings: WebhookSettings | None = None) -> list[DeliveryOutcome]:
    """Deliver every due attempt here, one after another, following each run's next event.

    The whole outbox in one process without Celery: for tests, benchmarks and one-process
    setups. Call it periodically; returns the outcome of each attempt made.
    """
    handed: deque[str] = deque()
    enqueue_due(client, time.time() if now is None else now, handed.append, settings=settings)
    outcomes = []
    while handed:
        outcome = deliver_event(client, handed.popleft(), settings=settings)
        outcomes.append(outcome)
        if outcome.next_event_id:
            handed.append(outcome.next_event_id)
    return outcomes


def redeliver(client: redis.Redis, run_id: str, now: float | None = None, *,
              settings: WebhookSettings | None = None) -> int:
    """Re-queue the dead-lettered (and gone) events of `run_id`, in seq order, each with a
    fresh schedule; returns how many. Redelivering a gone event forgets that its URL was gone.

    An event rejected (4xx) while its run moved on comes back after the later events that were
    delivered; its `seq` tells the receiver it is older.
    """
    _require_decoded(client)
    settings = settings or get_webhook_settings()
    return scripts.redeliver(client, run_id, [
        repr(time.time() if now is None else now), settings.webhook_progress_interval_seconds,
        _run_keys_ttl(settings)])


def _display_state(event: Mapping[str, str]) -> str:
    state = event.get("state", "")
    if state in ("claimed", "delivering"):
        return "in_flight"
    if state == "pending" and int(event.get("attempts") or 0) > 0:
        return "retrying"
    return state


def _optional_float(value: str | None) -> float | None:
    return float(value) if value else None


def _describe(event_id: str, event: Mapping[str, str]) -> dict[str, Any]:
    state = _display_state(event)
    return {
        "event_id": event_id, "run_id": event.get("run_id"), "seq": int(event.get("seq") or 0),
        "kind": event.get("kind"), "state": state, "url": display_url(event.get("url", "")),
        "attempts": int(event.get("attempts") or 0),
        "created_at": _optional_float(event.get("created_at")),
        "next_attempt_at": (_optional_float(event.get("next_at"))
                            if state in ("pending", "retrying") else None),
        "last_status_code": int(event["last_status_code"]) if event.get("last_status_code")
        else None,
        "last_error": event.get("last_error") or None,
        "attempt_log": json.loads(event.get("log") or "[]"),
    }


def _indexes_for(state: str | None) -> list[str]:
    if state is None:
        return [keys.WEBHOOKS_OUTSTANDING, keys.WEBHOOKS_DEAD, keys.WEBHOOKS_DELIVERED]
    if state not in LIST_STATES:
        raise ValueError(f"state: {state!r} is not one of {', '.join(LIST_STATES)}")
    if state == "delivered":
        return [keys.WEBHOOKS_DELIVERED]
    return [keys.WEBHOOKS_DEAD] if state in ("dead", "gone") else [keys.WEBHOOKS_OUTSTANDING]


def list_deliveries(client: redis.Redis, state: str | None = None, *,
                    limit: int = 200) -> list[dict[str, Any]]:
    """The newest `limit` events (optionally only those in `state`, one of LIST_STATES),
    oldest first, each a dict: event_id, run_id, seq, kind, state, url (without credentials or
    query), attempts, created_at, next_attempt_at, last_status_code, last_error, attempt_log.
    """
    _require_decoded(client)
    found: list[dict[str, Any]] = []
    for index in _indexes_for(state):
        ids = client.zrevrange(index, 0, -1)
        pipeline = client.pipeline(transaction=False)
        for event_id in ids:
            pipeline.hgetall(keys.webhook_event(event_id))
        expired = []
        for event_id, event in zip(ids, pipeline.execute()):
            if not event:
                expired.append(event_id)
                continue
            described = _describe(event_id, event)
            if state is None or described["state"] == state:
                found.append(described)
        if expired:
            client.zrem(index, *expired)  # delivered events whose record has expired
    found.sort(key=lambda item: item["created_at"] or 0.0)
    return found[-limit:] if limit else found
