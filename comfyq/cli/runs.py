"""``comfyq runs | outputs | queues | metrics``: the read side of the command line.

:func:`add_run_commands` adds them to comfyq's argparse parser; each sets ``handler``, a function
of the parsed arguments returning the exit code, and takes ``--json`` where it reads something.
Errors are raised (ComfyqError, ValueError, OSError, redis errors) and printed as one line by
``comfyq.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from comfyq.errors import ComfyqError
from comfyq.run_status import RunStatus

# Each handler imports what it needs when it runs: `comfyq --help` loads none of it.

_TIME_FIELDS = ("created_at", "queued_at", "started_at", "ended_at")


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _local_time(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def human_seconds(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h01m``; ``-`` for None."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --- runs ---------------------------------------------------------------------------------------

def _runs(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import redis_client
    from comfyq.runs.listing import list_runs
    from comfyq.settings import get_settings

    settings = get_settings()
    if args.gpu is not None and args.gpu not in settings.gpu_types:
        raise ComfyqError(f"--gpu: {args.gpu!r} is not one of this deployment's GPU types "
                          f"({', '.join(settings.gpu_types)})")
    runs = list_runs(redis_client(), status=args.status, gpu=args.gpu, limit=args.limit)
    if args.json:
        _print_json([run.as_dict() | {name: _iso(getattr(run, name)) for name in _TIME_FIELDS}
                     for run in runs])
        return 0
    if not runs:
        print("no runs")
        return 0
    print(f"{'RUN':36}  {'STATUS':10}  {'GPU':9}  {'WORKER':24}  {'CREATED':19}  {'WAIT':>6}  "
          f"{'RAN':>6}  {'PROGRESS':>8}  WORKFLOW")
    for run in runs:
        print(f"{run.id:36}  {run.status:10}  {run.gpu or '-':9}  {run.worker or '-':24}  "
              f"{_local_time(run.created_at):19}  {human_seconds(run.queue_wait_seconds):>6}  "
              f"{human_seconds(run.run_seconds):>6}  {run.progress:>8.0%}  {run.workflow_id or '-'}")
    return 0


# --- outputs ------------------------------------------------------------------------------------

def _outputs(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client
    from comfyq.runs.outputs import download_outputs, output_files

    run = cli_client().get_run(args.run_id)
    files = output_files(run.outputs)
    if not run.is_final and not files:
        raise ComfyqError(f"run {run.id} is still {run.status.value}; its outputs appear when it "
                          "ends")
    saved = download_outputs(files, Path(args.download)) if args.download else []
    if args.json:
        _print_json([file.as_dict() | ({"path": str(path)} if args.download else {})
                     for file, path in zip(files, saved or [None] * len(files))])
        return 0
    if not files:
        print(f"run {run.id} ended {run.status.value} with no output files")
    for file, path in zip(files, saved or [None] * len(files)):
        print(f"{file.node_id or '-'}  {file.kind}  {file.filename}  {path or file.url}")
    return 0


# --- queues -------------------------------------------------------------------------------------

def _worker_line(worker: Any) -> str:
    pinned = worker.device
    if worker.cuda_visible_devices:
        pinned += f" (CUDA_VISIBLE_DEVICES={worker.cuda_visible_devices})"
    doing = f"executing {worker.current_run}" if worker.current_run else "idle"
    return f"    {worker.name:28}  device {pinned:32}  {doing}"


def _queues(args: argparse.Namespace) -> int:
    from comfyq.broker import Broker
    from comfyq.cli.connection import REDIS_TIMEOUT_SECONDS, redis_client
    from comfyq.queue_overview import queue_states
    from comfyq.settings import get_settings

    settings = get_settings()
    broker = Broker(settings, timeout=REDIS_TIMEOUT_SECONDS)
    states = queue_states(redis_client(), broker, settings.gpu_types)
    if args.json:
        _print_json([state.as_dict() for state in states])
        return 0
    for state in states:
        oldest = state.oldest_waiting
        waiting = (f"oldest waiting {human_seconds(oldest.age_seconds)} (run {oldest.run_id})"
                   if oldest else "none waiting")
        print(f"{state.gpu_type:9}  {state.queue:24}  depth {state.depth:<5}  {waiting}")
        for worker in state.workers:
            print(_worker_line(worker))
        if not state.workers:
            print("    no worker online")
    return 0


# --- metrics ------------------------------------------------------------------------------------

def _metrics(args: argparse.Namespace) -> int:
    from comfyq.metrics import serve_metrics
    from comfyq.settings import get_settings

    settings = get_settings()
    host = args.host or settings.metrics_host
    port = settings.metrics_port if args.port is None else args.port
    server, _ = serve_metrics(host, port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"serving metrics on http://{host}:{server.server_port}/metrics", flush=True)
    stop.wait()
    server.shutdown()
    return 0


# --- registration -------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def add_run_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``runs``, ``outputs``, ``queues`` and ``metrics`` to comfyq's subcommands."""
    runs = commands.add_parser("runs", help="list recent runs, newest first")
    runs.add_argument("--status", choices=[status.value for status in RunStatus],
                      help="only runs with this status")
    runs.add_argument("--gpu", help="only runs of this GPU type")
    runs.add_argument("--limit", type=_positive_int, default=20,
                      help="at most this many runs (default 20)")
    runs.add_argument("--json", action="store_true", help="print JSON records")
    runs.set_defaults(handler=_runs)

    outputs = commands.add_parser("outputs", help="list a run's output files, or download them")
    outputs.add_argument("run_id", help="the id submit printed")
    outputs.add_argument("--download", metavar="DIR",
                         help="copy (file://) or download (http(s)://, presigned S3 URLs "
                              "included) each file into DIR")
    outputs.add_argument("--json", action="store_true", help="print JSON records")
    outputs.set_defaults(handler=_outputs)

    queues = commands.add_parser(
        "queues", help="per GPU type: queue depth, oldest waiting run, workers and their runs")
    queues.add_argument("--json", action="store_true", help="print JSON records")
    queues.set_defaults(handler=_queues)

    metrics = commands.add_parser("metrics", help="serve Prometheus metrics over HTTP")
    metrics.add_argument("--port", type=_port,
                         help="port (default COMFYQ_METRICS_PORT, 9808); 0 picks a free one")
    metrics.add_argument("--host", help="address (default COMFYQ_METRICS_HOST, 127.0.0.1)")
    metrics.set_defaults(handler=_metrics)
