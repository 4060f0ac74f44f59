"""The states a webhook delivery is listed in (``comfyq webhooks list --state``).

Apart from the outbox so the command line can offer them without loading it.
"""

from __future__ import annotations

#: States :func:`comfyq.webhooks.outbox.list_deliveries` can filter on.
LIST_STATES = ("waiting", "pending", "retrying", "in_flight", "delivered", "dead", "gone")
