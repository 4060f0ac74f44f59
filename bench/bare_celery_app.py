"""Plain Celery as the benchmarks' baseline, configured exactly like comfyq's app.

Both apps take comfyq's own Celery configuration (``comfyq.broker.celery_config``): no result
backend and results ignored, JSON, the same broker transport options, task events on and no
task-sent events. So a comparison measures what comfyq does around Celery, not a difference in
how Celery was set up.

* :data:`app` publishes only, as comfyq's producers do: the submit baseline.
* :data:`results_app` adds a Redis result backend, where plain Celery keeps what comfyq keeps
  in its run record: the round-trip baselines wait on it, and its worker runs the tasks below
  (``celery -A bench.bare_celery_app:results_app worker -Q bench.bare``).

The broker is ``BENCH_BROKER_URL`` if set, else ``BENCH_REDIS_URL``, set by ``bench.local_deployment.start_deployment`` to the
benchmark's own Valkey; there is no default, so a baseline never reaches a user's Redis.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from bench.local_deployment import BARE_QUEUE
from comfyq.broker.celery_config import celery_config
from comfyq.settings import Settings


def plain_celery_app(*, results: bool) -> Celery:
    """Celery with comfyq's configuration on the benchmark's Valkey; ``results``: keep task
    results in it too."""
    url = os.environ.get("BENCH_REDIS_URL")
    if not url:
        raise RuntimeError("BENCH_REDIS_URL is unset: start the benchmark's own Valkey with "
                           "bench.local_deployment.start_deployment first")
    # The broker is the same Valkey unless BENCH_BROKER_URL names another (bench_brokers.py).
    config = celery_config(Settings(redis_url=url,
                                    broker_url=os.environ.get("BENCH_BROKER_URL") or None))
    config["task_queues"] = [*config["task_queues"], Queue(BARE_QUEUE)]
    app = Celery("bench", set_as_current=False)
    app.conf.update(config)
    if results:
        app.conf.update(result_backend=url, task_ignore_result=False)
    return app


app = plain_celery_app(results=False)
results_app = plain_celery_app(results=True)


@results_app.task(name="bench.echo")
def echo(value):
    return value


@results_app.task(name="bench.execute_graph")
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
