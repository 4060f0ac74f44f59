"""Fault tests: workers killed, Redis restarted, visibility timeouts, cancels, SIGTERM.

Each test starts its own real ``comfyq worker`` fleet against its own Redis database, injects the
fault, asserts that it landed, and asserts its counts (kept in the test report and listed at the
end of the run). Runs execute ``FaultTestSlowStep`` (a custom node pack
in tests/data/fault_nodes) that records every execution with its pid, so overlapping executions of
one run would be seen.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from comfyq import Client, RunStatus
from comfyq.devtools.local_fleet import LocalFleet
from comfyq.redis.connection import redis_client
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.e2e.processes import gpu_workers, pool_processes, worker_name
from tests.ops_helpers import wait_until
from tests.paths import FAULT_NODES

EXECUTIONS = "comfyq-test:executions:{}"

pytestmark = pytest.mark.slow


def slow_request(seconds: float, tag: str = "", **fields) -> dict:
    graph = {"1": {"class_type": "FaultTestSlowStep", "inputs": {"seconds": seconds, "tag": tag}}}
    return {"workflow_id": "fault-test", "workflow_api_json": graph, "gpu": "A100", **fields}


def fleet_env(url: str, data_dir: Path, broker_url: str | None = None,
              **overrides: str) -> dict[str, str]:
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
    if broker_url:
        env["COMFYQ_BROKER_URL"] = broker_url
    env.update(overrides)
    return env


def client_for(env: dict[str, str], **overrides: Any) -> Client:
    settings = Settings(
        redis_url=env["COMFYQ_REDIS_URL"], broker_url=env.get("COMFYQ_BROKER_URL"),
        gpu_types=env["COMFYQ_GPU_TYPES"].split(","),
        default_gpu="A100", data_dir=Path(env["COMFYQ_DATA_DIR"]),
        lease_ttl_seconds=float(env["COMFYQ_LEASE_TTL_SECONDS"]), **overrides)
    return Client(settings=settings,
                  webhook_settings=WebhookSettings(webhook_allow_loopback=True))


@contextlib.contextmanager
def running_fleet(gpus: list[str], env: dict[str, str], log: Path, *args: str,
                  callbacks: bool = True) -> Iterator[LocalFleet]:
    fleet = LocalFleet(gpus, env, extra_args=args, log_path=str(log))
    fleet.start()
    try:
        fleet.wait_ready(redis_client(env["COMFYQ_REDIS_URL"]), timeout=90, callbacks=callbacks)
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


#: Kinds of kill in the SIGKILL test, taken in turn: a pool process alone (Celery's
#: reject-on-worker-lost path) and a whole worker with its pool (as in a host loss).
KILL_KINDS = ("pool process", "worker")
#: Kills that must land in the SIGKILL test: enough to hit every stage of a run, few enough to
#: end in time.
MAX_KILLS = 10
#: How the reaping parent logs each kind of SIGKILLed child: billiard for a pool process
#: (by pid), the supervisor for a worker (by name).
POOL_PROCESS_KILLED = "pid:{pid} exited with 'signal 9 (SIGKILL)'"
WORKER_KILLED = "{name} exited with code -9 "


class FleetKiller:
    """SIGKILLs live A100 worker processes of ``fleet``, one kill every ``pause`` seconds.

    A kill counts once it landed: each victim was alive just before, is gone after, and the
    parent that reaped it logged its death by signal 9 (``log``).
    """

    def __init__(self, fleet: LocalFleet, log: Path, pause: float = 1.5) -> None:
        self.fleet, self.log, self.pause = fleet, log, pause
        self.landed: dict[str, int] = dict.fromkeys(KILL_KINDS, 0)
        self.missed = 0
        #: pid -> when it was killed (taken after the kill: nothing of it runs on past that).
        self.kill_times: dict[int, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FleetKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self.stop.wait(self.pause) and sum(self.landed.values()) < MAX_KILLS:
                self.kill_one(KILL_KINDS[sum(self.landed.values()) % len(KILL_KINDS)])
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def kill_one(self, kind: str) -> None:
        workers = gpu_workers(self.fleet.process.pid, "A100")
        if kind == "pool process":
            pools = [(worker, pool_processes(worker)) for worker in workers]
            pools = [(worker, children) for worker, children in pools if children]
            if not pools:
                return
            _, victims = random.choice(pools)
            proofs = [POOL_PROCESS_KILLED.format(pid=victim.pid) for victim in victims]
        else:
            workers = [worker for worker in workers if worker.group() == worker.pid]
            if not workers:
                return
            worker = random.choice(workers)
            victims = [worker, *pool_processes(worker)]
            proofs = [WORKER_KILLED.format(name=worker_name(worker))]
        logged_before = [self.log_text().count(proof) for proof in proofs]
        if not all(victim.alive() for victim in victims):
            return
        if kind == "pool process":
            for victim in victims:
                os.kill(victim.pid, signal.SIGKILL)
        else:
            os.killpg(victims[0].pid, signal.SIGKILL)
        moment = time.time()
        for victim in victims:
            self.kill_times[victim.pid] = moment

        def landed() -> bool:
            return not any(victim.alive() for victim in victims) and all(
                self.log_text().count(proof) > before
                for proof, before in zip(proofs, logged_before, strict=True))

        try:
            wait_until(landed, timeout=15)
        except AssertionError:
            self.missed += 1
        else:
            self.landed[kind] += 1

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def test_sigkilled_workers_lose_no_run_and_never_run_one_twice_at_once(database, broker_url,
                                                                         tmp_path, record_counts):
    # A worker killed after taking a message but before claiming its run leaves the message
    # unacked: the maintenance re-publishes such a run after COMFYQ_LOST_MESSAGE_SECONDS.
    # Leases of 3 s (heartbeat every second): short enough to recover quickly from the kills,
    # long enough that a live worker starved of CPU on this busy machine keeps its lease.
    env = fleet_env(database, tmp_path, broker_url, COMFYQ_MAX_ATTEMPTS="20",
                    COMFYQ_LOST_MESSAGE_SECONDS="2", COMFYQ_LEASE_TTL_SECONDS="3")
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    log = tmp_path / "fleet.log"
    with running_fleet(["A100", "A100"], env, log) as fleet:
        run_ids = [client.submit(slow_request(0.3, tag=str(i))) for i in range(60)]
        with FleetKiller(fleet, log) as killer:
            statuses = wait_all_final(client, run_ids, timeout=90)
    records = {run_id: client.get_run(run_id) for run_id in run_ids}
    all_executions = {run_id: executions(plain, run_id) for run_id in run_ids}
    started = sum(1 for entries in all_executions.values() for e in entries if e[0] == "start")
    completed = sum(1 for entries in all_executions.values() for e in entries if e[0] == "end")
    overlaps = sum(overlapping_executions(e, killer.kill_times) for e in all_executions.values())
    retried = sum(1 for run in records.values() if run.attempts > 1)
    successes = sum(s == RunStatus.SUCCESS for s in statuses.values())
    record_counts(runs=len(run_ids), final=len(statuses), success=successes,
                  pool_process_kills=killer.landed["pool process"],
                  worker_kills=killer.landed["worker"], kills_missed=killer.missed,
                  executions_started=started, executions_completed=completed,
                  runs_retried=retried, overlapping_executions=overlaps)
    assert killer.error is None, killer.error
    assert killer.landed["pool process"] > 0 and killer.landed["worker"] > 0, killer.landed
    assert killer.missed == 0  # every victim was alive, and died of its kill
    assert len(statuses) == len(run_ids)
    assert successes == len(run_ids), statuses
    assert overlaps == 0
    # The kills cut executions short, and the runs they cut were executed again.
    assert started > completed
    assert retried > 0
    # Every run's node completed; a second completion only ever follows a crash (the worker died
    # after the node finished, before the run was recorded final), never alongside the first.
    for run_id, entries in all_executions.items():
        completions = sum(1 for e in entries if e[0] == "end")
        assert completions >= 1
        assert completions == 1 or records[run_id].attempts > 1


class PacedSubmitter:
    """Submits a short run every ``pause`` seconds on a thread, counting what was accepted and
    what was refused; ``attempted`` counts the submits begun."""

    def __init__(self, client: Client, pause: float = 0.03, **fields: Any) -> None:
        self.client, self.pause, self.fields = client, pause, fields
        self.attempted = 0
        self.accepted: dict[int, str] = {}
        self.refused: list[str] = []
        #: (began, ended) of each submit, by its number: how long each one waited.
        self.times: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        # Held around each submit: pausing takes it, so no submit is in flight while paused.
        self._turn = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PacedSubmitter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._turn:
                self._submit_one()
            self._stop.wait(self.pause)

    def _submit_one(self) -> None:
        self.attempted += 1
        number = self.attempted
        began = time.monotonic()
        try:
            self.accepted[number] = self.client.submit(slow_request(0.02, tag=str(number),
                                                                    **self.fields))
        except Exception as error:  # noqa: BLE001 - counting refusals is the point
            self.refused.append(f"{type(error).__name__}: {str(error)[:60]}")
        self.times[number] = (began, time.monotonic())

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No submit is in flight inside the block; the next one begins after it."""
        with self._turn:
            yield

    def settled(self) -> int:
        """Submits that ended, accepted or refused."""
        return len(self.accepted) + len(self.refused)


