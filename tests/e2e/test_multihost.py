"""A fleet across hosts that share nothing but a network: Linux network namespaces on a virtual
switch, each host running real processes and reaching the others only by address.

- ``redis``: redis-server; ``s3``: moto's S3 server; ``api``: ``comfyq api`` and the callback
  worker with beat (``comfyq worker --cpu-only``); ``gpu-a``, ``gpu-b``: ``comfyq worker --gpus
  T4``, each with its own data folder; ``app``: the client (ComfyDeploy's SDK) and a webhook
  receiver, allowed by address (``COMFYQ_WEBHOOK_ALLOWED_NETWORKS``), not by a loopback switch.
- From ``app``: runs are queued and followed through the SDK, and every output is downloaded from
  the URLs the API returns (presigned URLs of the bucket); the bytes are the executing worker's.
- The GPU host executing a run is cut off mid-run: the run re-executes on the other host once
  its lease expires and ends ``success`` once, with the other host's outputs; healed, the cut
  host's late writes are refused by the lease fence.
- ``s3`` is cut while a run's output is uploaded: the upload retries and the run ends right.
- The run pages, opened from ``app`` in a browser, show the run's thumbnail.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from comfyq.devtools.local_receiver import WebhookReceiver
from comfyq.redis import keys
from comfyq.runs.codec import decode_value
from comfyq.worker_presence import online_workers
from tests.netns import HostNetwork, NamespacesUnavailable, NamespaceThread, leftover_names
from tests.e2e.test_web import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, sign_in
from tests.ops_helpers import comfyq_command
from tests.paths import MULTIHOST_NODES, REPO
from tests.s3_server import BUCKET, S3_CREDENTIALS, moto_command, s3_client, wait_for_s3

comfydeploy = pytest.importorskip("comfydeploy", reason="pip install 'comfydeploy>=0.6,<0.7'")
pytest.importorskip("moto", reason="pip install 'moto[server]>=5,<6'")
from comfydeploy.models import components  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")

TOKEN = "multihost-token"
GPU_HOSTS = ("gpu-a", "gpu-b")
#: How long the slow node of a run takes on its worker.
SLOW_SECONDS = 4.0
LEASE_TTL_SECONDS = 2.0
#: Side of the noisy image whose upload is cut (a PNG of about 4 MB), and the rate of s3's link
#: meanwhile (about two seconds for it).
NOISY_SIDE = 1200
UPLOAD_RATE = "16mbit"


@dataclass
class Fleet:
    """The hosts, the processes on them and their logs."""

    network: HostNetwork
    app: NamespaceThread
    data_dirs: dict[str, Path]
    logs: dict[str, Path]
    redis: redis.Redis
    processes: list[subprocess.Popen] = field(default_factory=list)

    def address(self, host: str) -> str:
        return self.network.hosts[host].address

    @property
    def api_url(self) -> str:
        return f"http://{self.address('api')}:8000"

    def log(self, host: str) -> str:
        return self.logs[host].read_text(errors="replace")

    def tails(self) -> str:
        return "\n".join(f"--- {host} ---\n{self.log(host)[-2500:]}" for host in self.logs)


def _start(logs: dict[str, Path], folder: Path, processes: list, host: Any, argv: list[str],
           env: dict[str, str], log_name: str) -> subprocess.Popen:
    """``argv`` on ``host``, its output in ``folder/<log_name>.log``."""
    log = logs.setdefault(log_name, folder / f"{log_name}.log")
    with open(log, "ab") as output:
        process = subprocess.Popen(host.command(*argv), env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(process)
    return process


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the processes, the last started first (workers before the Redis they talk to)."""
    processes = processes[::-1]
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _wait(predicate, timeout: float, what: str, fleet: Fleet | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout:g} s"
                         + (f"\n{fleet.tails()}" if fleet else ""))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    tag = f"cq{os.getpid() % 10000:04d}"
    try:
        network = HostNetwork(100 + os.getpid() % 100, tag)
    except NamespacesUnavailable as error:
        pytest.skip(f"cannot create network namespaces here (`ip netns add` failed: {error})")
    root = tmp_path_factory.mktemp("multihost")
    logs: dict[str, Path] = {}
    processes: list[subprocess.Popen] = []
    app: NamespaceThread | None = None
    try:
        hosts = {name: network.add_host(name)
                 for name in ("redis", "s3", "api", *GPU_HOSTS, "app")}
        address = {name: host.address for name, host in hosts.items()}
        _start(logs, root, processes, hosts["redis"],
               ["redis-server", "--bind", address["redis"], "--port", "6379", "--save", "",
                "--appendonly", "no", "--protected-mode", "no"], dict(os.environ), "redis")
        _start(logs, root, processes, hosts["s3"], moto_command(address["s3"], 5000),
               dict(os.environ), "s3")
        endpoint = f"http://{address['s3']}:5000"
        wait_for_s3(endpoint)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        common = {
            **os.environ, **S3_CREDENTIALS, "PYTHONPATH": str(REPO),
            "COMFYQ_REDIS_URL": f"redis://{address['redis']}:6379/0",
            "COMFYQ_GPU_TYPES": "T4", "COMFYQ_DEFAULT_GPU": "T4",
            "COMFYQ_STORAGE": "s3", "COMFYQ_S3_ENDPOINT_URL": endpoint,
            "COMFYQ_S3_REGION": "us-east-1", "COMFYQ_S3_BUCKET": BUCKET,
            "COMFYQ_S3_PREFIX": "fleet", "COMFYQ_S3_ADDRESSING_STYLE": "path",
            "COMFYQ_S3_UPLOAD_RETRY_SECONDS": "60", "COMFYQ_S3_TIMEOUT_SECONDS": "3",
            "COMFYQ_LEASE_TTL_SECONDS": str(LEASE_TTL_SECONDS),
            "COMFYQ_MAINTENANCE_INTERVAL_SECONDS": "0.5",
            "COMFYQ_WEBHOOK_ALLOWED_NETWORKS": f"{address['app']}/32",
            "COMFYQ_WEBHOOK_SCHEDULE": "0,0.5,1,2,4", "COMFYQ_WEBHOOK_JITTER": "0",
            "COMFYQ_CUSTOM_NODES_DIRS": str(MULTIHOST_NODES),
        }
        for name in ("COMFYQ_WEBHOOK_ALLOW_LOOPBACK", "COMFYQ_WEBHOOK_ALLOW_PRIVATE"):
            common.pop(name, None)
        data_dirs = {name: root / f"data-{name}" for name in ("api", *GPU_HOSTS)}
        _start(logs, root, processes, hosts["api"],
               [*comfyq_command(), "api", "--host", address["api"], "--port", "8000"],
               {**common, "COMFYQ_API_TOKENS": TOKEN,
                "COMFYQ_DATA_DIR": str(data_dirs["api"])}, "api")
        _start(logs, root, processes, hosts["api"],
               [*comfyq_command(), "worker", "--cpu-only", "--hostname", "api"],
               {**common, "COMFYQ_DATA_DIR": str(data_dirs["api"])}, "api-callbacks")
        for name in GPU_HOSTS:
            _start(logs, root, processes, hosts[name],
                   [*comfyq_command(), "worker", "--gpus", "T4", "--no-callbacks", "--no-beat",
                    "--hostname", name],
                   {**common, "COMFYQ_DATA_DIR": str(data_dirs[name])}, name)
        client = redis.Redis(host=address["redis"], port=6379, decode_responses=True)
        app = NamespaceThread(hosts["app"])
        fleet = Fleet(network, app, data_dirs, logs, client, processes)

        def ready() -> bool:
            names = {worker["name"].split("@")[-1] + ":" + str(worker.get("gpu_type"))
                     for worker in online_workers(client)}
            try:
                healthy = requests.get(f"{fleet.api_url}/ready", timeout=1).status_code == 200
            except requests.RequestException:
                healthy = False
            return healthy and {"gpu-a:T4", "gpu-b:T4"} <= names and any(
                name.startswith("api:") for name in names)

        _wait(ready, 90, "the fleet online", fleet)
        yield fleet
    finally:
        if app is not None:
            app.close()
        _stop(processes)
        network.close()
        assert leftover_names(tag) == [], "namespaces or links were left behind"


