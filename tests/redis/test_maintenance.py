"""The maintenance on its own: lost messages, queue-wait timeouts, dead workers, retention,
the single-beat lock and idempotent submits, against a real Redis and real broker queues.

Time passes by moving the store's clock forward, never by sleeping."""

from __future__ import annotations

import os
import time

import pytest
import redis

from comfyq import Client, RunStatus
from comfyq.broker import gpu_queue
from comfyq.broker.messages import message_run_ids
from comfyq.broker.redis_transport import UNACKED_HASH, UNACKED_INDEX, queue_lists
from comfyq.models import FINAL_STATUSES
from comfyq.redis import keys
from comfyq.runs.hooks import RunHooks
from comfyq.scheduler import reaper
from comfyq.scheduler.beat import BeatLock
from tests.helpers import request
from tests.redis.moving_time import announced


@pytest.fixture
def plain(fresh_redis):
    """The test's own database: run records and the broker's queues (no worker consumes them)."""
    return fresh_redis


def expire_now(plain: redis.Redis, key: str) -> None:
    """Let Redis expire ``key`` at once, as its TTL would (the clock does not move Redis's)."""
    plain.pexpire(key, 1)
    deadline = time.monotonic() + 5
    while plain.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        time.sleep(0.005)


#: kombu's Redis lists of the A100 queue, one per priority step.
A100_LISTS = queue_lists(gpu_queue("A100"))


def queued_ids(plain: redis.Redis) -> set[str]:
    return {run_id for name in A100_LISTS for run_id in message_run_ids(plain.lrange(name, 0, -1))}


def test_queued_run_whose_message_vanished_is_republished(make_client, plain, clock):
    client = make_client(lost_message_seconds=30)
    run_id = client.submit(request(gpu="A100"))
    kept = client.submit(request(gpu="A100"))
    plain.delete(*A100_LISTS)  # the broker lost both messages...
    client.broker.publish_run(kept, "A100")  # ...but one was published again meanwhile
    assert reaper.recover_lost_messages(client.store, client.settings, client.broker) == 0
    clock.advance(31)
    republished = reaper.recover_lost_messages(client.store, client.settings, client.broker)
    assert republished == 1
    assert queued_ids(plain) == {run_id, kept}
    assert client.get_run(run_id).status == RunStatus.QUEUED


def test_run_nobody_picks_up_times_out_in_the_queue(make_client, plain, clock):
    client = make_client(max_queue_seconds=60)
    run_id = client.submit(request(gpu="A100"))
    calls, announce = announced()
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, announce) == 0
    clock.advance(61)
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, announce) == 1
    run = client.get_run(run_id)
    assert run.status == RunStatus.TIMEOUT
    assert run.error["exception_type"] == "QueueTimeout" and run.started_at is None
    assert calls == [(run_id, True)]


def start_as_dead_worker(client: Client, plain: redis.Redis, run_id: str, attempts: int) -> None:
    """Claim the run like a worker would, then let its lease vanish as if the worker died."""
    for _ in range(attempts):
        claim = client.store.claim(run_id, (), "dead-worker-token", 30,
                                   {"worker": "gpu9@gone", "started_at": client.store.clock()})
        assert claim.claimed
        plain.delete(keys.run_lease(run_id))
        if _ < attempts - 1:
            client.store.move(run_id, RunStatus.QUEUED, {}, force=True)


def test_run_of_a_dead_worker_is_requeued_then_failed_when_out_of_attempts(make_client, plain):
    client = make_client(max_attempts=2)
    run_id = client.submit(request(gpu="A100"))
    plain.delete(*A100_LISTS)
    start_as_dead_worker(client, plain, run_id, attempts=1)
    published: list[tuple[str, str]] = []
    _, announce = announced()
    assert reaper.reap_runs(client.store, client.settings,
                            lambda rid, gpu, priority: published.append((rid, gpu)), announce) == 1
    run = client.get_run(run_id)
    assert run.status == RunStatus.QUEUED and "gpu9@gone stopped answering" in run.live_status
    assert published == [(run_id, "A100")]
    start_as_dead_worker(client, plain, run_id, attempts=1)
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, announce) == 1
    run = client.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.attempts == 2
    assert run.error["exception_type"] == "WorkerLost"
    assert "gave up after 2 attempt(s)" in run.error["exception_message"]