def test_redis_restart_mid_stream_refuses_no_submit_and_loses_no_accepted_run(tmp_path,
                                                                                 record_counts):
    from comfyq.devtools.embedded_redis import start_embedded_redis

    def start_valkey(port: int | None = None):
        return start_embedded_redis(port=port, data_dir=tmp_path / "valkey", appendonly="yes",
                                    appendfsync="always", save="")

    server = start_valkey()
    port = server.port
    url = f"redis://127.0.0.1:{port}/0"
    env = fleet_env(url, tmp_path, COMFYQ_LOST_MESSAGE_SECONDS="3")
    # Generous: the test is that a submit waits the outage out, not how fast a busy two-core
    # machine restarts a server (the default budget is 10 s).
    client = client_for(env, outage_retry_seconds=120)
    try:
        with running_fleet(["A100"], env, tmp_path / "fleet.log"):
            with PacedSubmitter(client) as submitter:
                wait_until(lambda: len(submitter.accepted) >= 20, timeout=60)
                first_server = redis.Redis.from_url(url).info("server")["run_id"]
                with submitter.paused():
                    server.stop()
                    begun_before_outage = submitter.attempted
                # A submit begun while the server is down, and still waiting when it is back.
                wait_until(lambda: submitter.attempted > begun_before_outage, timeout=30)
                during_outage = submitter.attempted
                settled_during_outage = submitter.settled()
                server = start_valkey(port)
                restarted_server = redis.Redis.from_url(url).info("server")["run_id"]
                wait_until(lambda: len(submitter.accepted) >= during_outage + 20, timeout=60)
            accepted = list(submitter.accepted.values())
            statuses = wait_all_final(client, accepted, timeout=60)
    finally:
        server.stop()
    successes = sum(s == RunStatus.SUCCESS for s in statuses.values())
    record_counts(server_restarted=restarted_server != first_server,
                  submits_accepted=len(accepted), refused=len(submitter.refused),
                  submit_waited_through_restart=during_outage in submitter.accepted,
                  final=len(statuses), success=successes)
    assert restarted_server != first_server  # the server did restart, with the data on disk
    assert submitter.refused == []
    assert settled_during_outage < during_outage  # that submit was still waiting for Redis ...
    assert during_outage in submitter.accepted  # ... and rode the restart out
    assert len(accepted) == submitter.attempted >= 40
    assert len(statuses) == len(accepted)
    assert successes == len(accepted)