# --- what the app host does, through ComfyDeploy's SDK ---------------------------------------

def _graph(prefix: str, color: int, seconds: float, side: int = 0,
           noise: float = 0.0) -> dict[str, Any]:
    """EmptyImage (64x48, or ``side`` square) -> MultiHostSlowPass -> SaveImage."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": side or 64, "height": side or 48, "batch_size": 1,
                         "color": color}},
        "2": {"class_type": "MultiHostSlowPass", "inputs": {"image": ["1", 0],
                                                            "seconds": seconds,
                                                            "noise": noise}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                    "filename_prefix": prefix}},
    }


def _queue(sdk, graph: dict[str, Any], webhook: str) -> str:
    request = components.WorkflowRunRequest.model_construct(
        workflow_id="multihost", workflow_api_json=graph, gpu="T4", webhook=webhook)
    return sdk.run.workflow.queue(request=request).create_run_response.run_id


def _follow(sdk, run_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        run = sdk.run.get(run_id=run_id).workflow_run_model
        if not seen or seen[-1] != run.status:
            seen.append(run.status)
        if run.status in ("success", "failed", "timeout", "cancelled"):
            return run, seen
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {seen[-1]} after {timeout:g} s")


def _download(url: str) -> bytes:
    answer = requests.get(url, timeout=20)
    assert answer.status_code == 200, f"{url} answered {answer.status_code}"
    return answer.content


def _run_page_file(api_url: str, run_id: str) -> bytes:
    answer = requests.get(f"{api_url}/ui/files/{run_id}/0",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    return answer.content


class App:
    """The client host: an SDK and a webhook receiver, both on ``app``'s network."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.sdk = fleet.app.call(lambda: comfydeploy.ComfyDeploy(
            bearer=TOKEN, server_url=f"{fleet.api_url}/api"))
        self.receiver = fleet.app.call(lambda: WebhookReceiver(host=fleet.address("app")))
        self.receiver.__enter__()

    def queue(self, graph: dict[str, Any]) -> str:
        return self.fleet.app.call(_queue, self.sdk, graph, self.receiver.url)

    def follow(self, run_id: str, timeout: float = 60) -> Any:
        return self.fleet.app.call(_follow, self.sdk, run_id, timeout)

    def get(self, run_id: str) -> Any:
        return self.fleet.app.call(lambda: self.sdk.run.get(run_id=run_id).workflow_run_model)

    def download(self, url: str) -> bytes:
        return self.fleet.app.call(_download, url)

    def run_page_file(self, run_id: str) -> bytes:
        return self.fleet.app.call(_run_page_file, self.fleet.api_url, run_id)

    def finals(self, run_id: str) -> list[dict[str, Any]]:
        return [delivery.json() for delivery in self.receiver.accepted()
                if delivery.json().get("run_id") == run_id
                and delivery.json().get("status") in ("success", "failed")]

    def close(self) -> None:
        self.receiver.__exit__()


