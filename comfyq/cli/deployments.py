"""``comfyq deployments list | create | show``: workflows deployed to an environment, run by id.

:func:`add_deployment_commands` adds them to comfyq's argparse parser (see
:mod:`comfyq.deployments` for what a deployment is). Errors are raised and printed as one line
by ``comfyq.cli.main``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from comfyq.cli.documents import read_graph
from comfyq.errors import ComfyqError

# Each handler imports what it needs when it runs: `comfyq --help` loads none of it.


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _summary(deployment: Any) -> str:
    return (f"{deployment.id}  {deployment.environment.value:<13} {deployment.workflow_id}  "
            f"v{deployment.version}  workflow version {deployment.workflow_version_id}  "
            f"machine {deployment.machine_id or '-'}  deployed {_when(deployment.updated_at)}")


def _list(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    deployments = cli_client().deployments.list(args.environment)
    if args.json:
        _print_json([deployment.model_dump(mode="json") for deployment in deployments])
    elif not deployments:
        print("no deployments" + (f" in {args.environment}" if args.environment else ""))
    for deployment in [] if args.json else deployments:
        print(_summary(deployment))
    return 0


def _create(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    graph = None if args.file is None else read_graph(args.file)
    deployment = cli_client().deployments.deploy(
        args.workflow_id, graph, environment=args.environment, machine_id=args.machine_id,
        deployment_id=args.deployment_id)
    if args.json:
        _print_json(deployment.model_dump(mode="json"))
    else:
        print(f"deployed workflow {deployment.workflow_id} to {deployment.environment.value} as "
              f"{deployment.id}, version {deployment.version} (workflow version "
              f"{deployment.workflow_version_id})")
    return 0


def _show(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import cli_client

    deployment = cli_client().deployments.get(args.deployment_id, args.version)
    if deployment is None:
        version = "" if args.version is None else f" version {args.version}"
        raise ComfyqError(f"no deployment {args.deployment_id!r}{version} "
                          "(comfyq deployments list shows them)")
    if args.json:
        _print_json(deployment.model_dump(mode="json"))
        return 0
    print(_summary(deployment))
    for described in deployment.input_types or []:
        print(f"  input {described.input_id}: {described.type} ({described.class_type}), "
              f"default {described.default_value!r}")
    return 0


def add_deployment_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``comfyq deployments ...`` to the command parser."""
    deployments = commands.add_parser(
        "deployments", help="workflows deployed to an environment, run by their deployment id")
    subcommands = deployments.add_subparsers(dest="deployments_action", required=True,
                                             metavar="ACTION")

    listing = subcommands.add_parser("list", help="the current version of every deployment")
    listing.add_argument("--environment", help="only this environment (e.g. production)")
    listing.add_argument("--json", action="store_true",
                         help="print the deployments as ComfyDeploy's DeploymentModel JSON")
    listing.set_defaults(handler=_list)

    create = subcommands.add_parser(
        "create", help="deploy a graph to an environment; deploying the same workflow there "
                       "again adds a version to its deployment, whose id stays")
    create.add_argument("workflow_id", help="the workflow to deploy (its id in run records)")
    create.add_argument("file", nargs="?",
                        help="API graph or run request JSON file, or - for stdin (default: the "
                             "graph kept last under WORKFLOW_ID, e.g. by comfyq workflows deploy)")
    create.add_argument("--environment", default="production",
                        help="staging, production, public-share or private-share "
                             "(default production)")
    create.add_argument("--machine-id", help="a machine of COMFYQ_MACHINES whose default GPU "
                                             "runs it (default: COMFYQ_DEFAULT_GPU)")
    create.add_argument("--id", dest="deployment_id",
                        help="the id a new deployment gets (default: a new UUID), e.g. the one "
                             "clients already call")
    create.add_argument("--json", action="store_true", help="print the deployment as JSON")
    create.set_defaults(handler=_create)

    show = subcommands.add_parser("show", help="one deployment, with the inputs its graph takes")
    show.add_argument("deployment_id", help="the id create or list printed")
    show.add_argument("--version", type=int, help="an earlier version (default: the current)")
    show.add_argument("--json", action="store_true", help="print the deployment as JSON")
    show.set_defaults(handler=_show)