def test_rabbitmq_crash_mid_stream_refuses_no_submit_and_loses_no_accepted_run(database, tmp_path,
                                                                                record_counts):
    from tests.rabbitmq import RabbitNode

    if not shutil.which("rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed (the test crashes a node of its own: the "
                    "machine's shared one serves other tests)")
    with RabbitNode() as node:
        env = fleet_env(database, tmp_path, node.url, COMFYQ_LOST_MESSAGE_SECONDS="3")
        client = client_for(env, outage_retry_seconds=120)
        with running_fleet(["A100"], env, tmp_path / "fleet.log"):
            with PacedSubmitter(client) as submitter:
                wait_until(lambda: len(submitter.accepted) >= 20, timeout=60)
                with submitter.paused():
                    node.kill()
                    begun_before_outage = submitter.attempted
                wait_until(lambda: submitter.attempted > begun_before_outage, timeout=30)
                during_outage = submitter.attempted
                settled_during_outage = submitter.settled()
                node.start()
                wait_until(lambda: len(submitter.accepted) >= during_outage + 20, timeout=90)
            accepted = list(submitter.accepted.values())
            statuses = wait_all_final(client, accepted, timeout=90)
    plain = redis.Redis.from_url(database, decode_responses=True)
    starts = {run_id: sum(1 for e in executions(plain, run_id) if e[0] == "start")
              for run_id in accepted}
    successes = sum(s == RunStatus.SUCCESS for s in statuses.values())
    record_counts(submits_accepted=len(accepted), refused=len(submitter.refused),
                  submit_waited_through_restart=during_outage in submitter.accepted,
                  final=len(statuses), success=successes,
                  executed_more_than_once=sum(n > 1 for n in starts.values()))
    assert submitter.refused == []
    assert settled_during_outage < during_outage  # that submit was still waiting for RabbitMQ ...
    assert during_outage in submitter.accepted  # ... and rode the crash out
    assert len(accepted) == submitter.attempted >= 40
    assert successes == len(accepted)


