"""The outbox end to end: real Redis, real receivers on 127.0.0.1 that verify signatures with
the `standardwebhooks` package, and the outbox driven by a small loop instead of Celery."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from comfyq.redis import keys
from comfyq.webhooks.outbox import (
    DeliveryOutcome,
    deliver_due,
    deliver_event,
    enqueue_due,
    list_deliveries,
    record_event,
    redeliver,
)
from comfyq.webhooks.receiver import Received, Reply, SigningReceiver, always, sequence
from comfyq.webhooks.secret_store import deployment_secret
from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.signing import generate_secret
from tests.ops_helpers import wait_until
from tests.paths import REPO

SECRET = generate_secret()
FAST_SCHEDULE = [0, 0.05, 0.1, 0.2]


def fast_settings(**overrides: Any) -> WebhookSettings:
    """Settings for tests: fast schedule, no jitter, loopback receivers allowed."""
    return WebhookSettings(**{
        "webhook_secrets": [SECRET], "webhook_schedule": FAST_SCHEDULE, "webhook_jitter": 0,
        "webhook_allow_loopback": True, "webhook_timeout_seconds": 2,
        "webhook_progress_interval_seconds": 0, **overrides})


@pytest.fixture
def client(fresh_redis: redis.Redis) -> redis.Redis:
    """A database of the test's own (the one ``redis_url`` names): no other test's outbox."""
    return fresh_redis


@pytest.fixture
def receivers() -> Iterator[Callable[..., SigningReceiver]]:
    started: list[SigningReceiver] = []

    def start(script: Any = None, secret: str = SECRET) -> SigningReceiver:
        receiver = SigningReceiver(secret, script).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def new_run(client: redis.Redis, run_id: str) -> str:
    """A run record as the pipeline keeps it (status plain, other fields JSON)."""
    client.hset(keys.run(run_id), mapping={"status": "queued", "progress": "0.0"})
    return run_id


def record(client: redis.Redis, run_id: str, url: str, status: str, settings: WebhookSettings,
           *, progress: float = 0.0, changed: bool = True, final: bool | None = None,
           now: float | None = None) -> str | None:
    body = {"run_id": run_id, "status": status, "live_status": f"{status} {progress}",
            "progress": progress, "outputs": []}
    is_final = status in ("success", "failed", "timeout", "cancelled") if final is None else final
    return record_event(client, run_id, url, body, final=is_final, status_changed=changed,
                        now=now, settings=settings)


def pump(client: redis.Redis, settings: WebhookSettings, until: Callable[[], bool],
         timeout: float = 60.0) -> list[DeliveryOutcome]:
    """Run the outbox in this process until `until()` holds."""
    outcomes: list[DeliveryOutcome] = []

    def delivered_until() -> bool:
        if until():
            return True
        outcomes.extend(deliver_due(client, settings=settings))
        return False

    wait_until(delivered_until, timeout=timeout, interval=0.01,
               describe=lambda: f"outcomes so far: {outcomes}")
    return outcomes


def deliver_due_at(client: redis.Redis, now: float,
                   settings: WebhookSettings) -> list[DeliveryOutcome]:
    """What `deliver_due` does, with the time given: every attempt due at `now`, made as if at
    `now`, so a test moves the outbox's clock instead of waiting for it."""
    handed: list[str] = []
    enqueue_due(client, now, handed.append, settings=settings)
    outcomes = []
    while handed:
        outcome = deliver_event(client, handed.pop(0), now, settings=settings)
        outcomes.append(outcome)
        if outcome.next_event_id:
            handed.append(outcome.next_event_id)
    return outcomes


def run_field(client: redis.Redis, run_id: str, name: str) -> Any:
    value = client.hget(keys.run(run_id), name)
    return None if value is None else json.loads(value)


def statuses(received: list[Received], run_id: str | None = None) -> list[str]:
    return [item.payload["status"] for item in received
            if run_id is None or item.payload["run_id"] == run_id]


def outstanding(client: redis.Redis) -> int:
    return client.zcard(keys.WEBHOOKS_OUTSTANDING)