@pytest.fixture
def app(fleet) -> Iterator[App]:
    client = App(fleet)
    try:
        yield client
    finally:
        client.close()


def _worker_file(fleet: Fleet, host: str, run_id: str, filename: str) -> bytes:
    return (fleet.data_dirs[host] / "outputs" / run_id / filename).read_bytes()


def _host_of(worker: str | None) -> str:
    return (worker or "").split("@")[-1]


def _recorded(fleet: Fleet, run_id: str, name: str) -> Any:
    """A field of the run's record, as the test (not the app) reads it from Redis."""
    return decode_value(fleet.redis.hget(keys.run(run_id), name))


def _executing_host(fleet: Fleet, run_id: str) -> str | None:
    """The GPU host executing the run once it is running."""
    status = fleet.redis.hget(keys.run(run_id), "status")
    return _host_of(_recorded(fleet, run_id, "worker")) if status == "running" else None


def _check_outputs(fleet: Fleet, app: App, run: Any, prefix: str) -> tuple[str, bytes]:
    """The run's one image, downloaded from ``app`` through the URL the API gave, is the
    executing worker's file; the run page serves the same bytes."""
    [output] = run.outputs
    [image] = output.data["images"]
    assert image.filename == f"{prefix}_00001_.png"
    assert image.url.startswith(f"http://{fleet.address('s3')}:5000/{BUCKET}/fleet/{run.id}/")
    assert "X-Amz-Signature=" in image.url
    host = _host_of(_recorded(fleet, run.id, "worker"))
    downloaded = app.download(image.url)
    assert downloaded == _worker_file(fleet, host, run.id, image.filename)
    assert app.run_page_file(run.id) == downloaded
    return host, downloaded