def test_run_longer_than_visibility_timeout_runs_once(database, tmp_path, record_counts):
    env = fleet_env(database, tmp_path, COMFYQ_BROKER_VISIBILITY_TIMEOUT_SECONDS="1")
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    with running_fleet(["A100", "A100"], env, tmp_path / "fleet.log", callbacks=False):
        run_id = client.submit(slow_request(5.0))
        run = client.wait(run_id, timeout=40)
        # Every copy of its message the broker handed out again has been taken and dropped:
        # none waits in the queue or is held unacknowledged, so none can start later.
        wait_until(lambda: run_id not in client.broker.waiting_run_ids("A100")
                   and run_id not in client.broker.held_run_ids(0), timeout=30)
    entries = executions(plain, run_id)
    starts = sum(1 for e in entries if e[0] == "start")
    redeliveries_dropped = (tmp_path / "fleet.log").read_text().count(
        f"run {run_id} is executing under another worker's live lease")
    record_counts(status=run.status.value, executions=starts, attempts=run.attempts,
                  redeliveries_dropped=redeliveries_dropped)
    assert redeliveries_dropped >= 1  # the broker did hand the running run out again
    assert run.status == RunStatus.SUCCESS
    assert starts == 1 and run.attempts == 1


#: RabbitMQ's consumer_timeout in the long-run test: far shorter than the run.
SHORT_CONSUMER_TIMEOUT_MS = 2000


def test_run_longer_than_rabbitmq_consumer_timeout_ends_once(database, tmp_path, record_counts):
    from comfyq.devtools.local_receiver import WebhookReceiver
    from tests.rabbitmq import RabbitNode

    if not shutil.which("rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed (the test starts a node of its own, since "
                    "consumer_timeout is a server-wide setting before RabbitMQ 3.12)")
    log = tmp_path / "fleet.log"
    with RabbitNode(SHORT_CONSUMER_TIMEOUT_MS) as node:
        env = fleet_env(database, tmp_path, node.url)
        client = client_for(env)
        plain = redis.Redis.from_url(database, decode_responses=True)
        with WebhookReceiver() as receiver, running_fleet(["A100"], env, log):
            run_id = client.submit(slow_request(4 * SHORT_CONSUMER_TIMEOUT_MS / 1000,
                                                webhook=receiver.url))
            run = client.wait(run_id, timeout=60)
            # The worker serves the next run as usual, and no copy of the long run's message
            # is left to start it again.
            after = client.wait(client.submit(slow_request(0.1)), timeout=60)
            wait_until(lambda: run_id not in client.broker.waiting_run_ids("A100"), timeout=30)
            receiver.wait_for(lambda ds: any(d.json()["run_id"] == run_id for d in ds), 20)
            time.sleep(1)  # a second final webhook, if one were sent, would arrive by now
            finals = [d for d in receiver.accepted() if d.json()["run_id"] == run_id]
    starts = sum(1 for e in executions(plain, run_id) if e[0] == "start")
    timeouts = log.read_text(errors="replace").count("delivery acknowledgement on channel")
    record_counts(status=run.status.value, executions=starts, attempts=run.attempts,
                  channel_timeouts=timeouts, final_webhooks=len(finals),
                  next_run=after.status.value)
    assert timeouts >= 1  # RabbitMQ did close the channel of the worker holding the run
    assert run.status == RunStatus.SUCCESS and starts == 1 and run.attempts == 1
    assert len(finals) == 1 and finals[0].json()["status"] == "success"
    assert after.status == RunStatus.SUCCESS


