"""Follow a run in the terminal with a progress bar until it ends."""

from __future__ import annotations

import sys

from tqdm import tqdm

from comfyq.models import WorkflowRunModel
from comfyq.producer.client import Client
from comfyq.runs.follow import RunChanges

#: Seconds between two looks at the record when no change was announced.
POLL_SECONDS = 0.5


def follow_run(client: Client, run_id: str, show: bool = True,
               timeout: float | None = None) -> WorkflowRunModel:
    """Show the run's progress and live status until it is final; return the final record."""
    bar = tqdm(total=100, unit="%", disable=not show, file=sys.stderr,
               bar_format="{desc:<48.100} {percentage:3.0f}%|{bar}| {elapsed}")
    try:
        with RunChanges(client.redis, run_id) as changes:
            return _show_until_final(client, run_id, bar, changes, timeout)
    finally:
        bar.close()


def _show_until_final(client: Client, run_id: str, bar: tqdm, changes: RunChanges,
                      timeout: float | None) -> WorkflowRunModel:
    waited = 0.0
    while True:
        run = client.get_run(run_id)
        bar.set_description_str(f"{run.status.value}: {run.live_status or ''}")
        bar.update(round(run.progress * 100) - bar.n)
        if run.is_final or (timeout is not None and waited >= timeout):
            return run
        changes.wait(POLL_SECONDS)
        waited += POLL_SECONDS
