"""``comfyq worker``: one Celery worker process per GPU, plus the CPU side, kept alive.

Each GPU worker is a separate ``celery worker`` process with ``CUDA_VISIBLE_DEVICES`` set to its
device, consuming only its GPU type's queue, one run at a time, named ``gpu<index>@<host>`` so
Flower shows which device it is. The supervisor itself never touches CUDA (device detection
uses NVML or nvidia-smi), so nothing CUDA-related is inherited across the fork.

A child that dies is restarted with a growing delay; a child whose restart was requested (its
``restart_request`` file appeared: a GPU worker asks so of a ComfyUI server stuck in a node) is
killed and started again at once. SIGTERM or SIGINT stops taking new runs:
each child gets SIGTERM (Celery's warm shutdown: finish the current run, take no new one) and
is killed only when it outlives the grace period.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comfyq.broker.names import CALLBACKS_QUEUE, MAINTENANCE_QUEUE, gpu_queue
from comfyq.workers.gpus import Device

logger = logging.getLogger(__name__)

#: First delay before restarting a dead child; doubles up to the maximum while it keeps dying.
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 30.0
#: A child that lived this long is healthy again: its next restart starts from the first delay.
HEALTHY_UPTIME_SECONDS = 60.0
#: Linux prctl option that delivers a signal to a child when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclass
class ChildSpec:
    """One process the supervisor keeps running.

    :param cwd: working directory (default: the supervisor's).
    :param start_gate: when given, the child is first started once this returns true (checked
        every loop turn), e.g. a GPU worker once its ComfyUI server answers.
    :param stop_last: stop it only after the other children (a server they use).
    :param restart_request: a file whose appearance asks for the child to be killed and started
        again at once (the supervisor removes it once the old process is gone).
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    start_gate: Callable[[], bool] | None = None
    stop_last: bool = False
    restart_request: Path | None = None


def celery_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "comfyq.tasks.app", *arguments]


def gpu_worker_spec(device: Device, host: str, loglevel: str) -> ChildSpec:
    """The Celery worker pinned to ``device``."""
    env = {
        # Number devices as nvidia-smi and NVML do, so index i below is the same card.
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        # A simulated device sees no GPU at all; a real one sees only its own card.
        "CUDA_VISIBLE_DEVICES": "" if device.simulated else str(device.index),
        "COMFYQ_WORKER_GPU_TYPE": device.gpu_type,
        "COMFYQ_WORKER_DEVICE": device.torch_device,
        "COMFYQ_WORKER_DEVICE_NAME": device.name,
    }
    argv = celery_command(
        "worker", "-Q", gpu_queue(device.gpu_type), "-n", f"{device.worker_name}@{host}",
        "--concurrency", "1", "--pool", "prefork", "--loglevel", loglevel,
        "--without-mingle", "--without-gossip", "--task-events",
    )
    return ChildSpec(device.worker_name, argv, env)


def callback_worker_spec(host: str, concurrency: int, loglevel: str) -> ChildSpec:
    """The CPU worker for webhook deliveries and maintenance; never a GPU queue."""
    argv = celery_command(
        "worker", "-Q", f"{CALLBACKS_QUEUE},{MAINTENANCE_QUEUE}", "-n", f"callbacks@{host}",
        "--concurrency", str(concurrency), "--pool", "threads", "--loglevel", loglevel,
        "--without-mingle", "--without-gossip", "--task-events",
    )
    return ChildSpec("callbacks", argv, {"CUDA_VISIBLE_DEVICES": ""})


def beat_spec(schedule_path: str, loglevel: str) -> ChildSpec:
    """Celery beat; the scheduler's Redis lock keeps it to one active instance per deployment."""
    argv = celery_command("beat", "--schedule", schedule_path, "--loglevel", loglevel,
                          "--scheduler", "comfyq.scheduler.beat:LockedScheduler")
    return ChildSpec("beat", argv, {"CUDA_VISIBLE_DEVICES": ""})