def test_cancel_at_each_stage(database, broker_url, tmp_path, record_counts):
    from comfyq.devtools.local_receiver import WebhookReceiver

    env = fleet_env(database, tmp_path, broker_url)
    client = client_for(env)
    plain = redis.Redis.from_url(database, decode_responses=True)
    outcomes = {}
    with running_fleet(["A100"], env, tmp_path / "fleet.log"), WebhookReceiver() as receiver:
        # queued: a T4 run waits (no T4 worker yet), is cancelled, and never starts later
        queued = client.submit(slow_request(0.1, gpu="T4", webhook=receiver.url))
        outcomes["queued"] = client.cancel(queued)
        # as soon as it starts, and mid-node
        early = client.submit(slow_request(3.0, webhook=receiver.url))
        wait_until(lambda: client.get_run(early).status in {RunStatus.STARTED,
                                                            RunStatus.RUNNING}, timeout=20)
        outcomes["started"] = client.cancel(early)
        middle = client.submit(slow_request(5.0, webhook=receiver.url))
        wait_until(lambda: executions(plain, middle) and client.get_run(middle).progress > 0,
                   timeout=20, interval=0.02)
        outcomes["mid-node"] = client.cancel(middle)
        middle_run = client.wait(middle, timeout=20)
        early_run = client.wait(early, timeout=20)
        # finished, with its final webhook still on its way: a clear no-op
        done = client.submit(slow_request(0.05, webhook=receiver.url))
        client.wait(done, timeout=20)
        outcomes["finished"] = client.cancel(done)
        receiver.wait_for(lambda ds: {d.json()["run_id"] for d in ds} >= {queued, early, middle,
                                                                          done}, 20)
    # The cancelled run's message still waits for a T4 worker; one comes and takes it.
    assert queued in client.broker.waiting_run_ids("T4")
    with running_fleet(["T4"], env, tmp_path / "fleet-t4.log", "--no-beat", "--no-callbacks",
                       callbacks=False):
        wait_until(lambda: queued not in client.broker.waiting_run_ids("T4")
                   and queued not in client.broker.held_run_ids(0), timeout=30)
        queued_run = client.get_run(queued)
    finals = {d.json()["run_id"]: d.json()["status"] for d in receiver.accepted()}
    record_counts(**{stage.replace("-", "_"): f"{outcome.cancelled}/{outcome.status.value}"
                     for stage, outcome in outcomes.items()},
                  final_webhooks="/".join(sorted(finals.values())))
    assert queued_run.status == RunStatus.CANCELLED and queued_run.started_at is None
    assert executions(plain, queued) == []
    assert early_run.status == RunStatus.CANCELLED
    # Stopped inside its 5 s node: the node started and the cancel stopped it, never completed.
    assert middle_run.status == RunStatus.CANCELLED and middle_run.progress < 1
    assert [e[0] for e in executions(plain, middle)] == ["start", "abort"]
    assert all(outcomes[stage].cancelled for stage in ("queued", "started", "mid-node"))
    assert outcomes["queued"].status == RunStatus.CANCELLED
    assert not outcomes["finished"].cancelled and "already finished" in outcomes["finished"].message
    assert finals == {queued: "cancelled", early: "cancelled", middle: "cancelled",
                      done: "success"}


def test_sigterm_lets_the_run_finish_within_grace_or_requeues_it(database, tmp_path,
                                                                 record_counts):
    env = fleet_env(database, tmp_path)
    client = client_for(env)

    def wait_running(run_id: str) -> None:
        wait_until(lambda: client.get_run(run_id).status == RunStatus.RUNNING, timeout=20,
                   interval=0.02)

    # Within grace: the run finishes on the stopping worker.
    with running_fleet(["A100"], env, tmp_path / "a.log", "--grace", "15") as fleet:
        graceful = client.submit(slow_request(2.0))
        wait_running(graceful)
        fleet.process.send_signal(signal.SIGTERM)
        fleet.process.wait(timeout=30)
    graceful_run = client.get_run(graceful)
    # Past grace: the worker is killed, the run is re-queued and finished by another worker.
    with running_fleet(["A100"], env, tmp_path / "b.log", "--grace", "0.5") as fleet:
        cut = client.submit(slow_request(4.0))
        wait_running(cut)
        first_worker = client.get_run(cut).worker
        fleet.process.send_signal(signal.SIGTERM)
        fleet.process.wait(timeout=30)
    with running_fleet(["A100"], env, tmp_path / "c.log"):
        cut_run = client.wait(cut, timeout=40)
    record_counts(within_grace=graceful_run.status.value,
                  within_grace_attempts=graceful_run.attempts,
                  past_grace=cut_run.status.value, past_grace_attempts=cut_run.attempts)
    assert graceful_run.status == RunStatus.SUCCESS and graceful_run.attempts == 1
    assert cut_run.status == RunStatus.SUCCESS and cut_run.attempts == 2
    assert cut_run.worker != first_worker
