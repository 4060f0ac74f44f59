"""What comfyq reads from and asks of its broker, on Redis and on RabbitMQ: ``comfyq queues``
and the metrics' queue depth, the recovery of runs whose message the broker lost, priorities.

Each test starts its own ``comfyq worker`` fleet on a Redis database of its own and, for
RabbitMQ, a vhost of its own (``broker_url``)."""

from __future__ import annotations

import json

import pytest
import redis
from kombu import Connection

from comfyq import RunStatus
from comfyq.broker import gpu_queue
from comfyq.metrics import ComfyqCollector
from tests.e2e.test_faults import client_for, fleet_env, running_fleet, slow_request
from tests.ops_helpers import run_comfyq, wait_until

pytestmark = pytest.mark.slow


def lose_messages(broker_url: str | None, records_url: str, gpu_type: str) -> None:
    """Throw away every message waiting in ``gpu_type``'s queue, as a broker losing data would."""
    if broker_url:
        with Connection(broker_url) as connection:
            connection.default_channel.queue_purge(gpu_queue(gpu_type))
        return
    from comfyq.broker.redis_transport import queue_lists

    with redis.Redis.from_url(records_url) as plain:
        plain.delete(*queue_lists(gpu_queue(gpu_type)))


def queue_depth_metric(settings) -> float:
    families = {family.name: family for family in ComfyqCollector(settings).collect()}
    return next(sample.value for sample in families["comfyq_queue_depth"].samples
                if sample.labels["gpu_type"] == "T4")


def test_queues_metrics_and_lost_message_recovery(fresh_redis_url, broker_url, tmp_path,
                                                  record_counts):
    env = fleet_env(fresh_redis_url, tmp_path, broker_url, COMFYQ_LOST_MESSAGE_SECONDS="2")
    client = client_for(env)
    with running_fleet(["A100"], env, tmp_path / "fleet.log"):
        served = client.wait(client.submit(slow_request(0.05)), timeout=30)
        # No T4 worker: these wait, oldest first.
        waiting = [client.submit(slow_request(0.05, gpu="T4")) for _ in range(3)]
        states = {s["gpu_type"]: s for s in json.loads(run_comfyq(env, "queues", "--json").stdout)}
        metric = queue_depth_metric(client.settings)
        lose_messages(broker_url, fresh_redis_url, "T4")
        lost = client.broker.queue_depth("T4")
        # The maintenance finds the queued runs without a message and publishes them again.
        wait_until(lambda: sorted(client.broker.waiting_run_ids("T4")) == sorted(waiting),
                   timeout=30, describe=lambda: client.broker.waiting_run_ids("T4"))
        ordered = client.broker.waiting_run_ids("T4")
    with running_fleet(["T4"], env, tmp_path / "fleet-t4.log", "--no-beat", "--no-callbacks",
                       callbacks=False):
        finals = {run_id: client.wait(run_id, timeout=30).status for run_id in waiting}
    record_counts(t4_depth=states["T4"]["depth"], a100_depth=states["A100"]["depth"],
                  metric_depth=metric, depth_after_loss=lost, recovered=len(ordered),
                  success=sum(s == RunStatus.SUCCESS for s in finals.values()))
    assert served.status == RunStatus.SUCCESS
    assert states["T4"]["depth"] == 3 and states["T4"]["oldest_waiting"]["run_id"] == waiting[0]
    assert states["A100"]["depth"] == 0 and states["A100"]["oldest_waiting"] is None
    assert metric == 3
    assert lost == 0
    assert set(finals.values()) == {RunStatus.SUCCESS}


def test_high_priority_run_overtakes_waiting_low_priority_runs(fresh_redis_url, broker_url, tmp_path,
                                                               record_counts):
    env = fleet_env(fresh_redis_url, tmp_path, broker_url)
    client = client_for(env)
    with running_fleet(["A100"], env, tmp_path / "fleet.log"):
        busy = client.submit(slow_request(2.0))
        wait_until(lambda: client.get_run(busy).status == RunStatus.RUNNING, timeout=30,
                   interval=0.02)
        low = [client.submit(slow_request(0.05, tag=f"low{i}")) for i in range(3)]
        high = client.submit(slow_request(0.05, tag="high", priority=9))
        runs = {run_id: client.wait(run_id, timeout=60) for run_id in [busy, *low, high]}
    order = sorted(runs, key=lambda run_id: runs[run_id].started_at)
    record_counts(start_order="/".join("busy" if r == busy else "high" if r == high
                                       else f"low{low.index(r)}" for r in order))
    assert {run.status for run in runs.values()} == {RunStatus.SUCCESS}
    assert order == [busy, high, *low]