def test_deliveries_are_signed_with_one_id_per_event_and_a_new_timestamp_per_try(
        client, receivers) -> None:
    settings = fast_settings(webhook_schedule=[0, 1.05])
    receiver = receivers(sequence(Reply(500)))
    run_id = new_run(client, "wh-sign")
    event_id = record(client, run_id, receiver.url, "running", settings, progress=0.5)

    pump(client, settings, lambda: len(receiver.accepted()) == 1)

    first, second = receiver.received
    assert first.verified and second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert first.body == second.body
    assert second.payload == {"event_type": "run.updated", "run_id": run_id, "status": "running",
                              "live_status": "running 0.5", "progress": 0.5, "outputs": [],
                              "seq": 1}
    assert run_field(client, run_id, "webhook_status") == "delivered"
    attempts = run_field(client, run_id, "webhook_attempts")
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (1, 500, 'HTTP 500: {"status":"ok"}'), (2, 200, None)]
    assert set(attempts[0]) == {"event_id", "seq", "attempt", "at", "status_code",
                                "latency_ms", "error"}
    record_fields = client.hgetall(keys.run(run_id))
    assert {name: record_fields[name] for name in ("status", "progress")} == {
        "status": "queued", "progress": "0.0"}  # the pipeline's fields are left alone
    assert set(record_fields) == {"status", "progress", "webhook_status", "webhook_attempts"}


