"""The ``comfyq`` command: workers, the demo, and runs from the shell.

Errors print one clear line on stderr and exit non-zero (codes in :mod:`comfyq.cli.errors`);
``--json`` gives scripts the records.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence

from comfyq.cli.documents import read_request
from comfyq.cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    UsageError,
    output_gone,
    run_handler,
)
from comfyq.errors import ComfyqError

DESCRIPTION = "comfyq: a distributed run queue for ComfyUI workflows (Celery + Redis)."
EPILOG = ("Settings come from COMFYQ_* environment variables (see the README). Exit codes: "
          "0 done, 1 run not successful / refused / Redis failed, 2 bad usage or input, "
          "130 interrupted.")


def _worker(args: argparse.Namespace) -> int:
    from comfyq.settings import get_settings
    from comfyq.workers import gpus, supervisor

    settings = get_settings()
    if args.gpus:
        devices = gpus.simulated_devices(args.gpus)
    else:
        devices = gpus.detect_devices(settings.gpu_name_map)
        if not devices and not args.cpu_only:
            raise ComfyqError("no GPU found on this host; declare simulated ones with "
                              "--gpus A100,T4 or run only the CPU side with --cpu-only")
    unknown = sorted({d.gpu_type for d in devices} - set(settings.gpu_types))
    if unknown:
        raise ComfyqError(f"GPU type(s) {', '.join(unknown)} not in COMFYQ_GPU_TYPES "
                          f"({', '.join(settings.gpu_types)}); add them there")
    host = args.hostname or supervisor.default_host()
    specs = [supervisor.gpu_worker_spec(device, host, args.loglevel) for device in devices]
    servers = _comfyui_servers(args, settings, devices)
    if servers:
        from comfyq.workers.comfyui_servers import with_servers

        specs = with_servers(specs, servers, settings)
    if args.callbacks:
        specs.append(supervisor.callback_worker_spec(host, settings.callback_concurrency,
                                                     args.loglevel))
    if args.beat:
        schedule = settings.data_dir.resolve() / f"beat-schedule-{host}"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        specs.append(supervisor.beat_spec(str(schedule), args.loglevel))
    server_of = {server.device.index: server for server in servers}
    for device in devices:
        where = f" on ComfyUI {server_of[device.index].url}" if device.index in server_of else ""
        print(f"gpu{device.index}: {device.name} -> queue comfyq.gpu.{device.gpu_type}{where}",
              flush=True)
    from comfyq.storage.local import sweep_local_folders

    # Each host sweeps its own data folder: the retention pass of the maintenance task reaches
    # only the host it runs on.
    def sweep() -> int:
        return sweep_local_folders(settings, time.time() - settings.run_retention_seconds)

    return supervisor.Supervisor(specs, grace_seconds=args.grace, housekeeping=sweep).run()


def _comfyui_servers(args: argparse.Namespace, settings, devices) -> list:
    """The ComfyUI server of each device, when the workers run graphs on ComfyUI."""
    if args.comfyui_url is not None or args.comfyui_path is not None:
        urls, path = args.comfyui_url, args.comfyui_path  # the command line wins over settings
    else:
        urls, path = settings.comfyui_urls, settings.comfyui_path
    if not urls and not path:
        return []
    from comfyq.workers.comfyui_servers import device_servers

    return device_servers(devices, urls, path, settings)


def _demo(args: argparse.Namespace) -> int:
    from comfyq.devtools.demo import run_demo

    return run_demo(gpus=args.gpus, timeout=args.timeout)


def _parse_input(pair: str) -> tuple[str, object]:
    name, sep, raw = pair.partition("=")
    if not sep or not name:
        raise UsageError(f"--input {pair!r}: expected NAME=VALUE")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _submit(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    request = read_request(args.file)
    if args.gpu:
        request["gpu"] = args.gpu
    if args.input:
        request["inputs"] = {**(request.get("inputs") or {}), **dict(map(_parse_input, args.input))}
    client = cli_client()
    run_id = client.submit(request)
    if not args.wait:
        print(json.dumps({"run_id": run_id}) if args.json else run_id)
        _warn_when_unserved(client, run_id)
        return 0
    # Shown before waiting: after Ctrl-C the run is still queued, and this names it.
    print(f"comfyq: submitted run {run_id}", file=sys.stderr, flush=True)
    _warn_when_unserved(client, run_id)
    from comfyq.progress_bar import follow_run

    try:
        run = follow_run(client, run_id, show=not args.json)
    except KeyboardInterrupt:
        print(f"comfyq: stopped waiting; run {run_id} goes on (comfyq cancel {run_id} stops it)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(run.model_dump_json(indent=2) if args.json else f"{run_id} {run.status.value}")
    return 0 if run.status.value == "success" else EXIT_FAILURE


def _warn_when_unserved(client, run_id: str) -> None:
    """Say so when no online worker serves the run's GPU type: it waits until one starts."""
    from comfyq.broker import gpu_queue
    from comfyq.worker_presence import online_workers

    gpu_type = client.get_run(run_id).gpu
    if not any(worker.get("gpu_type") == gpu_type for worker in online_workers(client.redis)):
        print(f"comfyq: warning: no online worker serves GPU type {gpu_type}; the run waits in "
              f"{gpu_queue(gpu_type)} until one starts (comfyq queues shows the workers)",
              file=sys.stderr, flush=True)