def _object_workers(fleet: Fleet, run_id: str) -> dict[str, str]:
    """key -> the worker that uploaded it, of every object the run has in the bucket."""
    s3 = s3_client(f"http://{fleet.address('s3')}:5000")
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"fleet/{run_id}/").get("Contents", [])
    return {entry["Key"]: s3.head_object(Bucket=BUCKET, Key=entry["Key"])["Metadata"]["worker"]
            for entry in listing}


def test_runs_queued_from_another_host_give_outputs_it_can_download(fleet, app, record_counts):
    run_ids = [app.queue(_graph(f"plain{index}", 0x102030 * (index + 1), 0.2))
               for index in range(4)]
    hosts = []
    for index, run_id in enumerate(run_ids):
        run, seen = app.follow(run_id)
        assert run.status == "success", (run.error, fleet.tails())
        host, _ = _check_outputs(fleet, app, run, f"plain{index}")
        hosts.append(host)
        assert _wait(lambda: app.finals(run_id), 20, "the final webhook")[0]["status"] == "success"
        [final] = app.finals(run_id)
        assert final["outputs"][0]["data"]["images"][0]["url"].startswith(
            f"http://{fleet.address('s3')}:5000/{BUCKET}/fleet/{run_id}/")
    assert set(hosts) <= set(GPU_HOSTS)
    record_counts(runs=len(run_ids), on_gpu_a=hosts.count("gpu-a"),
                  on_gpu_b=hosts.count("gpu-b"), webhooks=len(app.receiver.accepted()))


def test_a_gpu_host_cut_off_mid_run_hands_the_run_to_the_other(fleet, app, record_counts):
    run_id = app.queue(_graph("moved", 0x445566, SLOW_SECONDS))
    victim = _wait(lambda: _executing_host(fleet, run_id), 30, "the run started", fleet)
    survivor = next(host for host in GPU_HOSTS if host != victim)
    time.sleep(0.5)
    fleet.network.cut(victim)
    cut_at = time.monotonic()
    try:
        moved = _wait(lambda: _executing_host(fleet, run_id) == survivor, 30,
                      f"the run taken over by {survivor}", fleet)
        taken_over_after = time.monotonic() - cut_at
    finally:
        fleet.network.heal(victim)
    run, seen = app.follow(run_id, timeout=60)
    assert moved and run.status == "success", (run.error, fleet.tails())
    host, _ = _check_outputs(fleet, app, run, "moved")
    attempts = _recorded(fleet, run_id, "attempts")
    assert host == survivor and attempts >= 2

    # Healed, the cut host finds its lease gone: its writes are refused, nothing of it counts.
    refused = re.compile(rf"run {run_id}(: lease lost mid-run|: ending it \w+ was refused)|"
                         rf"lease of run {run_id} was lost")
    _wait(lambda: refused.search(fleet.log(victim)), 30, f"{victim}'s late write refused", fleet)
    time.sleep(1)
    again = app.get(run_id)
    assert again.status == "success"
    assert _host_of(_recorded(fleet, run_id, "worker")) == survivor
    assert again.outputs[0].data["images"][0].url.split("?")[0] == \
        run.outputs[0].data["images"][0].url.split("?")[0]
    uploaded = _object_workers(fleet, run_id)
    referenced = run.outputs[0].data["images"][0].url.split("?")[0].split(f"/{BUCKET}/", 1)[1]
    assert _host_of(uploaded[referenced]) == survivor
    finals = _wait(lambda: app.finals(run_id), 20, "the final webhook")
    time.sleep(1)
    assert [final["status"] for final in app.finals(run_id)] == ["success"]
    record_counts(cut=victim, took_over=survivor, taken_over_after_s=round(taken_over_after, 1),
                  attempts=attempts, success_events=len(finals),
                  objects=len(uploaded),
                  objects_by_cut_host=sum(_host_of(w) == victim for w in uploaded.values()))