def test_the_run_record_keeps_the_last_50_attempts_and_the_event_all(client, receivers) -> None:
    settings = fast_settings(webhook_schedule=[0] * 60)
    receiver = receivers(always(Reply(503)))
    run_id = new_run(client, "wh-many")
    record(client, run_id, receiver.url, "success", settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    assert len(receiver.received) == 60
    attempts = run_field(client, run_id, "webhook_attempts")
    assert [a["attempt"] for a in attempts] == list(range(11, 61))
    [dead] = list_deliveries(client, "dead")
    assert len(dead["attempt_log"]) == 60


def test_a_receiver_down_for_a_while_gets_everything_in_order_once_up(client, receivers) -> None:
    settings = fast_settings(webhook_schedule=[0] + [0.05] * 40)
    receiver = receivers()
    receiver.stop()
    run_id = new_run(client, "wh-down")
    sent = ["queued", "started", "running", "uploading", "success"]
    for status in sent:
        record(client, run_id, receiver.url, status, settings)

    failed = pump(client, settings,
                  lambda: len(run_field(client, run_id, "webhook_attempts") or []) >= 3)
    assert all(outcome.state == "retrying" for outcome in failed)
    assert {outcome.event_id for outcome in failed} == {failed[0].event_id}  # only the first
    assert "Connection refused" in failed[0].error
    assert run_field(client, run_id, "webhook_status") == "retrying"

    receiver.start()
    pump(client, settings, lambda: len(receiver.accepted()) == len(sent))
    assert statuses(receiver.accepted()) == sent
    assert [item.payload["seq"] for item in receiver.accepted()] == [1, 2, 3, 4, 5]
    assert run_field(client, run_id, "webhook_status") == "delivered"
    assert outstanding(client) == 0


def test_server_errors_and_timeouts_are_retried_until_delivered(client, receivers) -> None:
    settings = fast_settings(webhook_timeout_seconds=0.3, webhook_schedule=[0] + [0.05] * 5)
    receiver = receivers(sequence(Reply(500), Reply(503), Reply(200, delay=1.0)))
    run_id = new_run(client, "wh-retry")
    record(client, run_id, receiver.url, "success", settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    attempts = run_field(client, run_id, "webhook_attempts")
    assert [a["status_code"] for a in attempts] == [500, 503, None, 200]
    assert attempts[2]["error"] == "timed out after 0.3 s"
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert len(receiver.received) == 4 and receiver.received[-1].accepted
    assert len({item.headers["webhook-id"] for item in receiver.received}) == 1


def test_retry_after_on_429_is_honoured(client, receivers) -> None:
    settings = fast_settings(webhook_schedule=[0, 0.05, 0.05])
    receiver = receivers(sequence(Reply(429, headers={"Retry-After": "1"})))
    run_id = new_run(client, "wh-429")
    start = time.time()
    record(client, run_id, receiver.url, "success", settings, now=start)

    [refused] = deliver_due_at(client, start, settings)
    assert refused.state == "retrying" and refused.status_code == 429
    # The schedule alone would try again after 0.05 s; the receiver asked for 1 s.
    assert deliver_due_at(client, start + 0.5, settings) == []
    [delivered] = deliver_due_at(client, start + 1.5, settings)
    assert delivered.state == "delivered"
    assert [item.reply.status for item in receiver.received] == [429, 200]


def test_410_gone_stops_every_delivery_to_that_url_until_redelivered(client, receivers) -> None:
    settings = fast_settings()
    answers = {"reply": Reply(410)}
    receiver = receivers(lambda index, body: answers["reply"])
    other = receivers()
    first, second = new_run(client, "wh-gone-1"), new_run(client, "wh-gone-2")
    record(client, first, receiver.url, "queued", settings)
    record(client, first, receiver.url, "running", settings)
    record(client, second, receiver.url, "queued", settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    assert len(receiver.received) == 1  # nothing after the 410, for either run
    gone = list_deliveries(client, "gone")
    assert sorted((item["run_id"], item["seq"]) for item in gone) == [
        (first, 1), (first, 2), (second, 1)]
    assert run_field(client, first, "webhook_status") == "gone"
    assert run_field(client, second, "webhook_status") == "gone"
    third = new_run(client, "wh-gone-3")
    assert record(client, third, receiver.url, "queued", settings) is None
    assert run_field(client, third, "webhook_status") == "gone"
    assert record(client, third, other.url, "queued", settings) is not None  # other URLs work
    pump(client, settings, lambda: len(other.accepted()) == 1)

    answers["reply"] = Reply(200)
    assert redeliver(client, first) == 2
    pump(client, settings, lambda: len(receiver.accepted()) == 2)
    assert statuses(receiver.accepted()) == ["queued", "running"]
    assert run_field(client, first, "webhook_status") == "delivered"


def test_a_redirect_is_a_failure_and_is_never_followed(client, receivers) -> None:
    settings = fast_settings()
    target = receivers()
    redirecting = receivers(always(Reply(307, headers={"Location": target.url})))
    run_id = new_run(client, "wh-redirect")
    record(client, run_id, redirecting.url, "success", settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    assert len(redirecting.received) == len(FAST_SCHEDULE) and target.received == []
    [dead] = list_deliveries(client, "dead")
    assert dead["last_error"] == f"HTTP 307: redirect to {target.url} not followed"
    assert len(dead["attempt_log"]) == len(FAST_SCHEDULE)


def test_each_run_is_delivered_in_seq_order_one_at_a_time_by_concurrent_workers(
        client, receivers) -> None:
    """Four worker threads take deliveries as Celery would; the receiver fails a third of them
    and answers slowly, so out-of-order or overlapping deliveries would show."""
    settings = fast_settings(webhook_schedule=[0] + [0.02] * 30)
    chance = random.Random(7)
    receiver = receivers(lambda index, body: Reply(500 if chance.random() < 0.33 else 200,
                                                   delay=0.01))
    runs = [new_run(client, f"wh-order-{n}") for n in range(6)]
    lifecycle = ["queued", "started", "running", "uploading", "success"]
    handed: list[str] = []
    handed_lock = threading.Condition()
    stop = threading.Event()

    def send(event_id: str) -> None:
        with handed_lock:
            handed.append(event_id)
            handed_lock.notify()

    def worker() -> None:
        while not stop.is_set():
            with handed_lock:
                if not handed:
                    handed_lock.wait(0.05)
                    continue
                event_id = handed.pop(0)
            outcome = deliver_event(client, event_id, settings=settings)
            if outcome.next_event_id:
                send(outcome.next_event_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    def all_delivered() -> bool:
        enqueue_due(client, time.time(), send, settings=settings)
        return len(receiver.accepted()) == len(runs) * len(lifecycle)

    try:
        for status in lifecycle:  # events arrive while deliveries are under way
            tried_before = len(receiver.received)
            for run_id in runs:
                event_id = record(client, run_id, receiver.url, status, settings)
                send(event_id)  # as the pipeline does: first attempt handed out at once
            wait_until(lambda before=tried_before: len(receiver.received) > before,
                       interval=0.005)
        # Generous: the suite may share its two cores with worker fleets; order is what counts.
        wait_until(all_delivered, timeout=90, interval=0.01,
                   describe=lambda: statuses(receiver.accepted()))
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    for run_id in runs:
        accepted = [item for item in receiver.accepted() if item.payload["run_id"] == run_id]
        assert [item.payload["status"] for item in accepted] == lifecycle
        assert [item.payload["seq"] for item in accepted] == [1, 2, 3, 4, 5]
        tries = [item for item in receiver.received if item.payload["run_id"] == run_id]
        for earlier, later in zip(tries, tries[1:]):
            assert later.payload["seq"] >= earlier.payload["seq"]
        # Never two of a run at once: each attempt began after the one before it had ended
        # (the sender's own log; "at" is rounded to the millisecond).
        attempts = sorted(run_field(client, run_id, "webhook_attempts"), key=lambda a: a["at"])
        for earlier, later in zip(attempts, attempts[1:]):
            assert later["at"] >= earlier["at"] + earlier["latency_ms"] / 1000 - 0.002
    assert outstanding(client) == 0


def test_progress_coalesces_to_the_newest_and_status_changes_are_all_sent(
        client, receivers) -> None:
    settings = fast_settings()
    receiver = receivers()
    run_id = new_run(client, "wh-coalesce")
    url = receiver.url
    record(client, run_id, url, "running", settings)
    for progress in (0.1, 0.2, 0.3):
        record(client, run_id, url, "running", settings, progress=progress, changed=False)
    pump(client, settings, lambda: outstanding(client) == 0)
    assert [(i.payload["status"], i.payload["progress"], i.payload["seq"])
            for i in receiver.accepted()] == [("running", 0.0, 1), ("running", 0.3, 4)]

    record(client, run_id, url, "running", settings, progress=0.5, changed=False)
    record(client, run_id, url, "uploading", settings, progress=0.9)
    record(client, run_id, url, "uploading", settings, progress=0.95, changed=False)
    record(client, run_id, url, "success", settings, progress=1.0)
    pump(client, settings, lambda: outstanding(client) == 0)
    assert statuses(receiver.accepted()) == ["running", "running", "uploading", "success"]
    seqs = [item.payload["seq"] for item in receiver.accepted()]
    assert seqs == sorted(seqs) and seqs[-1] == 8


def test_progress_only_sends_are_spaced_by_the_interval(client, receivers) -> None:
    interval, step, steps = 0.2, 0.01, 100
    settings = fast_settings(webhook_progress_interval_seconds=interval)
    receiver = receivers()
    run_id = new_run(client, "wh-interval")
    start = time.time()
    record(client, run_id, receiver.url, "running", settings, now=start)
    # A chatty worker: progress every 10 ms for a second, on a clock the test moves.
    for number in range(1, steps + 1):
        now = start + number * step
        record(client, run_id, receiver.url, "running", settings, progress=number / 1000,
               changed=False, now=now)
        deliver_due_at(client, now, settings)
    while outstanding(client) and now < start + 10:
        now += step
        deliver_due_at(client, now, settings)

    sent = receiver.accepted()
    attempted_at = [attempt["at"] for attempt in run_field(client, run_id, "webhook_attempts")]
    assert len(attempted_at) == len(sent) == len(receiver.received)
    assert sent[0].payload["progress"] == 0.0  # the status change, at once
    # Then about one progress send per interval, never two closer than it ("at" is rounded to
    # the millisecond); 100 progress reports coalesce into those few.
    assert all(later - earlier >= interval - 0.001
               for earlier, later in zip(attempted_at, attempted_at[1:]))
    assert steps * step / interval - 1 <= len(sent) - 1 <= steps * step / interval + 1
    assert sent[-1].payload["progress"] == pytest.approx(steps / 1000)  # the newest is not lost


def test_dead_letters_after_the_schedule_and_redelivers_in_order(client, receivers) -> None:
    settings = fast_settings()
    answers = {"reply": Reply(500)}
    receiver = receivers(lambda index, body: answers["reply"])
    run_id = new_run(client, "wh-dead")
    for status in ("queued", "running", "success"):
        record(client, run_id, receiver.url, status, settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    assert len(receiver.received) == len(FAST_SCHEDULE)  # only the first event was tried
    dead = list_deliveries(client, "dead")
    assert [item["seq"] for item in dead] == [1, 2, 3]
    assert [a["status_code"] for a in dead[0]["attempt_log"]] == [500] * len(FAST_SCHEDULE)
    assert dead[1]["last_error"] == "not attempted: event seq 1 exhausted its schedule"
    assert run_field(client, run_id, "webhook_status") == "dead"
    assert len(run_field(client, run_id, "webhook_attempts")) == len(FAST_SCHEDULE)

    answers["reply"] = Reply(200)
    assert redeliver(client, run_id) == 3
    assert redeliver(client, run_id) == 0
    pump(client, settings, lambda: outstanding(client) == 0)
    assert statuses(receiver.accepted()) == ["queued", "running", "success"]
    assert [item.payload["seq"] for item in receiver.accepted()] == [1, 2, 3]
    assert run_field(client, run_id, "webhook_status") == "delivered"
    assert list_deliveries(client, "dead") == []
    first = [item for item in list_deliveries(client, "delivered") if item["seq"] == 1][0]
    assert len(first["attempt_log"]) == len(FAST_SCHEDULE) + 1  # the history is kept


def test_a_rejected_event_is_dead_at_once_and_the_run_moves_on(client, receivers) -> None:
    settings = fast_settings()
    receiver = receivers(sequence(Reply(422, body=b'{"error":"bad"}')))
    run_id = new_run(client, "wh-reject")
    record(client, run_id, receiver.url, "running", settings)
    record(client, run_id, receiver.url, "success", settings)

    pump(client, settings, lambda: outstanding(client) == 0)

    assert len(receiver.received) == 2
    [dead] = list_deliveries(client, "dead")
    assert (dead["seq"], dead["attempts"], dead["last_error"]) == (
        1, 1, 'HTTP 422: {"error":"bad"}')
    assert statuses(receiver.accepted()) == ["success"]


def test_unsafe_urls_are_refused_at_delivery_time(client, receivers) -> None:
    strict = fast_settings(webhook_allow_loopback=False)
    receiver = receivers()
    run_id = new_run(client, "wh-unsafe")
    record(client, run_id, receiver.url, "running", strict)
    record(client, run_id, "http://169.254.169.254/latest/meta-data/", "success", strict)

    pump(client, strict, lambda: outstanding(client) == 0)

    assert receiver.received == []
    errors = [item["last_error"] for item in list_deliveries(client, "dead")]
    assert "127.0.0.1 is a loopback address" in errors[0]
    assert "169.254.169.254 is a cloud metadata address" in errors[1]
    assert [item["attempts"] for item in list_deliveries(client, "dead")] == [1, 1]


def test_concurrent_enqueue_due_callers_never_send_one_attempt_twice(client) -> None:
    settings = fast_settings()
    expected = {record(client, f"wh-claim-{n}", "http://127.0.0.1:9/hook", "success", settings)
                for n in range(300)}
    sent: list[str] = []
    sent_lock = threading.Lock()
    barrier = threading.Barrier(4)

    def send(event_id: str) -> None:
        with sent_lock:
            sent.append(event_id)

    def scheduler() -> None:
        barrier.wait()
        for _ in range(20):
            enqueue_due(client, time.time(), send, settings=settings)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent) == sorted(expected)
    assert enqueue_due(client, time.time(), send, settings=settings) == 0


def test_a_claim_whose_task_never_ran_is_handed_out_again(client, receivers) -> None:
    settings = fast_settings(webhook_claim_timeout_seconds=0.2)
    receiver = receivers()
    run_id = new_run(client, "wh-lost-claim")
    event_id = record(client, run_id, receiver.url, "success", settings)
    lost: list[str] = []
    now = time.time()
    assert enqueue_due(client, now, lost.append, settings=settings) == 1
    assert enqueue_due(client, now + 0.1, lost.append, settings=settings) == 0
    assert enqueue_due(client, now + 0.25, lost.append, settings=settings) == 1
    assert lost == [event_id, event_id]

    assert deliver_event(client, event_id, settings=settings).state == "delivered"
    assert deliver_event(client, event_id, settings=settings).state == "skipped"  # the first
    assert len(receiver.received) == 1


def test_a_send_that_fails_puts_the_events_back(client) -> None:
    settings = fast_settings()
    event_id = record(client, "wh-send-fails", "http://127.0.0.1:9/hook", "success", settings)

    def broker_down(event_id: str) -> None:
        raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        enqueue_due(client, time.time(), broker_down, settings=settings)
    handed: list[str] = []
    assert enqueue_due(client, time.time(), handed.append, settings=settings) == 1
    assert handed == [event_id]


def _deliver_in_a_child(redis_url: str, event_id: str, timeout: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
           "COMFYQ_WEBHOOK_SECRETS": SECRET, "COMFYQ_WEBHOOK_TIMEOUT_SECONDS": str(timeout)}
    code = ("import sys, redis; from comfyq.webhooks.outbox import deliver_event; "
            "deliver_event(redis.Redis.from_url(sys.argv[1], decode_responses=True), sys.argv[2])")
    return subprocess.Popen([sys.executable, "-c", code, redis_url, event_id], env=env, cwd=REPO)


def test_an_attempt_whose_worker_died_is_retried_later(client, receivers, redis_url) -> None:
    settings = fast_settings(webhook_timeout_seconds=30)
    receiver = receivers(sequence(Reply(200, delay=60)))  # the first attempt hangs
    run_id = new_run(client, "wh-killed")
    event_id = record(client, run_id, receiver.url, "success", settings)
    child = _deliver_in_a_child(redis_url, event_id, timeout=30)
    try:
        assert receiver.wait_for(lambda received: len(received) == 1, timeout=15)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [item["state"] for item in list_deliveries(client)] == ["in_flight"]
    handed: list[str] = []
    now = time.time()
    assert enqueue_due(client, now, handed.append, settings=settings) == 0  # lease still held

    later = now + settings.lease_seconds + 1
    assert enqueue_due(client, later, handed.append, settings=settings) == 0
    [item] = list_deliveries(client)
    assert item["state"] == "retrying"
    assert item["attempt_log"][0]["error"] == "the delivery worker was lost during the attempt"

    assert enqueue_due(client, later + 1, handed.append, settings=settings) == 1
    assert deliver_event(client, handed[0], settings=settings).state == "delivered"
    assert [i.headers["webhook-id"] for i in receiver.accepted()] == [event_id]


def test_a_late_finish_of_an_attempt_presumed_lost_changes_nothing(client, receivers) -> None:
    settings = fast_settings()
    receiver = receivers(sequence(Reply(200, delay=0.5)))
    run_id = new_run(client, "wh-late")
    event_id = record(client, run_id, receiver.url, "success", settings)
    results: list[DeliveryOutcome] = []
    slow = threading.Thread(target=lambda: results.append(
        deliver_event(client, event_id, settings=settings)))
    slow.start()
    assert receiver.wait_for(lambda received: len(received) == 1, timeout=5)
    enqueue_due(client, time.time() + settings.lease_seconds + 1, lambda _: None,
                settings=settings)
    slow.join()

    assert results[0].state == "skipped" and "outlived its lease" in results[0].error
    [item] = list_deliveries(client)
    assert item["state"] == "retrying" and len(item["attempt_log"]) == 1


def test_nothing_is_recorded_after_the_final_event_or_without_a_url(client) -> None:
    settings = fast_settings()
    url = "http://127.0.0.1:9/hook"
    assert record(client, "wh-final", url, "success", settings) is not None
    assert record(client, "wh-final", url, "running", settings, progress=0.5) is None
    assert record_event(client, "wh-final", None, {"status": "x"}, final=False,
                        status_changed=True, settings=settings) is None
    assert not client.exists(keys.run("wh-final"))  # no run record is ever created here


def test_bad_bodies_are_refused_naming_the_field(client) -> None:
    settings = fast_settings()
    url = "http://127.0.0.1:9/hook"
    with pytest.raises(ValueError, match="body.status: required"):
        record_event(client, "wh-bad", url, {"run_id": "wh-bad"}, final=False,
                     status_changed=True, settings=settings)
    with pytest.raises(ValueError, match="body.run_id: 'other' differs from run_id 'wh-bad'"):
        record_event(client, "wh-bad", url, {"run_id": "other", "status": "running"},
                     final=False, status_changed=True, settings=settings)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        record_event(client, "wh-bad", url, {"status": "running", "progress": float("nan")},
                     final=False, status_changed=True, settings=settings)
    with pytest.raises(ValueError, match="state: 'lost' is not one of"):
        list_deliveries(client, "lost")


def test_without_a_configured_secret_the_deployment_secret_signs(client, receivers) -> None:
    unconfigured = fast_settings(webhook_secrets=[])
    run_id = new_run(client, "wh-generated")
    generated = deployment_secret(client).get_secret_value()
    assert generated.startswith("whsec_") and generated != SECRET
    assert deployment_secret(client).get_secret_value() == generated  # generated once
    receiver = receivers(secret=generated)
    record(client, run_id, receiver.url, "success", unconfigured)
    pump(client, unconfigured, lambda: outstanding(client) == 0)
    assert len(receiver.accepted()) == 1


@pytest.fixture
def redis_url(fresh_redis_url: str) -> str:
    """A database of their own: the session's worker fleet delivers webhooks from database 0,
    and its callback worker would otherwise take these tests' deliveries too."""
    return fresh_redis_url
