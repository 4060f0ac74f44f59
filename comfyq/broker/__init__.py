"""Everything comfyq knows about Celery and kombu, behind one :class:`Broker`.

The producer, ``comfyq queues``, the metrics and the reaper reach the broker only through here:
queue and task names (:mod:`.names`), the Celery configuration (:mod:`.celery_config`),
message parsing (:mod:`.messages`) and what a transport holds (:mod:`.redis_transport`).
"""

from comfyq.broker.broker import Broker
from comfyq.broker.names import (
    CALLBACKS_QUEUE,
    DELIVER_WEBHOOK_TASK,
    EXECUTE_RUN_TASK,
    MAINTENANCE_QUEUE,
    gpu_queue,
)

__all__ = ["CALLBACKS_QUEUE", "DELIVER_WEBHOOK_TASK", "EXECUTE_RUN_TASK", "MAINTENANCE_QUEUE",
           "Broker", "gpu_queue"]
