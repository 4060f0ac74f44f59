"""Fault tests: workers killed, Redis restarted, visibility timeouts, cancels, SIGTERM.

Each test starts its own real ``comfyq worker`` fleet against its own Redis database, injects the
fault, prints its counts and asserts them. Runs execute ``FaultTestSlowStep`` (a custom node pack
in tests/data/fault_nodes) that records every execution with its pid, so overlapping executions of
one run would be seen.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from comfyq import Client, RunStatus
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.paths import FAULT_NODES

EXECUTIONS = "comfyq-test:executions:{}"

pytestmark = pytest.mark.slow

#: Kills in the SIGKILL test: enough to hit every stage of a run, few enough to end in time.
MAX_KILLS = 10


def slow_request(seconds: float, tag: str = "", **fields) -> dict:
    graph = {"1": {"class_type": "FaultTestSlowStep", "inputs": {"seconds": seconds, "tag": tag}}}
    return {"workflow_id": "fault-test", "workflow_api_json": graph, "gpu": "A100", **fields}


def fleet_env(url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "COMFYQ_REDIS_URL": url,
        "COMFYQ_GPU_TYPES": "A100,T4",
        "COMFYQ_DEFAULT_GPU": "A100",
        "COMFYQ_DATA_DIR": str(data_dir),
        "COMFYQ_CUSTOM_NODES_DIRS": str(FAULT_NODES),
        "COMFYQ_LEASE_TTL_SECONDS": "1.5",
        "COMFYQ_MAINTENANCE_INTERVAL_SECONDS": "0.5",
        "COMFYQ_PROGRESS_INTERVAL_SECONDS": "0",
        "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
    }
    env.update(overrides)
    return env


def client_for(env: dict[str, str]) -> Client:
    settings = Settings(
        redis_url=env["COMFYQ_REDIS_URL"], gpu_types=env["COMFYQ_GPU_TYPES"].split(","),
        default_gpu="A100", data_dir=Path(env["COMFYQ_DATA_DIR"]),
        lease_ttl_seconds=float(env["COMFYQ_LEASE_TTL_SECONDS"]))
    return Client(settings=settings,
                  webhook_settings=WebhookSettings(webhook_allow_loopback=True))


@contextlib.contextmanager
def running_fleet(gpus: list[str], env: dict[str, str], log: Path, *args: str,
                  callbacks: bool = True) -> Iterator[LocalFleet]:
    fleet = LocalFleet(gpus, env, extra_args=args, log_path=str(log))
    fleet.start()
    try:
        fleet.wait_ready(redis.Redis.from_url(env["COMFYQ_REDIS_URL"], decode_responses=True),
                         timeout=90, callbacks=callbacks)
        yield fleet
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        fleet.stop()


@pytest.fixture
def database(fresh_redis_url) -> str:
    """A Redis database of the session server for this test alone."""
    return fresh_redis_url


def executions(client: redis.Redis, run_id: str) -> list[tuple[str, int, int, float]]:
    entries = client.lrange(EXECUTIONS.format(run_id), 0, -1)
    parsed = []
    for entry in entries:
        kind, pid, group, moment = entry.split(":")
        parsed.append((kind, int(pid), int(group), float(moment)))
    return parsed


def wait_all_final(client: Client, run_ids: list[str], timeout: float) -> dict[str, RunStatus]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, RunStatus] = {}
    for run_id in run_ids:
        run = client.wait(run_id, timeout=max(0.1, deadline - time.monotonic()))
        statuses[run_id] = run.status
    return statuses


def overlapping_executions(entries, kill_times: dict[int, float]) -> int:
    """Executions of one run that started before an earlier one had ended (or died)."""
    intervals = []
    open_starts: dict[int, float] = {}
    for kind, pid, group, moment in entries:
        if kind == "start":
            open_starts[pid] = moment
        else:
            intervals.append((open_starts.pop(pid), moment))
    for pid, started in open_starts.items():
        died = min((t for p, t in kill_times.items() if p == pid and t >= started),
                   default=float("inf"))
        intervals.append((started, died))
    intervals.sort()
    overlaps = [(before, after) for before, after in itertools.pairwise(intervals)
                if after[0] < before[1]]
    for before, after in overlaps:
        print(f"overlap: {before} then {after} in {entries} (kills {kill_times})")
    return len(overlaps)


def pool_children(parent_pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent_pid:
                children.append(int(entry.name))
    return children


def test_sigkilled_workers_lose_no_run_and_never_run_one_twice_at_once(database, tmp_path):
    # A worker killed after taking a message but before claiming its run leaves the message
    # unacked: the maintenance re-publishes such a run after COMFYQ_LOST_MESSAGE_SECONDS.
    # Leases of 3 s (heartbeat every second): short enough to recover quickly from the kills,
    # long enough that a live worker starved of CPU on this busy machine keeps its lease.
    env = fleet_env(database, tmp_path, COMFYQ_MAX_ATTEMPTS="20", COMFYQ_LOST_MESSAGE_SECONDS="2",
                    COMFYQ_LEASE_TTL_SECONDS="3")
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    kill_times: dict[int, float] = {}
    kills = {"worker": 0, "pool process": 0}
    with running_fleet(["A100", "A100"], env, tmp_path / "fleet.log") as fleet:
        run_ids = [client.submit(slow_request(0.3, tag=str(i))) for i in range(60)]
        stop = threading.Event()

        def killer() -> None:
            rounds = 0
            while not stop.wait(1.5) and rounds < MAX_KILLS:
                workers = [w for w in fleet.workers(plain) if w.get("gpu_type") == "A100"]
                if not workers:
                    continue
                victim = random.choice(workers)
                rounds += 1
                targets = pool_children(victim["pid"]) if rounds % 2 else []
                if targets:  # the pool process alone: Celery's reject-on-worker-lost path
                    for pid in targets:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    kills["pool process"] += 1
                else:  # the whole worker, as in a host loss
                    targets = [victim["pid"], *pool_children(victim["pid"])]
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(victim["pid"], signal.SIGKILL)
                    kills["worker"] += 1
                # Taken after the kill: no execution of these processes goes on past it.
                moment = time.time()
                for pid in targets:
                    kill_times[pid] = moment

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            statuses = wait_all_final(client, run_ids, timeout=50)
        finally:
            stop.set()
            thread.join()
    records = {run_id: client.get_run(run_id) for run_id in run_ids}
    all_executions = {run_id: executions(plain, run_id) for run_id in run_ids}
    started = sum(1 for entries in all_executions.values() for e in entries if e[0] == "start")
    completed = sum(1 for entries in all_executions.values() for e in entries if e[0] == "end")
    overlaps = sum(overlapping_executions(e, kill_times) for e in all_executions.values())
    retried = sum(1 for run in records.values() if run.attempts > 1)
    print(f"\nruns={len(run_ids)} final={len(statuses)} success="
          f"{sum(s == RunStatus.SUCCESS for s in statuses.values())} kills={kills} "
          f"executions started={started} completed={completed} runs retried={retried} "
          f"overlapping executions={overlaps}")
    assert sum(kills.values()) >= 4
    assert len(statuses) == 60
    assert set(statuses.values()) == {RunStatus.SUCCESS}
    assert overlaps == 0
    # Every run's node completed; a second completion only ever follows a crash (the worker died
    # after the node finished, before the run was recorded final), never alongside the first.
    for run_id, entries in all_executions.items():
        completions = sum(1 for e in entries if e[0] == "end")
        assert completions >= 1
        assert completions == 1 or records[run_id].attempts > 1


def test_redis_restart_mid_stream_loses_no_accepted_run(tmp_path):
    from comfyq.devtools.embedded_redis import start_embedded_redis

    server = start_embedded_redis(data_dir=tmp_path / "valkey", appendonly="yes",
                                  appendfsync="always", save="")
    port = server.port
    url = f"redis://127.0.0.1:{port}/0"
    env = fleet_env(url, tmp_path, COMFYQ_LOST_MESSAGE_SECONDS="3")
    client = client_for(env)
    accepted: list[str] = []
    refused: list[str] = []
    try:
        with running_fleet(["A100"], env, tmp_path / "fleet.log"):
            stop = threading.Event()

            def submitter() -> None:
                index = 0
                while not stop.is_set():
                    index += 1
                    try:
                        accepted.append(client.submit(slow_request(0.02, tag=str(index))))
                    except Exception as error:  # noqa: BLE001 - counting refusals is the point
                        refused.append(f"{type(error).__name__}: {str(error)[:60]}")
                    time.sleep(0.03)

            thread = threading.Thread(target=submitter, daemon=True)
            thread.start()
            time.sleep(2.0)
            server.stop()
            time.sleep(1.5)
            server = start_embedded_redis(port=port, data_dir=tmp_path / "valkey",
                                          appendonly="yes", appendfsync="always", save="")
            time.sleep(2.5)
            stop.set()
            thread.join()
            statuses = wait_all_final(client, accepted, timeout=45)
    finally:
        server.stop()
    print(f"\nsubmits accepted={len(accepted)} refused={len(refused)} "
          f"({sorted(set(refused))}) final={len(statuses)} success="
          f"{sum(s == RunStatus.SUCCESS for s in statuses.values())}")
    assert len(accepted) > 50
    assert len(statuses) == len(accepted)
    assert set(statuses.values()) == {RunStatus.SUCCESS}


def test_run_longer_than_visibility_timeout_runs_once(database, tmp_path):
    env = fleet_env(database, tmp_path, COMFYQ_BROKER_VISIBILITY_TIMEOUT_SECONDS="1")
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    with running_fleet(["A100", "A100"], env, tmp_path / "fleet.log", callbacks=False):
        run_id = client.submit(slow_request(5.0))
        run = client.wait(run_id, timeout=40)
        time.sleep(1.5)  # a redelivered copy would have started by now
    entries = executions(plain, run_id)
    starts = sum(1 for e in entries if e[0] == "start")
    redeliveries_dropped = (tmp_path / "fleet.log").read_text().count(
        f"run {run_id} is executing under another worker's live lease")
    print(f"\nvisibility timeout 1 s, run 5 s: status={run.status.value} executions={starts} "
          f"attempts={run.attempts} redeliveries dropped={redeliveries_dropped}")
    assert redeliveries_dropped >= 1  # the broker did hand the running run out again
    assert run.status == RunStatus.SUCCESS
    assert starts == 1 and run.attempts == 1


def wait_for_status(client: Client, run_id: str, wanted: set[RunStatus], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.get_run(run_id).status not in wanted:
        assert time.monotonic() < deadline, client.get_run(run_id).status
        time.sleep(0.02)


def test_cancel_at_each_stage(database, tmp_path):
    from comfyq.devtools.local_receiver import WebhookReceiver

    env = fleet_env(database, tmp_path)
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    outcomes = {}
    with running_fleet(["A100"], env, tmp_path / "fleet.log"), WebhookReceiver() as receiver:
        # queued: a T4 run waits (no T4 worker), is cancelled, and never starts later
        queued = client.submit(slow_request(0.1, gpu="T4", webhook=receiver.url))
        outcomes["queued"] = client.cancel(queued)
        # as soon as it starts, and mid-node
        early = client.submit(slow_request(3.0, webhook=receiver.url))
        wait_for_status(client, early, {RunStatus.STARTED, RunStatus.RUNNING}, 20)
        outcomes["started"] = client.cancel(early)
        middle = client.submit(slow_request(5.0, webhook=receiver.url))
        deadline = time.monotonic() + 20
        while not executions(plain, middle) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        asked = time.monotonic()
        outcomes["mid-node"] = client.cancel(middle)
        middle_run = client.wait(middle, timeout=20)
        stop_latency = time.monotonic() - asked
        early_run = client.wait(early, timeout=20)
        # finished, with its final webhook still on its way: a clear no-op
        done = client.submit(slow_request(0.05, webhook=receiver.url))
        client.wait(done, timeout=20)
        outcomes["finished"] = client.cancel(done)
        receiver.wait_for(lambda ds: {d.json()["run_id"] for d in ds} >= {queued, early, middle,
                                                                          done}, 20)
    with running_fleet(["T4"], env, tmp_path / "fleet-t4.log", "--no-beat", "--no-callbacks",
                       callbacks=False):
        time.sleep(1.0)  # the T4 worker has taken the cancelled run's message by now
        queued_run = client.get_run(queued)
    finals = {d.json()["run_id"]: d.json()["status"] for d in receiver.accepted()}
    print(f"\ncancel outcomes: { {k: (v.cancelled, v.status.value) for k, v in outcomes.items()} }"
          f" mid-node stop latency {stop_latency:.2f} s; final webhooks {sorted(finals.values())}")
    assert queued_run.status == RunStatus.CANCELLED and queued_run.started_at is None
    assert executions(plain, queued) == []
    assert early_run.status == RunStatus.CANCELLED
    assert middle_run.status == RunStatus.CANCELLED and stop_latency < 2.0
    assert [e[0] for e in executions(plain, middle)] == ["start"]
    assert not outcomes["finished"].cancelled and "already finished" in outcomes["finished"].message
    assert finals == {queued: "cancelled", early: "cancelled", middle: "cancelled",
                      done: "success"}


def test_sigterm_lets_the_run_finish_within_grace_or_requeues_it(database, tmp_path):
    env = fleet_env(database, tmp_path)
    client = client_for(env)
    # Within grace: the run finishes on the stopping worker.
    with running_fleet(["A100"], env, tmp_path / "a.log", "--grace", "15") as fleet:
        graceful = client.submit(slow_request(2.0))
        wait_for_status(client, graceful, {RunStatus.RUNNING}, 20)
        fleet.process.send_signal(signal.SIGTERM)
        fleet.process.wait(timeout=30)
    graceful_run = client.get_run(graceful)
    # Past grace: the worker is killed, the run is re-queued and finished by another worker.
    with running_fleet(["A100"], env, tmp_path / "b.log", "--grace", "0.5") as fleet:
        cut = client.submit(slow_request(4.0))
        wait_for_status(client, cut, {RunStatus.RUNNING}, 20)
        first_worker = client.get_run(cut).worker
        fleet.process.send_signal(signal.SIGTERM)
        fleet.process.wait(timeout=30)
    with running_fleet(["A100"], env, tmp_path / "c.log"):
        cut_run = client.wait(cut, timeout=40)
    print(f"\nwithin grace: {graceful_run.status.value} attempts={graceful_run.attempts}; "
          f"past grace: {cut_run.status.value} attempts={cut_run.attempts} "
          f"first worker={first_worker} finished by={cut_run.worker}")
    assert graceful_run.status == RunStatus.SUCCESS and graceful_run.attempts == 1
    assert cut_run.status == RunStatus.SUCCESS and cut_run.attempts == 2
    assert cut_run.worker != first_worker