def _status(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    run = cli_client().get_run(args.run_id)
    if args.json:
        print(run.model_dump_json(indent=2))
    else:
        print(f"{run.id}  {run.status.value}  gpu={run.gpu}  progress={run.progress:.0%}  "
              f"worker={run.worker or '-'}  {run.live_status or ''}")
        if run.error:
            print(f"error: {run.error.get('exception_message') or run.error}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    result = cli_client().cancel(args.run_id)
    print(json.dumps(result.__dict__, default=str) if args.json else result.message)
    return 0


def _nodes(args: argparse.Namespace) -> int:
    from comfyq.catalog.summary import nodes_report
    from comfyq.cli.connection import redis_client
    from comfyq.settings import get_settings

    gpu_types = [args.gpu] if args.gpu else get_settings().gpu_types
    print(nodes_report(redis_client(), gpu_types, args.json))
    return 0


def _api(args: argparse.Namespace) -> int:
    try:
        from comfyq.api.server import serve
    except ImportError as error:
        raise ComfyqError(f"the HTTP API needs its extra: pip install 'comfyq[api]' "
                          f"({error})") from None
    serve(args.host, args.port, access_log=args.access_log,
          log_level="debug" if args.verbose else "info")
    return 0


def _workflows_deploy(args: argparse.Namespace) -> int:
    from comfyq.producer.client import default_client

    document = read_request(args.file)
    graph = document["workflow_api_json"]
    default_client().deploy_workflow(args.workflow_id, graph)
    print(f"deployed {len(graph)} nodes as workflow {args.workflow_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfyq", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action=_PrintVersion, help="print comfyq's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run one Celery worker per GPU of this host")
    worker.add_argument("--gpus", help="simulated devices instead of real ones, e.g. A100,A100,T4")
    worker.add_argument("--cpu-only", action="store_true",
                        help="start no GPU worker (only callbacks and beat)")
    worker.add_argument("--no-callbacks", dest="callbacks", action="store_false",
                        help="do not start the CPU worker for webhooks and maintenance")
    worker.add_argument("--no-beat", dest="beat", action="store_false",
                        help="do not start beat (one active beat per deployment is enough)")
    worker.add_argument("--hostname", help="host part of worker names (default: this host)")
    worker.add_argument("--grace", type=float, default=60.0,
                        help="seconds a run may take to finish after SIGTERM (default 60)")
    worker.add_argument("--loglevel", default="info",
                        help="Celery log level of the workers and beat (default info)")
    worker.add_argument("--comfyui-url", metavar="URL[,URL...]",
                        help="run graphs on ComfyUI servers instead of in-process: one URL per "
                             "device, in device order (default COMFYQ_COMFYUI_URLS)")
    worker.add_argument("--comfyui-path", metavar="DIR",
                        help="launch and supervise one ComfyUI per device from this checkout, "
                             "pinned to the device, on port COMFYQ_COMFYUI_BASE_PORT + index")
    worker.set_defaults(handler=_worker)

    demo = commands.add_parser("demo", help="start everything locally and run a sample workflow")
    demo.add_argument("--gpus", default="A100,T4", help="simulated GPUs (default A100,T4)")
    demo.add_argument("--timeout", type=float, default=120.0,
                      help="seconds to wait for the workers, then for the run (default 120)")
    demo.set_defaults(handler=_demo)

    submit = commands.add_parser("submit", help="submit a run request (or bare API graph) file")
    submit.add_argument("file", help="JSON file, or - for stdin")
    submit.add_argument("--gpu", help="GPU type to run on")
    submit.add_argument("--input", action="append", metavar="NAME=VALUE",
                        help="value of an external input (JSON or text); repeatable")
    submit.add_argument("--wait", action="store_true",
                        help="follow the run with a progress bar until it ends; exit 0 only "
                             "when it ends success")
    submit.add_argument("--json", action="store_true",
                        help="print {\"run_id\"} (with --wait: the final run record) as JSON")
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show a run")
    status.add_argument("run_id", help="the id submit printed")
    status.add_argument("--json", action="store_true", help="print the run record as JSON")
    status.set_defaults(handler=_status)

    cancel = commands.add_parser(
        "cancel", help="cancel a run: a queued one never starts, a running one stops at its "
                       "next node")
    cancel.add_argument("run_id", help="the id submit printed")
    cancel.add_argument("--json", action="store_true", help="print the outcome as JSON")
    cancel.set_defaults(handler=_cancel)

    workflows = commands.add_parser("workflows", help="graphs kept under a workflow id")
    workflow_commands = workflows.add_subparsers(dest="workflows_command", required=True,
                                                 metavar="ACTION")
    deploy = workflow_commands.add_parser(
        "deploy", help="keep an API graph (file) as WORKFLOW_ID; requests naming it with an "
                       "empty workflow_api_json run it")
    deploy.add_argument("workflow_id", help="the id requests name in workflow_id")
    deploy.add_argument("file", help="API graph or run request JSON file, or - for stdin")
    deploy.set_defaults(handler=_workflows_deploy)

    nodes = commands.add_parser("nodes", help="show the node catalog a GPU queue offers")
    nodes.add_argument("--gpu", help="GPU type (default: every type with a published catalog)")
    nodes.add_argument("--json", action="store_true", help="the catalogs in /object_info format")
    nodes.set_defaults(handler=_nodes)

    api = commands.add_parser("api", help="serve ComfyDeploy's run endpoints over HTTP")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    api.add_argument("--access-log", action="store_true", help="log every request")
    api.set_defaults(handler=_api)

    for register in _plugin_commands():
        register(commands)
    return parser


def _plugin_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from comfyq.cli.runs import add_run_commands

    registrars = [add_run_commands]
    try:
        from comfyq.cli.webhooks import add_webhook_commands
    except ImportError:
        pass
    else:
        registrars.append(add_webhook_commands)
    from comfyq.cli.deployments import add_deployment_commands

    registrars.append(add_deployment_commands)
    return registrars


class _PrintVersion(argparse.Action):
    """``--version``, looked up only when asked for (reading package metadata takes time)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("comfyq")
        except PackageNotFoundError:  # a checkout that was never installed
            found = "(not installed)"
        print(f"comfyq {found}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # prints --help and --version itself
    except BrokenPipeError:
        return output_gone()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
