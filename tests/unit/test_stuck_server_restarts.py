"""A ComfyUI server stuck in a node: the worker asks for its restart, the supervisor restarts
it, and the next prompt waits for the supervisor to have taken the request."""

from __future__ import annotations

import sys

from comfyq.comfyui.backend import ComfyUIOptions
from comfyq.comfyui.restarts import StuckServerRestarts
from comfyq.workers.supervisor import ChildSpec, Supervisor

URL = "http://127.0.0.1:8190"


def test_the_supervisor_restarts_a_child_whose_restart_was_requested(tmp_path):
    request = tmp_path / "gpu0" / "restart-requested"
    request.parent.mkdir()
    request.touch()  # left over from a supervisor that stopped before taking it
    spec = ChildSpec("comfyui-gpu0", [sys.executable, "-c", "import time; time.sleep(60)"],
                     restart_request=request)
    supervisor = Supervisor([spec], grace_seconds=1)
    supervisor.start()
    try:
        first = supervisor.processes[spec.name]
        supervisor.supervise()
        kept = supervisor.processes[spec.name]
        request.touch()
        supervisor.supervise()
        second = supervisor.processes[spec.name]
    finally:
        supervisor.stop()
    assert kept is first  # the stale request was dropped at start, not acted on
    assert first.returncode == -9 and second is not first
    assert second.returncode is not None and not request.exists()  # stopped by stop() above


def test_a_launched_server_is_restarted_through_its_request_file(tmp_path):
    request = tmp_path / "comfyui" / "gpu0" / "restart-requested"
    restarts = StuckServerRestarts(ComfyUIOptions(URL, interrupt_grace=2.0,
                                                  restart_request=request,
                                                  unavailable_seconds=1.0, startup_seconds=30.0))
    note = restarts.restart("run-1")
    looks = []

    def supervisor_takes_it() -> None:  # the next prompt checks for a cancel while it waits
        looks.append(request.exists())
        request.unlink()

    wait = restarts.wait_before_next_prompt(supervisor_takes_it, pause=0.01)
    assert note == (f"ComfyUI at {URL} did not stop the prompt within 2 s, so the server was "
                    "restarted")
    assert looks == [True]  # it waited while the request was there, and no longer
    assert 1.0 <= wait <= 30.0  # then as long as a starting server may take
    assert restarts.wait_before_next_prompt(supervisor_takes_it, pause=0.01) == 1.0  # once


def test_an_attached_server_cannot_be_restarted_and_the_run_says_so():
    restarts = StuckServerRestarts(ComfyUIOptions(URL, interrupt_grace=1.0))
    note = restarts.restart("run-1")
    assert note == (f"ComfyUI at {URL} did not stop the prompt within 1 s; it is attached by "
                    "URL, so comfyq cannot restart it: it stays busy (with its GPU) until the "
                    "node returns")
    assert restarts.wait_before_next_prompt(lambda: None, pause=0.01) == 60.0

