"""Redis Sentinel failover under load: the primary is SIGKILLed while runs are submitted and
executing, the sentinels promote the replica, and every comfyq process (producer, GPU workers,
callbacks, beat; kombu's Sentinel transport as the broker) follows it.

Counted (kept in the test report): accepted runs lost, runs executed twice at the same time,
final webhooks lost, submits refused, and how long the longest submit waited through it."""

from __future__ import annotations

import time

import pytest

from comfyq import RunStatus
from comfyq.errors import RunNotFound
from comfyq.models import FINAL_STATUSES
from comfyq.redis.connection import redis_client
from tests.e2e.test_faults import (
    PacedSubmitter,
    client_for,
    executions,
    fleet_env,
    overlapping_executions,
    running_fleet,
)
from tests.ops_helpers import wait_until
from tests.sentinel import SentinelGroup, server_binary

pytestmark = pytest.mark.slow

#: Runs accepted before the kill, and after the promotion, before the stream stops.
RUNS_EACH_SIDE = 30


def final_or_none(client, run_id: str, timeout: float):
    """The run once final; None when its record is gone (lost with the primary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = client.get_run(run_id)
        except RunNotFound:
            return None
        if run.status in FINAL_STATUSES:
            return run
        time.sleep(0.1)
    return client.get_run(run_id)


def test_sentinel_failover_mid_stream_loses_no_accepted_run(tmp_path, record_counts):
    from comfyq.devtools.local_receiver import WebhookReceiver

    if server_binary() is None:
        pytest.skip("neither redis-server nor valkey-server is installed")
    log = tmp_path / "fleet.log"
    with SentinelGroup(tmp_path / "redis") as group, WebhookReceiver() as receiver:
        env = fleet_env(group.url, tmp_path, COMFYQ_LOST_MESSAGE_SECONDS="3",
                        COMFYQ_LEASE_TTL_SECONDS="3", COMFYQ_MAX_ATTEMPTS="10",
                        # The executions' log itself must survive the failover to be counted.
                        COMFYQ_TEST_EXECUTIONS_REPLICAS="1")
        client = client_for(env, outage_retry_seconds=60)
        with running_fleet(["A100", "A100"], env, log):
            with PacedSubmitter(client, pause=0.05, webhook=receiver.url) as submitter:
                wait_until(lambda: len(submitter.accepted) >= RUNS_EACH_SIDE, timeout=60)
                killed = group.kill_primary()
                begun_before_kill = submitter.attempted
                promoted = group.wait_failover()
                wait_until(lambda: len(submitter.accepted) >= begun_before_kill + RUNS_EACH_SIDE,
                           timeout=120)
            accepted = list(submitter.accepted.values())
            runs = {run_id: final_or_none(client, run_id, 120) for run_id in accepted}
            finished = [run_id for run_id, run in runs.items() if run is not None
                        and run.status in FINAL_STATUSES]
            try:
                receiver.wait_for(lambda ds: {d.json()["run_id"] for d in ds
                                              if d.json()["status"] in {"success", "failed"}}
                                  >= set(finished), 60)
            except AssertionError:
                pass  # counted below
        records = redis_client(group.url)
        overlaps = sum(overlapping_executions(executions(records, run_id), {})
                       for run_id in accepted)
        promoted_replica = group.primary()[1] == group.replica_port
    final_hooks = {d.json()["run_id"] for d in receiver.accepted()
                   if d.json()["status"] in {"success", "failed"}}
    lost = sum(run is None for run in runs.values())
    successes = sum(run is not None and run.status == RunStatus.SUCCESS for run in runs.values())
    longest_submit = max(end - began for began, end in submitter.times.values())
    record_counts(promoted_replica=promoted_replica, accepted=len(accepted), refused=len(submitter.refused),
                  lost=lost, success=successes, overlapping_executions=overlaps,
                  webhooks_lost=len(set(finished) - final_hooks),
                  failover_seconds=round(promoted - killed, 2),
                  longest_submit_seconds=round(longest_submit, 2))
    assert promoted_replica  # the failover did happen
    assert submitter.refused == []
    assert lost == 0
    assert successes == len(accepted)
    assert overlaps == 0
    assert set(finished) <= final_hooks