def lead_group_and_die_with_parent() -> None:
    """For ``preexec_fn``: the child leads its own process group, so stopping the group also
    stops the processes it forked; and if its parent is killed outright, it must not live on."""
    os.setpgrp()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Supervisor:
    """Starts the children, restarts those that die, and stops them all gracefully.

    :param specs: the processes to keep running.
    :param grace_seconds: how long a stopping child may take to finish its run.
    :param housekeeping: called at the first turn and then every ``housekeeping_seconds``
        (sweeping this host's old files); a failure is logged, never fatal.
    """

    def __init__(self, specs: Sequence[ChildSpec], grace_seconds: float,
                 housekeeping: Callable[[], object] | None = None,
                 housekeeping_seconds: float = 300.0) -> None:
        self.specs = list(specs)
        self.grace_seconds = grace_seconds
        self.housekeeping = housekeeping
        self.housekeeping_seconds = housekeeping_seconds
        self._next_housekeeping = 0.0
        self.processes: dict[str, subprocess.Popen] = {}
        self._started_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._stopping = threading.Event()

    def start(self) -> None:
        for spec in self.specs:
            if spec.restart_request is not None:  # asked of a process that is gone
                spec.restart_request.unlink(missing_ok=True)
            if spec.start_gate is None:
                self._spawn(spec)
        self._start_gated()

    def _start_gated(self) -> None:
        for spec in self.specs:
            if spec.name not in self.processes and spec.start_gate is not None and (
                    spec.start_gate()):
                self._spawn(spec)

    def _spawn(self, spec: ChildSpec) -> None:
        env = {**os.environ, **spec.env}
        self.processes[spec.name] = subprocess.Popen(spec.argv, env=env, cwd=spec.cwd,
                                                     # Only setpgrp and prctl run there.
                                                     preexec_fn=lead_group_and_die_with_parent)  # noqa: PLW1509
        self._started_at[spec.name] = time.monotonic()
        logger.info("started %s (pid %d)", spec.name, self.processes[spec.name].pid)

    def run(self) -> int:
        """Supervise until asked to stop (SIGTERM/SIGINT); returns the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        self.start()
        while not self._stopping.wait(0.5):
            self.supervise()
        self.stop()
        return 0

    def supervise(self) -> None:
        """One turn of the watch: start what may start now, restart what asked for it or died."""
        self._start_gated()
        self._restart_requested()
        self._restart_dead()
        self._housekeep()

    def _housekeep(self) -> None:
        moment = time.monotonic()
        if self.housekeeping is None or moment < self._next_housekeeping:
            return
        self._next_housekeeping = moment + self.housekeeping_seconds
        try:
            self.housekeeping()
        except Exception:  # a full disk or a vanished folder must not stop the workers
            logger.exception("housekeeping failed; trying again in %.0f s",
                             self.housekeeping_seconds)

    def _restart_requested(self) -> None:
        for spec in self.specs:
            process = self.processes.get(spec.name)
            if process is None or spec.restart_request is None or (
                    not spec.restart_request.exists()):
                continue
            logger.warning("restarting %s (pid %d) as asked: a run's node did not stop", spec.name,
                           process.pid)
            _kill_group(process)
            process.wait()
            spec.restart_request.unlink(missing_ok=True)
            self._spawn(spec)

    def _restart_dead(self) -> None:
        for spec in self.specs:
            process = self.processes.get(spec.name)
            if process is None or process.poll() is None:
                continue
            uptime = time.monotonic() - self._started_at[spec.name]
            delay = RESTART_DELAY_SECONDS if uptime > HEALTHY_UPTIME_SECONDS else min(
                self._delay.get(spec.name, RESTART_DELAY_SECONDS / 2) * 2, RESTART_DELAY_MAX_SECONDS)
            self._delay[spec.name] = delay
            logger.warning("%s exited with code %s after %.0f s; restarting in %.1f s",
                           spec.name, process.returncode, uptime, delay)
            if self._stopping.wait(delay):
                return
            self._spawn(spec)

    def stop(self) -> None:
        """Warm-stop every child, then kill those still running after the grace period.

        Children marked ``stop_last`` (servers the workers use) are stopped once the others
        have ended, so a run finishing during the warm stop still has its server.
        """
        deadline = time.monotonic() + self.grace_seconds
        last = {spec.name for spec in self.specs if spec.stop_last}
        self._stop_group([name for name in self.processes if name not in last], deadline)
        self._stop_group([name for name in self.processes if name in last],
                         max(deadline, time.monotonic() + 10.0))

    def _stop_group(self, names: list[str], deadline: float) -> None:
        for name in names:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        for name in names:
            process = self.processes[name]
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it and its pool; its run "
                               "goes back to the queue once its lease expires", name,
                               self.grace_seconds)
                _kill_group(process)
                process.wait()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def default_host() -> str:
    return socket.gethostname()
