"""Run messages for kombu's Redis transport, made by comfyq so a record and its message can be
written in one round trip.

Celery's ``send_task`` builds a message, and kombu's Redis transport ``LPUSH``es it as JSON onto
the queue's list. When the run records live in that same Redis, the producer writes the record
and that ``LPUSH`` in one ``MULTI``/``EXEC``: one round trip instead of two, and a run is never
recorded without its message or the other way round.

The message is not hand-made: for each queue, Celery and kombu build one real message (the run
id a fresh template id), caught just before kombu would push it. Every later run's message is
that text with the template's ids replaced, so it is exactly what ``send_task`` would have
pushed, down to the headers a newer Celery adds.
"""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu import Producer
from kombu.utils.json import dumps

from comfyq.broker.names import EXECUTE_RUN_TASK

if TYPE_CHECKING:
    from celery import Celery


@dataclass(frozen=True)
class RunMessageTemplate:
    """One queue's message as kombu would push it, with placeholders for the per-run parts.

    :param list_name: the Redis list kombu pushes the queue's messages onto.
    :param text: the message's JSON text, as kombu writes it.
    :param run_id: the template run id that ``text`` and the body carry.
    :param delivery_tag: the template delivery tag in ``text`` (kombu makes one per message).
    :param encoded_body: the body as ``text`` holds it (base64, as kombu's Redis transport
        encodes it), and ``body`` the same decoded (Celery's ``[args, kwargs, embed]`` JSON):
        both kept, so a message costs no decoding.
    """

    list_name: str
    text: str
    run_id: str
    delivery_tag: str
    encoded_body: str
    body: str

    def message(self, run_id: str) -> str:
        """The message of run ``run_id``: its id everywhere, a delivery tag of its own."""
        body = self.body.replace(self.run_id, run_id)
        return (self.text.replace(self.encoded_body, base64.b64encode(body.encode()).decode())
                .replace(self.run_id, run_id)
                .replace(self.delivery_tag, str(uuid.uuid4())))


class RunMessages:
    """Messages of ``celery_app``'s run task for kombu's Redis transport.

    :param celery_app: the app whose configuration (serializer, queues, headers) they follow.
    """

    def __init__(self, celery_app: Celery) -> None:
        self.celery_app = celery_app
        self._templates: dict[tuple[str, int], RunMessageTemplate] = {}
        self._lock = threading.Lock()

    def message(self, run_id: str, queue: str, priority: int) -> tuple[str, str]:
        """The Redis list and the message text that put run ``run_id`` on ``queue`` with kombu's
        message ``priority`` (which picks the list)."""
        template = self._templates.get((queue, priority))
        if template is None:
            with self._lock:
                template = self._templates.get((queue, priority)) or self._template(queue,
                                                                                    priority)
                self._templates[queue, priority] = template
        return template.list_name, template.message(run_id)

    def _template(self, queue: str, priority: int) -> RunMessageTemplate:
        """Let Celery publish a run to ``queue`` and catch the message instead of pushing it."""
        template_id = str(uuid.uuid4())
        caught: list[tuple[str, dict[str, Any]]] = []
        with self.celery_app.connection_for_write() as connection:
            channel = connection.default_channel

            def catch(list_queue: str, message: dict[str, Any], **_: Any) -> None:
                caught.append((list_queue, message))

            channel._put = catch
            # Declares the queue in the broker, as a first send_task would.
            self.celery_app.send_task(EXECUTE_RUN_TASK, args=[template_id], task_id=template_id,
                                      queue=queue, producer=Producer(channel), priority=priority)
        (list_queue, message), = caught
        priority = channel._get_message_priority(message, reverse=False)
        return RunMessageTemplate(
            list_name=channel._q_for_pri(list_queue, priority),
            text=dumps(message),
            run_id=template_id,
            delivery_tag=message["properties"]["delivery_tag"],
            encoded_body=message["body"],
            body=base64.b64decode(message["body"]).decode(),
        )
