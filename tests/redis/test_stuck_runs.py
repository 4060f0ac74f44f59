"""The GPU worker's watch over a run that does not stop (``comfyq.workers.stuck_runs``), on its
own: a real Redis, a real process standing in for the stuck pool process, and the store's clock
moved forward instead of waiting out the grace."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from comfyq import RunStatus
from comfyq.redis import keys
from comfyq.workers.stuck_runs import Execution, StuckRunWatcher
from tests.helpers import request
from tests.redis.moving_time import announced

GRACE = 5.0
WORKER = "gpu0@host"


@pytest.fixture
def stuck_process() -> Iterator[subprocess.Popen]:
    """A process that hangs, as a pool process blocked in a node does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


class Watch:
    """A watcher over one execution, with the event loop's part played by the test."""

    def __init__(self, client, process: subprocess.Popen, run_id: str) -> None:
        self.calls, hooks = announced()
        self.process = process
        self.terminated: list[str] = []
        execution = Execution(run_id, process.pid, request="celery request")
        self.watcher = StuckRunWatcher(client.store, hooks, client.settings, WORKER, GRACE,
                                       terminate=self._terminate,
                                       executions=lambda: (execution,))
        self.watcher.on_loop()

    def _terminate(self, celery_request: str) -> None:
        self.terminated.append(celery_request)
        self.process.kill()

    def look(self) -> None:
        """One look, with the loop carrying out a kill it asks for, as the worker's timer does."""
        looking = threading.Thread(target=self.watcher.look)
        looking.start()
        while looking.is_alive():
            self.watcher.on_loop()
            looking.join(0.01)


def running_run(client, clock, token: str = f"{WORKER}:lease", **fields) -> str:
    run_id = client.submit(request(webhook="http://127.0.0.1:9/hook", **fields))
    claim = client.store.claim(run_id, (), token, 30, {"started_at": clock(), "worker": WORKER})
    assert claim.claimed
    client.store.move(run_id, RunStatus.RUNNING, {"live_status": "Executing Hang"},
                      lease_token=token)
    return run_id


def test_a_cancelled_run_that_does_not_stop_is_ended_and_its_process_killed_after_the_grace(
        make_client, clock, stuck_process):
    client = make_client()
    run_id = running_run(client, clock)
    watch = Watch(client, stuck_process, run_id)
    watch.look()  # not cancelled: nothing to do
    client.cancel(run_id)
    watch.look()  # the cancel is seen now; the grace starts
    clock.advance(GRACE - 0.1)
    watch.look()
    untouched = client.get_run(run_id)
    clock.advance(0.1)
    watch.look()
    run = client.get_run(run_id)
    watch.look()  # still reported by the loop a moment longer: stopped once only
    assert untouched.status == RunStatus.RUNNING and watch.terminated == ["celery request"]
    assert stuck_process.wait(timeout=5) == -9
    assert run.status == RunStatus.CANCELLED and run.live_status == "Cancelled; process killed"
    assert run.error == {
        "exception_type": "RunCancelled",
        "exception_message": f"the run was cancelled and did not stop within 5 s, so {WORKER} "
                             f"killed the process executing it (pid {stuck_process.pid}); a "
                             "fresh process takes the next run"}
    assert not client.redis.exists(keys.run_lease(run_id))  # given back with the final move
    assert watch.calls == [(run_id, True)]  # its webhook


def test_a_run_past_its_limit_and_the_grace_ends_timeout(make_client, clock, stuck_process):
    client = make_client(max_run_seconds=60)
    run_id = running_run(client, clock)
    watch = Watch(client, stuck_process, run_id)
    clock.advance(60 + GRACE - 0.1)
    watch.look()
    within_grace = client.get_run(run_id).status
    clock.advance(0.1)
    watch.look()
    run = client.get_run(run_id)
    assert within_grace == RunStatus.RUNNING
    assert watch.terminated and stuck_process.wait(timeout=5) == -9
    assert run.status == RunStatus.TIMEOUT and run.error["exception_type"] == "RunTimeout"
    assert run.error["exception_message"].startswith(
        "the run exceeded its time limit of 60 s and did not stop within 5 s")


def test_a_run_leased_to_another_worker_keeps_its_record_but_the_stuck_process_dies(
        make_client, clock, stuck_process):
    client = make_client()
    run_id = running_run(client, clock, token="gpu1@elsewhere:lease")
    watch = Watch(client, stuck_process, run_id)
    client.cancel(run_id)
    watch.look()
    clock.advance(GRACE)
    watch.look()
    assert watch.terminated and stuck_process.wait(timeout=5) == -9
    assert client.get_run(run_id).status == RunStatus.RUNNING
    assert client.redis.get(keys.run_lease(run_id)) == "gpu1@elsewhere:lease"
    assert watch.calls == []


def test_a_run_that_ended_by_itself_is_left_alone(make_client, clock, stuck_process):
    client = make_client(max_run_seconds=1)
    run_id = running_run(client, clock)
    client.store.move(run_id, RunStatus.SUCCESS, {"live_status": "Done"},
                      lease_token=f"{WORKER}:lease")
    watch = Watch(client, stuck_process, run_id)
    clock.advance(1 + GRACE)
    watch.look()
    assert watch.terminated == [] and stuck_process.poll() is None
    assert client.get_run(run_id).status == RunStatus.SUCCESS

