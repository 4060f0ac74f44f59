"""The Prometheus endpoint, scraped over HTTP while the test fleet executes runs."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from comfyq import RunStatus
from tests.helpers import request
from tests.ops_helpers import GatedImageServer, comfyq_command, held_graph, run_comfyq, wait_until

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@dataclass
class Scrape:
    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 for a labelled series not created yet (Prometheus reads it so)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def __sub__(self, before: Scrape) -> Delta:
        return Delta(self, before)


@dataclass
class Delta:
    after: Scrape
    before: Scrape

    def value(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


@dataclass
class Exporter:
    url: str

    def scrape(self) -> Scrape:
        response = requests.get(self.url, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        return Scrape(parse(response.text))


def start_exporter(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    """``comfyq metrics --port 0``; returns the process and the URL it announced."""
    process = subprocess.Popen([*comfyq_command(), "metrics", "--port", "0", *args],
                               env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    assert line.startswith("serving metrics on http://127.0.0.1:"), process.stderr.read()
    return process, line.split()[-1]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    assert process.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def exporter(fleet, fleet_settings) -> Iterator[Exporter]:
    process, url = start_exporter(dict(fleet_settings[0]))
    try:
        yield Exporter(url)
    finally:
        stop(process)


# --- runs ---------------------------------------------------------------------------------------


def test_run_counters_and_histograms_count_each_run_once(exporter, client):
    before = exporter.scrape()
    good = [client.submit(request(gpu="A100")) for _ in range(2)]
    bad = client.submit(request(held_graph("bad"), gpu="T4",
                                inputs={"picture": "http://127.0.0.1:9/none.png"}))
    assert {client.wait(run_id, 60).status for run_id in good} == {RunStatus.SUCCESS}
    assert client.wait(bad, 60).status == RunStatus.FAILED
    exporter.scrape()
    delta = exporter.scrape() - before  # a second scrape counts nothing twice

    assert delta.value("comfyq_runs_submitted_total", gpu_type="A100") == 2
    assert delta.value("comfyq_runs_submitted_total", gpu_type="T4") == 1
    assert delta.value("comfyq_runs_started_total", gpu_type="A100") == 2
    assert delta.value("comfyq_runs_finished_total", gpu_type="A100", status="success") == 2
    assert delta.value("comfyq_runs_finished_total", gpu_type="T4", status="failed") == 1
    assert delta.value("comfyq_runs_finished_total", gpu_type="T4", status="success") == 0
    assert delta.value("comfyq_run_duration_seconds_count", gpu_type="A100", status="success") == 2
    assert delta.value("comfyq_run_duration_seconds_bucket", gpu_type="A100", status="success",
                       le="3600.0") == 2
    assert delta.value("comfyq_run_duration_seconds_count", gpu_type="T4", status="failed") == 1
    assert delta.value("comfyq_run_queue_wait_seconds_count", gpu_type="A100") == 2
    assert delta.value("comfyq_run_queue_wait_seconds_sum", gpu_type="A100") >= 0
    assert delta.value("comfyq_run_queue_wait_seconds_bucket", gpu_type="A100", le="+Inf") == 2
    assert not [name for name, _ in before.samples if name.endswith("_created")]


def test_a_run_seen_queued_is_counted_when_it_starts_and_ends(exporter, client):
    with GatedImageServer() as gate:
        held = client.submit(request(held_graph("slow"), gpu="T4", inputs={"picture": gate.url()}))
        assert gate.requested.wait(30)
        before = exporter.scrape()  # sees the held run executing
        behind = client.submit(request(gpu="T4"))
        during = exporter.scrape()  # sees the run behind it waiting
        gate.open()
        held_run, behind_run = (client.wait(run_id, 60) for run_id in (held, behind))
    after = exporter.scrape()

    assert {held_run.status, behind_run.status} == {RunStatus.SUCCESS}
    assert (during - before).value("comfyq_runs_submitted_total", gpu_type="T4") == 1
    assert (during - before).value("comfyq_runs_started_total", gpu_type="T4") == 0
    assert (after - during).value("comfyq_runs_started_total", gpu_type="T4") == 1
    assert (after - before).value("comfyq_runs_finished_total", gpu_type="T4",
                                  status="success") == 2
    # It waited behind the held run, and its wait is what its record says: queued -> started.
    assert behind_run.started_at >= held_run.ended_at
    assert (after - during).value("comfyq_run_queue_wait_seconds_count", gpu_type="T4") == 1
    waited = (after - during).value("comfyq_run_queue_wait_seconds_sum", gpu_type="T4")
    assert waited == pytest.approx(
        (behind_run.started_at - behind_run.queued_at).total_seconds(), abs=0.01)


def run_series(scrape: Scrape) -> Samples:
    """The run and webhook counters and histograms of a scrape."""
    counted = ("comfyq_runs_", "comfyq_run_", "comfyq_webhook_deliveries_total")
    return {key: value for key, value in scrape.samples.items() if key[0].startswith(counted)}


def test_two_exporters_report_the_same_counts_whenever_they_started(exporter, fleet_settings,
                                                                      client):
    earlier = client.submit(request(gpu="A100"))
    assert client.wait(earlier, 60).status == RunStatus.SUCCESS
    process, url = start_exporter(dict(fleet_settings[0]))
    try:
        later = client.submit(request(gpu="A100"))
        assert client.wait(later, 60).status == RunStatus.SUCCESS
        second = Exporter(url)

        def both_views() -> tuple[Samples, Samples] | None:
            views = run_series(exporter.scrape()), run_series(second.scrape())
            return views if views[0] == views[1] else None

        # Counted in Redis where the runs changed: the exporter started after the first run
        # counts it too, and both report the very same values.
        first_view, second_view = wait_until(both_views, timeout=10)
    finally:
        stop(process)
    assert first_view == second_view
    assert second_view[("comfyq_runs_finished_total",
                        frozenset({("gpu_type", "A100"), ("status", "success")}))] >= 2


# --- queues and workers --------------------------------------------------------------------------


def test_queue_depth_oldest_wait_and_busy_workers(exporter, client):
    with GatedImageServer() as gate:
        held = client.submit(request(held_graph("busy"), gpu="T4", inputs={"picture": gate.url()}))
        assert gate.requested.wait(30)
        # The oldest message's run is cancelled: its message stays until a worker drops it.
        cancelled = client.submit(request(gpu="T4"))
        waiting = [client.submit(request(gpu="T4")) for _ in range(3)]
        assert client.cancel(cancelled).cancelled
        assert client.broker.waiting_run_ids("T4") == [cancelled, *waiting]

        def scraped_while_busy() -> tuple[float, Scrape, float] | None:
            asked = time.time()
            scrape = exporter.scrape()
            busy_now = scrape.value("comfyq_workers_busy", gpu_type="T4") == 1
            return (asked, scrape, time.time()) if busy_now else None

        try:
            asked, busy, answered = wait_until(scraped_while_busy)
        finally:
            gate.open()
        for run_id in (held, *waiting):
            assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    idle = exporter.scrape()

    assert busy.value("comfyq_queue_depth", gpu_type="T4") == 3  # 4 messages, 3 runs waiting
    assert busy.value("comfyq_queue_depth", gpu_type="A100") == 0
    # The oldest waiting run's age: from its queueing to the scrape (ages are in milliseconds).
    queued_at = client.get_run(waiting[0]).queued_at.timestamp()
    assert asked - queued_at - 0.001 <= busy.value(
        "comfyq_queue_oldest_waiting_seconds", gpu_type="T4") <= answered - queued_at + 0.001
    assert busy.value("comfyq_workers_online", gpu_type="T4") >= 1
    assert busy.value("comfyq_workers_busy", gpu_type="T4") == 1
    assert busy.value("comfyq_workers_busy", gpu_type="A100") == 0
    assert idle.value("comfyq_queue_depth", gpu_type="T4") == 0
    assert idle.value("comfyq_queue_oldest_waiting_seconds", gpu_type="T4") == 0
    assert idle.value("comfyq_workers_busy", gpu_type="T4") == 0
    assert idle.value("comfyq_redis_up") == 1


# --- webhooks -----------------------------------------------------------------------------------


def test_webhook_outcomes_and_pending_deliveries(exporter, client):
    from comfyq.devtools.local_receiver import WebhookReceiver

    before = exporter.scrape()
    with (WebhookReceiver() as fine, WebhookReceiver(answers=[410]) as gone,
          WebhookReceiver(answers=[400]) as refusing,
          WebhookReceiver(answers=[500, 500, 500]) as flaky):
        runs = [client.submit(request(webhook=receiver.url))
                for receiver in (fine, gone, refusing, flaky)]
        for run_id in runs:
            assert client.wait(run_id, 60).status == RunStatus.SUCCESS
        # The flaky receiver's event waits between its retries (0.2, 0.5 then 1 s apart).
        wait_until(lambda: exporter.scrape().value("comfyq_webhook_deliveries_pending") >= 1,
                   timeout=10, interval=0.05)
        assert flaky.wait_for(lambda accepted: len(accepted) == 1, 30)
        assert len(flaky.deliveries) == 4

    def settled() -> Delta | None:
        delta = exporter.scrape() - before
        return delta if delta.value("comfyq_webhook_deliveries_total", outcome="delivered") == 2 \
            else None

    delta = wait_until(settled, timeout=10)

    assert delta.value("comfyq_webhook_deliveries_total", outcome="gone") == 1
    assert delta.value("comfyq_webhook_deliveries_total", outcome="dead") == 1
    assert delta.value("comfyq_webhook_deliveries_dead") == 2
    assert delta.after.value("comfyq_webhook_deliveries_pending") == 0


# --- serving ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_scrape_answers_with_redis_up_0_when_redis_is_down(fleet_settings):
    env = {**fleet_settings[0], "COMFYQ_REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}
    process, url = start_exporter(env)
    try:
        scrape = Exporter(url).scrape()
    finally:
        stop(process)
    assert scrape.value("comfyq_redis_up") == 0
    assert not any(name == "comfyq_queue_depth" for name, _ in scrape.samples)


def test_metrics_port_in_use_is_one_line_error(fleet_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_comfyq(dict(fleet_settings[0]), "metrics", "--port",
                            str(taken.getsockname()[1]), timeout=20)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("comfyq: error: ") and "Address already in use" in line


def test_asgi_app_serves_the_metrics_inside_a_web_app(fleet, fleet_settings):
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Route

    from comfyq.metrics import metrics_asgi_app, metrics_registry

    app = Starlette(routes=[Route("/metrics", metrics_asgi_app(metrics_registry(fleet_settings[1])))])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
        wait_until(lambda: server.started, timeout=10, interval=0.05)
        scrape = Exporter(url).scrape()
        assert requests.post(url, timeout=10).status_code == 405
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert scrape.value("comfyq_redis_up") == 1
    assert scrape.value("comfyq_workers_online", gpu_type="A100") >= 1
    assert ("comfyq_queue_depth", frozenset({("gpu_type", "T4")})) in scrape.samples
