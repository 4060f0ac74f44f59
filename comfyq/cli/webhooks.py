"""`comfyq webhooks list | redeliver RUN_ID | secret`: look into and act on the webhook outbox.

`add_webhook_commands` adds them to comfyq's argparse parser; each sets `handler`, a function
of the parsed arguments returning the exit code. Errors print one line on stderr, as every
comfyq command's do (exit codes in `comfyq.cli.errors`).
`python -m comfyq.cli.webhooks ...` runs them on their own.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from comfyq.cli.errors import EXIT_FAILURE, Handler, run_handler
from comfyq.webhooks.delivery_states import LIST_STATES

# Each handler imports what it needs when it runs: `comfyq --help` loads none of it.

EXIT_OK = 0
PROG = "comfyq webhooks"


def _reporting_errors(handler: Handler) -> Handler:
    """Errors as `comfyq webhooks: error: ...` lines, whether run by `comfyq` or on its own."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        return run_handler(handler, args, PROG)

    return run


def _moment(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def _detail(item: dict[str, Any]) -> str:
    if item["state"] in ("pending", "retrying") and item["next_attempt_at"]:
        due = f"next attempt {_moment(item['next_attempt_at'])}"
        return f"{due}; last: {item['last_error']}" if item["last_error"] else due
    return item["last_error"] or ""


def print_deliveries(items: Sequence[dict[str, Any]]) -> None:
    """A table of deliveries, oldest first."""
    if not items:
        print("no webhook deliveries")
        return
    print(f"{'CREATED':19}  {'EVENT':36}  {'RUN':36}  {'SEQ':>4}  {'STATE':9}  {'TRIES':>5}  "
          "DETAIL")
    for item in items:
        print(f"{_moment(item['created_at']):19}  {item['event_id']:36}  {item['run_id']:36}  "
              f"{item['seq']:>4}  {item['state']:9}  {item['attempts']:>5}  {_detail(item)}")


@_reporting_errors
def _list(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import redis_client
    from comfyq.webhooks.outbox import list_deliveries

    items = list_deliveries(redis_client(), args.state, limit=args.limit)
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        print_deliveries(items)
    return EXIT_OK


@_reporting_errors
def _redeliver(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import redis_client
    from comfyq.webhooks.outbox import redeliver

    count = redeliver(redis_client(), args.run_id)
    if count == 0:
        print(f"{PROG}: error: run {args.run_id!r} has no dead-lettered deliveries",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"re-queued {count} webhook deliver{'y' if count == 1 else 'ies'} of run {args.run_id}")
    return EXIT_OK


@_reporting_errors
def _secret(args: argparse.Namespace) -> int:
    from comfyq.cli.connection import redis_client
    from comfyq.webhooks.secret_store import signing_secrets
    from comfyq.webhooks.settings import get_webhook_settings

    secrets = signing_secrets(redis_client(), get_webhook_settings())
    for secret in secrets:
        print(secret.get_secret_value())
    return EXIT_OK


def add_webhook_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `webhooks list|redeliver|secret` to a parser's subcommands."""
    webhooks = subparsers.add_parser("webhooks", help="inspect and redeliver webhook deliveries")
    actions = webhooks.add_subparsers(dest="webhooks_action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list webhook deliveries, oldest first")
    listing.add_argument("--json", action="store_true", help="print JSON records")
    listing.add_argument("--state", choices=LIST_STATES, help="only deliveries in this state")
    listing.add_argument("--limit", type=int, default=200,
                         help="only the newest N (default 200)")
    listing.set_defaults(handler=_list)

    again = actions.add_parser(
        "redeliver", help="re-queue a run's dead-lettered deliveries with a fresh schedule")
    again.add_argument("run_id", help="the run whose dead letters are sent again")
    again.set_defaults(handler=_redeliver)

    secret = actions.add_parser(
        "secret", help="print the signing secret(s) receivers verify with, current first")
    secret.set_defaults(handler=_secret)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyq")
    add_webhook_commands(parser.add_subparsers(dest="command", required=True,
                                               metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
