"""Plain Celery, configured like comfyq's app where it matters, as the benchmarks' baseline."""

from __future__ import annotations

import os

from celery import Celery

_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=_url, backend=_url)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@app.task(name="bench.echo")
def echo(value):
    return value


@app.task(name="bench.execute_graph")
def execute_graph(graph):
    """The work of a comfyq run, without comfyq around it: no record, no lease, no heartbeat."""
    import tempfile
    from pathlib import Path

    from comfyq.execution.executor import execute_graph as run_graph
    from comfyq.nodes import NODE_CLASS_MAPPINGS
    from comfyq.run_context import RunContext, running

    folder = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    context = RunContext(run_id=folder.name, output_dir=folder / "out", temp_dir=folder / "tmp")
    with running(context):
        return sorted(run_graph(graph, NODE_CLASS_MAPPINGS, context))
