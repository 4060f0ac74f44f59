"""Follow a run in the terminal with a progress bar until it ends."""

from __future__ import annotations

import sys

from tqdm import tqdm

from comfyq import keys
from comfyq.models import WorkflowRunModel
from comfyq.producer import Client

#: Seconds between two looks at the record when no change was announced.
POLL_SECONDS = 0.5


def follow_run(client: Client, run_id: str, show: bool = True,
               timeout: float | None = None) -> WorkflowRunModel:
    """Show the run's progress and live status until it is final; return the final record."""
    pubsub = client.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.run_updates(run_id))
    bar = tqdm(total=100, unit="%", disable=not show, file=sys.stderr,
               bar_format="{desc:<48.100} {percentage:3.0f}%|{bar}| {elapsed}")
    try:
        waited = 0.0
        while True:
            run = client.get_run(run_id)
            bar.set_description_str(f"{run.status.value}: {run.live_status or ''}")
            bar.update(round(run.progress * 100) - bar.n)
            if run.is_final:
                return run
            if timeout is not None and waited >= timeout:
                return run
            pubsub.get_message(timeout=POLL_SECONDS)
            waited += POLL_SECONDS
    finally:
        bar.close()
        pubsub.close()
