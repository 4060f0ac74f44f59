"""Turns run changes into webhook events for the run's caller.

The final status is always sent; intermediate statuses and progress only when the run asked for
them (``webhook_intermediate_status``). Events go to the webhook outbox in Redis, which keeps
them in order and retries them; the first attempt is handed to a callback worker at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from comfyq.models import RunStatus
from comfyq.runs.hooks import RunHooks
from comfyq.runs.store import RunStore
from comfyq.storage import readable_outputs
from comfyq.webhooks.settings import WebhookSettings

logger = logging.getLogger(__name__)

#: Record fields a webhook body is made of: ComfyDeploy's, plus ``error`` (null unless the run
#: failed) so a receiver learns which node failed and why without another request.
BODY_FIELDS = ("live_status", "progress", "outputs", "error")


class WebhookEvents:
    """A run observer that records webhook events in the outbox and hands each to a sender.

    :param client: redis client (``decode_responses=True``) of the run records and the outbox.
    :param send: hands one delivery attempt of an event id to a callback worker
        (``Broker.send_webhook_delivery``).
    :param settings: the webhook settings events are recorded under.
    """

    def __init__(self, client: redis.Redis, send: Callable[[str], None],
                 settings: WebhookSettings) -> None:
        self.client = client
        self.store = RunStore(client)
        self.send = send
        self.settings = settings

    def run_changed(self, run_id: str, status_changed: bool) -> None:
        self.record(run_id, status_changed)

    def record(self, run_id: str, status_changed: bool) -> str | None:
        """Queue a webhook event with the run's current state, if its caller wants one.

        Returns the event id, or None when no event was due.
        """
        record = self.store.get_fields(
            run_id, ("webhook", "webhook_intermediate_status", *BODY_FIELDS))
        status = RunStatus(record["status"])
        if not record.get("webhook"):
            return None
        if not status.is_final and not record.get("webhook_intermediate_status"):
            return None
        from comfyq.webhooks.outbox import record_event

        body = {"run_id": run_id, "status": status.value,
                **{name: record.get(name) for name in BODY_FIELDS}}
        body["progress"] = body["progress"] or 0.0
        # Signed as the event is recorded: a receiver gets URLs it can open for their lifetime.
        body["outputs"] = readable_outputs(body["outputs"] or [])
        event_id = record_event(self.client, run_id, record["webhook"], body,
                                final=status.is_final, status_changed=status_changed,
                                settings=self.settings)
        if event_id is not None:
            self.send(event_id)
        return event_id


def webhook_hooks(client: redis.Redis, send: Callable[[str], None],
                  settings: WebhookSettings) -> RunHooks:
    """The run hooks of a process whose run changes reach their callers' webhooks."""
    return RunHooks([WebhookEvents(client, send, settings)])