def test_run_alive_under_its_lease_is_left_alone(make_client, plain):
    client = make_client()
    run_id = client.submit(request(gpu="A100"))
    assert client.store.claim(run_id, (), "live-token", 30, {"started_at": time.time()}).claimed
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, RunHooks()) == 0
    assert client.get_run(run_id).status == RunStatus.STARTED


def test_run_past_its_limit_and_grace_times_out_even_while_leased(make_client, plain, clock):
    client = make_client(max_run_seconds=60, timeout_grace_seconds=10)
    run_id = client.submit(request(gpu="A100"))
    assert client.store.claim(run_id, (), "stuck-token", 30, {"started_at": clock()}).claimed
    clock.advance(65)
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, RunHooks()) == 0
    clock.advance(6)
    assert reaper.reap_runs(client.store, client.settings, lambda *_: None, RunHooks()) == 1
    run = client.get_run(run_id)
    assert run.status == RunStatus.TIMEOUT and run.error["exception_type"] == "RunTimeout"
    assert client.store.cancel_requested(run_id)  # the stuck worker is told to stop


def test_finished_records_expire_and_old_outputs_are_swept(make_client, plain, tmp_path, clock):
    client = make_client(run_retention_seconds=60)
    run_id = client.submit(request(gpu="A100"))
    client.cancel(run_id)
    assert 0 < plain.ttl(keys.run(run_id)) <= 60
    old_output = client.settings.output_dir / run_id
    old_output.mkdir(parents=True)
    os.utime(old_output, (clock() - 10, clock() - 10))
    expire_now(plain, keys.run(run_id))
    assert reaper.expire_old_runs(client.store, client.settings) == 0  # not old enough yet
    assert plain.zscore(keys.RUNS_INDEX, run_id) is not None and old_output.exists()
    clock.advance(61)
    assert reaper.expire_old_runs(client.store, client.settings) == 1
    assert plain.zscore(keys.RUNS_INDEX, run_id) is None and not old_output.exists()


def test_only_one_beat_holds_the_lock(plain):
    first, second = BeatLock(plain, ttl_seconds=30), BeatLock(plain, ttl_seconds=30)
    assert first.hold() and not second.hold() and first.hold()
    assert 29_000 < plain.pttl(keys.BEAT_LOCK) <= 30_000
    expire_now(plain, keys.BEAT_LOCK)  # the first beat died without releasing
    assert second.hold() and not first.hold()
    second.release()
    assert first.hold()


def test_same_idempotency_key_gives_the_first_run(make_client, plain):
    client = make_client()
    first = client.submit(request(gpu="A100"), idempotency_key="order-42")
    again = client.submit(request(gpu="A100"), idempotency_key="order-42")
    other = client.submit(request(gpu="A100"), idempotency_key="order-43")
    assert first == again != other
    assert queued_ids(plain) == {first, other}


def test_final_statuses_never_move(make_client):
    client = make_client()
    run_id = client.submit(request(gpu="A100"))
    client.cancel(run_id)
    for status in [RunStatus.RUNNING, RunStatus.QUEUED, *FINAL_STATUSES]:
        assert client.store.move(run_id, status, {"live_status": "x"}, force=True) is None
    assert client.get_run(run_id).status == RunStatus.CANCELLED


def test_queued_run_whose_message_a_dead_worker_took_is_republished(make_client, plain, clock):
    client = make_client(lost_message_seconds=30)
    abandoned = client.submit(request(gpu="A100"))
    fresh = client.submit(request(gpu="A100"))
    clock.advance(31)  # both runs have been queued for longer than lost_message_seconds
    # Two workers took one message each (as kombu records it), then one of them died.
    for run_id, taken in ((abandoned, clock() - 35), (fresh, clock())):
        name, raw = next((name, m) for name in A100_LISTS for m in plain.lrange(name, 0, -1)
                         if run_id in m)
        plain.lrem(name, 1, raw)
        plain.hset(UNACKED_HASH, run_id + "-tag", f'[{raw}, "", "A100"]')
        plain.zadd(UNACKED_INDEX, {run_id + "-tag": taken})
    assert reaper.recover_lost_messages(client.store, client.settings, client.broker) == 1
    assert queued_ids(plain) == {abandoned}
