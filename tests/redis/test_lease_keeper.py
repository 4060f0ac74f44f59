"""One thread per process keeps every lease it holds alive, and notices one that is lost."""

from __future__ import annotations

import threading
import time

from comfyq.redis import keys
from comfyq.runs.lease import LeaseKeeper, LeaseLost, RunLease
from tests.ops_helpers import wait_until

TTL_SECONDS = 0.3


def taken(client, run_id: str) -> RunLease:
    lease = RunLease(client, run_id, "worker@test", TTL_SECONDS)
    assert client.set(keys.run_lease(run_id), lease.token, nx=True, px=lease.ttl_ms)
    return lease


def test_leases_outlive_their_ttl_while_kept_and_expire_once_released(fresh_redis):
    keeper = LeaseKeeper()
    leases = [taken(fresh_redis, f"run-{index}") for index in range(3)]
    for lease in leases:
        lease.start_heartbeat(keeper)
    time.sleep(TTL_SECONDS * 4)
    assert [fresh_redis.get(lease.key) for lease in leases] == [lease.token for lease in leases]
    assert [thread.name for thread in threading.enumerate()].count("comfyq-lease-keeper") >= 1

    leases[0].stop_heartbeat()
    wait_until(lambda: fresh_redis.get(leases[0].key) is None, timeout=TTL_SECONDS * 5)
    assert fresh_redis.get(leases[1].key) == leases[1].token
    for lease in leases[1:]:
        lease.release()
    assert fresh_redis.get(leases[1].key) is None and fresh_redis.get(leases[2].key) is None


def test_a_lease_taken_over_is_reported_lost_and_no_longer_renewed(fresh_redis):
    keeper = LeaseKeeper()
    lease = taken(fresh_redis, "run-x")
    lease.start_heartbeat(keeper)
    fresh_redis.set(lease.key, "another-worker:token", px=60_000)
    wait_until(lambda: lease._lost.is_set(), timeout=TTL_SECONDS * 5)
    try:
        lease.check()
    except LeaseLost:
        pass
    else:
        raise AssertionError("check() did not raise LeaseLost")
    assert fresh_redis.get(lease.key) == "another-worker:token"
    assert fresh_redis.pttl(lease.key) > 50_000  # the other worker's lease was left alone
    lease.release()
    assert fresh_redis.get(lease.key) == "another-worker:token"