def test_storage_cut_off_during_an_upload_is_retried_and_the_run_ends_right(fleet, app,
                                                                            record_counts):
    # An incompressible output and a slow link to s3: its upload lasts seconds, long enough to
    # cut s3 off while the worker's bytes are on their way.
    fleet.network.shape("s3", UPLOAD_RATE)
    try:
        run_id = app.queue(_graph("retried", 0x778899, 0.2, side=NOISY_SIDE, noise=1.0))
        host = _wait(lambda: _executing_host(fleet, run_id), 30, "the run started", fleet)
        in_flight = _wait(lambda: fleet.network.bytes_unsent(host, fleet.address("s3"), 5000)
                          > 64 * 1024, 30, "the upload under way", fleet)
        fleet.network.cut("s3")
        try:
            cut_while_unsent = fleet.network.bytes_unsent(host, fleet.address("s3"), 5000)
            failed = rf"run {run_id}: upload of .* failed"
            _wait(lambda: re.search(failed, fleet.log(host)), 40,
                  "the cut upload's attempt failing", fleet)
        finally:
            fleet.network.heal("s3")
        run, seen = app.follow(run_id, timeout=90)
    finally:
        fleet.network.unshape("s3")
    assert in_flight and cut_while_unsent > 0
    assert run.status == "success", (run.error, fleet.tails())
    _, downloaded = _check_outputs(fleet, app, run, "retried")
    failures = len(re.findall(failed, fleet.log(host)))
    assert failures >= 1 and len(downloaded) > 1_000_000
    record_counts(upload_failures=failures, unsent_bytes_at_cut=cut_while_unsent,
                  output_bytes=len(downloaded), statuses="->".join(seen))


def _thumbnail_width(api_url: str, run_id: str, filename: str) -> int:
    """Open the run's page in a browser (started from this thread: on its host's network) and
    answer the width of the thumbnail it shows."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            sign_in(page, f"{api_url}/ui/run?id={run_id}", TOKEN)
            thumbnail = page.get_by_role("img", name=filename)
            expect(thumbnail).to_be_visible()
            page.wait_for_function("image => image.complete && image.naturalWidth > 0",
                                   arg=thumbnail.element_handle())
            return thumbnail.evaluate("image => image.naturalWidth")
        finally:
            browser.close()


def test_the_run_page_opened_from_the_app_host_shows_the_thumbnail(fleet, app):
    if not Path(CHROMIUM).exists():
        reason = (f"no Chromium at {CHROMIUM}: install Debian's chromium or set "
                  "COMFYQ_TEST_CHROMIUM")
        if os.environ.get("CI"):  # CI installs it, as for the run-page tests
            pytest.fail(reason)
        pytest.skip(reason)
    run_id = app.queue(_graph("paged", 0x203040, 0.2))
    run, _ = app.follow(run_id)
    assert run.status == "success", run.error
    assert fleet.app.call(_thumbnail_width, fleet.api_url, run_id, "paged_00001_.png") == 64
