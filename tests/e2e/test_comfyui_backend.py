"""The ComfyUI backend against the stand-in ComfyUI (a real server on loopback).

The first part drives :class:`ComfyUIBackend` directly with a run context, as the runner does,
for the run flow and every failure path (including a killed, restarted or frozen server
process). The second part goes through real ``comfyq worker --comfyui-url`` processes: the run
records, outputs and webhooks a user sees.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from comfyq.comfyui.backend import ComfyUIBackend, ComfyUIOptions
from comfyq.comfyui.errors import ComfyUIRunError
from comfyq.devtools.comfyui_standin import StandinComfyUI
from comfyq.devtools.standin_process import StandinProcess
from comfyq.execution.runner import RunDeadlinePassed
from comfyq.run_context import RunCancelled, RunContext
from tests.ops_helpers import wait_until

# --- graphs ---------------------------------------------------------------------------------

def invert_graph(prefix: Any = "inverted", color: int = 0xFF0000) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def chain(*nodes: tuple[str, dict[str, Any]], prefix: str = "chain") -> dict[str, Any]:
    """EmptyImage -> each (class, inputs) node in turn -> SaveImage "99"."""
    graph: dict[str, Any] = {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 8, "height": 8, "batch_size": 1, "color": 0x00FF00}}}
    previous = "1"
    for index, (class_type, inputs) in enumerate(nodes, start=10):
        graph[str(index)] = {"class_type": class_type,
                             "inputs": {"images": [previous, 0], **inputs}}
        previous = str(index)
    graph["99"] = {"class_type": "SaveImage",
                   "inputs": {"images": [previous, 0], "filename_prefix": prefix}}
    return graph


def sleep(seconds: float, steps: int) -> tuple[str, dict[str, Any]]:
    return "StandinSleep", {"seconds": seconds, "progress_steps": steps}


# --- running the backend as the runner does ---------------------------------------------------

class Stop:
    """A run's ``check_cancelled``: cancelled when told, past its deadline after ``limit``."""

    def __init__(self, limit: float | None = None) -> None:
        self.cancelled = threading.Event()
        self.deadline = None if limit is None else time.monotonic() + limit

    def __call__(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunDeadlinePassed("deadline")
        if self.cancelled.is_set():
            raise RunCancelled("cancelled")


class Run:
    """One run through a backend, with what it reported."""

    def __init__(self, backend: ComfyUIBackend, root: Path, limit: float | None = None) -> None:
        self.backend = backend
        self.run_id = str(uuid.uuid4())
        self.stop = Stop(limit)
        self.started: list[tuple[str, str, int, int]] = []
        self.progress: list[tuple[float, float, str | None]] = []
        self.node_started = threading.Event()
        self.context = RunContext(
            run_id=self.run_id, output_dir=root / "outputs" / self.run_id,
            temp_dir=root / "temp" / self.run_id, check_cancelled=self.stop,
            report_progress=lambda value, maximum, node: self.progress.append(
                (value, maximum, node)))

    def _started(self, *event: Any) -> None:
        self.started.append(event)
        self.node_started.set()

    def execute(self, graph: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict:
        return self.backend.execute(graph, inputs, self.context, self._started)

    def cancel_once(self, condition: Callable[[], object]) -> threading.Thread:
        """Cancel the run, from another thread, once ``condition()`` holds."""
        def cancel() -> None:
            wait_until(condition, timeout=30, interval=0.02)
            self.stop.cancelled.set()
        thread = threading.Thread(target=cancel, daemon=True)
        thread.start()
        return thread


def options(url: str, **overrides: Any) -> ComfyUIOptions:
    defaults = {"request_timeout": 5.0, "interrupt_grace": 2.0, "unavailable_seconds": 10.0,
                "probe_seconds": 1.0}
    return ComfyUIOptions(url=url, **{**defaults, **overrides})


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def history(url: str, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{url}/history/{prompt_id}", timeout=10).json().get(prompt_id) or {}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    with StandinComfyUI(tmp_path_factory.mktemp("standin")) as server:
        yield server


@pytest.fixture
def backend(standin):
    made = ComfyUIBackend(options(standin.url))
    yield made
    made.close()


@contextlib.contextmanager
def standin_process(tmp_path: Path, *args: str) -> Iterator[StandinProcess]:
    server = StandinProcess(tmp_path / "server", extra_args=args, log_path=tmp_path / "s.log")
    try:
        yield server.start()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        server.kill()


# --- the run flow -------------------------------------------------------------------------------

def test_outputs_are_downloaded_into_the_run_folder_under_unique_server_names(
        standin, backend, tmp_path):
    graph = {**invert_graph(["10", 0]),
             "10": {"class_type": "ComfyUIDeployExternalText",
                    "inputs": {"input_id": "prefix", "default_value": "plain"}},
             "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    first, second = Run(backend, tmp_path), Run(backend, tmp_path)
    outputs = first.execute(graph, {"prefix": "cyan"})
    second.execute(graph, {"prefix": "cyan"})

    assert outputs["3"] == {"images": [{"filename": "cyan_00001_.png",
                                        "subfolder": first.run_id, "type": "output"}]}
    assert (pixels(tmp_path / "outputs" / first.run_id / "cyan_00001_.png") == [0, 255, 255]).all()
    [preview] = outputs["4"]["images"]
    assert preview["type"] == "temp" and preview["subfolder"] == first.run_id
    assert (pixels(tmp_path / "temp" / first.run_id / preview["filename"]) == [255, 0, 0]).all()
    assert (tmp_path / "outputs" / second.run_id / "cyan_00001_.png").is_file()
    assert sorted((node, cls) for node, cls, _, _ in first.started) == [
        ("1", "EmptyImage"), ("10", "ComfyUIDeployExternalText"), ("2", "ImageInvert"),
        ("3", "SaveImage"), ("4", "PreviewImage")]  # the added prefix node is not shown
    posted = history(standin.url, first.run_id)["prompt"][2]
    helper = posted["3"]["inputs"]["filename_prefix"][0]
    assert posted[helper]["inputs"]["string_a"] == f"comfyq/{first.run_id}/"
    saved = history(standin.url, second.run_id)["outputs"]["3"]["images"][0]
    assert saved["subfolder"] == f"comfyq/{second.run_id}"


def test_outputs_of_a_server_on_this_host_are_taken_from_its_output_folder(standin, tmp_path):
    graph = {**invert_graph("linked"),
             "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    backend = ComfyUIBackend(options(standin.url, output_dir=standin.dirs["output"]))
    try:
        run = Run(backend, tmp_path)
        outputs = run.execute(graph)
    finally:
        backend.close()

    [saved] = history(standin.url, run.run_id)["outputs"]["3"]["images"]
    on_server = standin.dirs["output"] / saved["subfolder"] / saved["filename"]
    [kept] = outputs["3"]["images"]
    in_run = tmp_path / "outputs" / run.run_id / kept["filename"]
    assert os.path.samefile(on_server, in_run)  # one file, linked: no HTTP download
    assert (pixels(in_run) == [0, 255, 255]).all()
    # A temp file (a preview) is not in the output folder: it still comes over HTTP.
    [preview] = outputs["4"]["images"]
    assert (pixels(tmp_path / "temp" / run.run_id / preview["filename"]) == [255, 0, 0]).all()


def test_an_output_missing_from_the_given_folder_is_downloaded(standin, tmp_path):
    elsewhere = tmp_path / "not-the-servers-folder"
    elsewhere.mkdir()
    backend = ComfyUIBackend(options(standin.url, output_dir=elsewhere))
    try:
        run = Run(backend, tmp_path)
        [kept] = run.execute(invert_graph("fetched"))["3"]["images"]
    finally:
        backend.close()
    in_run = tmp_path / "outputs" / run.run_id / kept["filename"]
    assert (pixels(in_run) == [0, 255, 255]).all()
    assert in_run.stat().st_nlink == 1


def test_progress_within_a_node_is_reported(backend, tmp_path):
    run = Run(backend, tmp_path)
    run.execute(chain(sleep(0.3, 5)))
    assert run.progress == [(float(step), 5.0, "10") for step in range(1, 6)]
    assert [(node, index, total) for node, _, index, total in run.started] == [
        ("1", 0, 3), ("10", 1, 3), ("99", 2, 3)]


def test_a_rejected_prompt_fails_with_comfyuis_node_errors(backend, tmp_path):
    graph = invert_graph()
    graph["1"]["inputs"]["width"] = 0
    with pytest.raises(ComfyUIRunError) as failure:
        Run(backend, tmp_path).execute(graph)
    error = failure.value.as_dict()
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "1", "EmptyImage", "prompt_outputs_failed_validation")
    [problem] = error["node_errors"]["1"]["errors"]
    assert problem["type"] == "value_smaller_than_min"
    assert "width" in error["exception_message"]


def test_an_accepted_prompt_with_node_errors_is_a_failure_not_a_partial_success(
        standin, backend, tmp_path):
    graph = {**invert_graph(),
             "4": {"class_type": "EmptyImage",
                   "inputs": {"width": 8, "height": 99999, "batch_size": 1, "color": 0}},
             "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0],
                                                         "filename_prefix": "bad"}}}
    run = Run(backend, tmp_path)
    with pytest.raises(ComfyUIRunError) as failure:
        run.execute(graph)
    error = failure.value.as_dict()
    assert error["exception_type"] == "prompt_outputs_failed_validation"
    assert list(error["node_errors"]) == ["4"]
    assert error["node_errors"]["4"]["dependent_outputs"] == ["5"]
    assert not (tmp_path / "outputs" / run.run_id).exists()


def test_execution_error_keeps_node_exception_and_traceback(backend, tmp_path):
    graph = chain(("StandinFail", {"message": "out of paint"}))
    with pytest.raises(ComfyUIRunError) as failure:
        Run(backend, tmp_path).execute(graph)
    error = failure.value.as_dict()
    assert (error["node_id"], error["node_type"], error["exception_type"],
            error["exception_message"]) == ("10", "StandinFail", "RuntimeError", "out of paint")
    assert "raise RuntimeError(message)" in error["traceback"]
    assert error["executed"] == ["1"]


# --- cancel and time limits ----------------------------------------------------------------------

def test_cancel_interrupts_the_running_prompt(standin, backend, tmp_path):
    run = Run(backend, tmp_path)
    run.cancel_once(lambda: run.progress)  # inside the 20 s node
    with pytest.raises(RunCancelled):
        run.execute(chain(sleep(20, 200)))
    messages = history(standin.url, run.run_id)["status"]["messages"]
    assert messages[-1][0] == "execution_interrupted" and messages[-1][1]["node_id"] == "10"
    assert run.progress[-1][0] < 200  # stopped inside the node, not after it


def test_cancel_of_a_queued_prompt_deletes_it_from_comfyuis_queue(standin, backend, tmp_path):
    def queue() -> dict[str, Any]:
        return requests.get(f"{standin.url}/queue", timeout=10).json()

    blocker = f"other-client-{uuid.uuid4().hex[:6]}"
    requests.post(f"{standin.url}/prompt", timeout=10, json={
        "prompt": chain(sleep(30, 300), prefix="other"), "prompt_id": blocker})
    run = Run(backend, tmp_path)
    run.cancel_once(lambda: any(item[1] == run.run_id for item in queue()["queue_pending"]))
    try:
        with pytest.raises(RunCancelled):
            run.execute(invert_graph())
        # Cancelled while the other client's prompt still runs: not waited out behind it.
        assert [item[1] for item in queue()["queue_running"]] == [blocker]
        assert queue()["queue_pending"] == []
    finally:
        requests.post(f"{standin.url}/interrupt", json={"prompt_id": blocker}, timeout=10)
    wait_until(lambda: queue() == {"queue_running": [], "queue_pending": []}, timeout=30)
    assert history(standin.url, run.run_id) == {}  # it never ran


def test_a_node_that_never_yields_ends_the_run_after_the_grace_period(tmp_path):
    with StandinComfyUI(tmp_path / "server") as server:
        backend = ComfyUIBackend(options(server.url, interrupt_grace=1.0))
        run = Run(backend, tmp_path, limit=0.5)
        began = time.monotonic()
        with pytest.raises(RunDeadlinePassed):
            run.execute(chain(sleep(60, 0)))
        elapsed = time.monotonic() - began
        queue = requests.get(f"{server.url}/queue", timeout=10).json()
        backend.close()
    # It asked ComfyUI to interrupt, gave it the grace period, and gave up on the prompt that
    # is still stuck there (its node yields only after 60 s).
    assert server.queue.interrupted.is_set()
    assert elapsed >= 1.0
    assert [item[1] for item in queue["queue_running"]] == [run.run_id]


# --- lost connections and servers -------------------------------------------------------------

@pytest.mark.parametrize(("refuse_seconds", "sleep_seconds"), [(0.2, 3.0), (1.5, 0.6)],
                         ids=["reconnect-mid-run", "finished-while-away"])
def test_websocket_dropped_mid_run_is_recovered(standin, backend, tmp_path, refuse_seconds,
                                                sleep_seconds):
    steps = round(sleep_seconds * 10)
    run = Run(backend, tmp_path)
    graph = chain(("StandinDropWebsockets", {"refuse_seconds": refuse_seconds}),
                  sleep(sleep_seconds, steps))
    outputs = run.execute(graph)
    [image] = outputs["99"]["images"]
    assert (tmp_path / "outputs" / run.run_id / image["filename"]).is_file()
    if refuse_seconds < sleep_seconds:  # reconnected while the sleep still ran: progress came
        assert run.progress and run.progress[-1][:2] == (float(steps), float(steps))


def kill_when_started(run: Run, server: StandinProcess, restart: bool) -> threading.Thread:
    def kill() -> None:
        wait_until(lambda: run.progress, timeout=30, interval=0.02)  # inside the slow node
        if restart:
            server.restart()
        else:
            server.kill()
    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_server_killed_mid_run_is_retried_once_on_the_restarted_server(tmp_path):
    with standin_process(tmp_path) as server:
        backend = ComfyUIBackend(options(server.url))
        run = Run(backend, tmp_path)
        killer = kill_when_started(run, server, restart=True)
        outputs = run.execute(chain(sleep(1.5, 15)))
        killer.join()
        assert history(server.url, run.run_id)["status"]["status_str"] == "success"
        backend.close()
    assert (tmp_path / "outputs" / run.run_id / outputs["99"]["images"][0]["filename"]).is_file()


def test_server_killed_mid_run_fails_the_run_when_retrying_is_off(tmp_path):
    with standin_process(tmp_path) as server:
        backend = ComfyUIBackend(options(server.url, retry_lost_prompt=False))
        run = Run(backend, tmp_path)
        killer = kill_when_started(run, server, restart=True)
        with pytest.raises(ComfyUIRunError) as failure:
            run.execute(chain(sleep(1.5, 15)))
        killer.join()
        backend.close()
    error = failure.value.as_dict()
    assert error["exception_type"] == "ComfyUIServerLost"
    assert "lost the prompt" in error["exception_message"] and "retrying is off" in error[
        "exception_message"]
    assert error["node_id"] == "10" and error["node_type"] == "StandinSleep"


def test_server_gone_for_good_fails_the_run_after_the_wait(tmp_path):
    with standin_process(tmp_path) as server:
        backend = ComfyUIBackend(options(server.url, unavailable_seconds=1.5))
        run = Run(backend, tmp_path)
        killer = kill_when_started(run, server, restart=False)
        with pytest.raises(ComfyUIRunError) as failure:
            run.execute(chain(sleep(5, 50)))
        killer.join()
        backend.close()
    assert failure.value.exception_type == "ComfyUIServerLost"
    assert "no answer for 1.5 s" in failure.value.exception_message
    assert run.progress[-1][0] < 50  # given up on, not waited out


def test_server_that_stops_answering_does_not_hang_the_run(tmp_path):
    with standin_process(tmp_path) as server:
        backend = ComfyUIBackend(options(server.url, request_timeout=0.5, probe_seconds=0.5,
                                         unavailable_seconds=1.5))
        run = Run(backend, tmp_path)

        def freeze() -> None:
            assert run.node_started.wait(20)
            server.process.send_signal(signal.SIGSTOP)

        threading.Thread(target=freeze).start()
        with pytest.raises(ComfyUIRunError) as failure:
            run.execute(chain(sleep(0.2, 1), ("StandinSleep", {"seconds": 30,
                                                               "progress_steps": 0})))
        backend.close()
    # The frozen server never answers again: the run ended on its own limits.
    assert failure.value.exception_type == "ComfyUIServerLost"


# --- input images ----------------------------------------------------------------------------------

@contextlib.contextmanager
def image_server(data: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/input.png"
    finally:
        server.shutdown()


def png(color: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def external_image_graph() -> dict[str, Any]:
    return {"1": {"class_type": "ComfyUIDeployExternalImage", "inputs": {"input_id": "photo"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0],
                                                        "filename_prefix": "photo"}}}


def test_image_url_is_fetched_and_uploaded_when_the_server_lacks_comfydeploy_nodes(tmp_path, loopback_inputs_allowed):
    with StandinComfyUI(tmp_path / "server", hidden_classes=["ComfyUIDeployExternalImage"]
                        ) as server, image_server(png((10, 20, 200))) as url:
        backend = ComfyUIBackend(options(server.url))
        run = Run(backend, tmp_path)
        outputs = run.execute(external_image_graph(), {"photo": url})
        posted = history(server.url, run.run_id)["prompt"][2]
        backend.close()
    assert posted["1"] == {"class_type": "LoadImage",
                           "inputs": {"image": f"comfyq/{run.run_id}_1.png"}}
    saved = tmp_path / "outputs" / run.run_id / outputs["3"]["images"][0]["filename"]
    # 255 - 200 is 54 after float rounding: ComfyUI truncates when it quantises, as comfyq does.
    assert pixels(saved).shape == (4, 6, 3) and (pixels(saved) == [245, 235, 54]).all()


def test_image_url_is_passed_on_when_the_server_has_comfydeploy_nodes(standin, backend, tmp_path,
                                                                      loopback_inputs_allowed):
    with image_server(png((0, 0, 0))) as url:
        run = Run(backend, tmp_path)
        outputs = run.execute(external_image_graph(), {"photo": url})
    posted = history(standin.url, run.run_id)["prompt"][2]
    assert posted["1"]["class_type"] == "ComfyUIDeployExternalImage"
    assert posted["1"]["inputs"]["input_id"] == url
    saved = tmp_path / "outputs" / run.run_id / outputs["3"]["images"][0]["filename"]
    assert (pixels(saved) == [255, 255, 255]).all()


def test_unreachable_image_url_fails_the_run_on_its_node(tmp_path, loopback_inputs_allowed):
    with StandinComfyUI(tmp_path / "server",
                        hidden_classes=["ComfyUIDeployExternalImage"]) as server:
        backend = ComfyUIBackend(options(server.url))
        with pytest.raises(Exception) as failure:
            Run(backend, tmp_path).execute(external_image_graph(),
                                           {"photo": "http://127.0.0.1:9/nothing.png"})
        backend.close()
    assert failure.value.node_id == "1"
    assert failure.value.class_type == "ComfyUIDeployExternalImage"
    assert "input_id" in failure.value.exception_message


# --- through real `comfyq worker --comfyui-url` processes ------------------------------------------

WORKER_GPU = "A100"


class ComfyUIFleet:
    """A stand-in ComfyUI process, a ``comfyq worker`` bound to it, and a client."""

    def __init__(self, redis_url: str, root: Path, worker_args: list[str],
                 standin: StandinProcess | None = None, server_class: str = "StandinSleep",
                 **env: str) -> None:
        import redis

        from comfyq import Client
        from comfyq.devtools.local_fleet import LocalFleet
        from comfyq.settings import Settings
        from comfyq.webhooks.settings import WebhookSettings

        self.root = root
        self.standin = standin
        self.server_class = server_class
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.env = {
            "COMFYQ_REDIS_URL": redis_url, "COMFYQ_GPU_TYPES": WORKER_GPU,
            "COMFYQ_DEFAULT_GPU": WORKER_GPU, "COMFYQ_DATA_DIR": str(root / "data"),
            "COMFYQ_PROGRESS_INTERVAL_SECONDS": "0", "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
            "COMFYQ_WEBHOOK_SCHEDULE": "0,0.2,0.5,1,1", "COMFYQ_WEBHOOK_JITTER": "0",
            "COMFYQ_MACHINES": f"short={WORKER_GPU}", "COMFYQ_MACHINE_MAX_RUN_SECONDS": "short=2",
            "COMFYQ_COMFYUI_INTERRUPT_GRACE_SECONDS": "1", "COMFYQ_COMFYUI_PROBE_SECONDS": "1",
            "COMFYQ_COMFYUI_UNAVAILABLE_SECONDS": "30", **env}
        self.fleet = LocalFleet([WORKER_GPU], self.env, extra_args=["--no-beat", *worker_args],
                                log_path=str(root / "fleet.log"))
        self.client = Client(settings=Settings(
            redis_url=redis_url, gpu_types=[WORKER_GPU], default_gpu=WORKER_GPU,
            data_dir=root / "data", machines={"short": WORKER_GPU},
            machine_max_run_seconds={"short": 2.0}),
            webhook_settings=WebhookSettings(webhook_allow_loopback=True))

    def start(self) -> ComfyUIFleet:
        from comfyq.catalog.reading import published_catalog

        self.fleet.start()
        try:
            self.fleet.wait_ready(self.redis, timeout=90)
            # The worker publishes its server's catalog: a class only the server has shows it.
            wait_until(lambda: (published := published_catalog(self.redis, WORKER_GPU))
                       and self.server_class in published.catalog, timeout=30,
                       describe=lambda: "the server's catalog")
        except Exception:
            print((self.root / "fleet.log").read_text()[-6000:])
            raise
        return self

    def stop(self) -> None:
        self.fleet.stop()

    def submit(self, graph: dict[str, Any], **fields: Any) -> str:
        return self.client.submit({"workflow_id": "comfyui-test", "workflow_api_json": graph,
                                   "gpu": WORKER_GPU, **fields})

    def wait(self, run_id: str, timeout: float = 60):
        try:
            return self.client.wait(run_id, timeout=timeout)
        except Exception:
            print((self.root / "fleet.log").read_text()[-6000:])
            raise

    def live_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).live_status or ""

    def standin_queue_running(self) -> list[str]:
        """Prompt ids the stand-in ComfyUI is executing now."""
        queue = requests.get(f"{self.standin.url}/queue", timeout=10).json()
        return [item[1] for item in queue["queue_running"]]


@pytest.fixture(scope="module")
def comfyui_fleet(database_pool, tmp_path_factory) -> Iterator[ComfyUIFleet]:
    root = tmp_path_factory.mktemp("comfyui-fleet")
    with database_pool.lend() as database:
        server = StandinProcess(root / "server", log_path=root / "standin.log").start()
        fleet = ComfyUIFleet(database, root, ["--comfyui-url", server.url], standin=server)
        try:
            yield fleet.start()
        finally:
            fleet.stop()
            server.kill()


def local_file(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def test_worker_runs_the_graph_on_comfyui_and_records_the_png(comfyui_fleet):
    from comfyq import RunStatus

    graph = {**invert_graph(["10", 0]),
             "10": {"class_type": "ComfyUIDeployExternalText",
                    "inputs": {"input_id": "prefix", "default_value": "plain"}}}
    run_id = comfyui_fleet.submit(graph, inputs={"prefix": "cyan"})
    run = comfyui_fleet.wait(run_id)
    assert run.status == RunStatus.SUCCESS, run.error
    assert (run.progress, run.live_status) == (1.0, "Done")
    [output] = run.outputs
    assert (output.node_id, output.node_meta) == ("3", {"node_class": "SaveImage"})
    [image] = output.data["images"]
    assert (image["filename"], image["subfolder"], image["type"]) == (
        "cyan_00001_.png", run_id, "output")
    assert (pixels(local_file(image["url"])) == [0, 255, 255]).all()
    on_server = history(comfyui_fleet.standin.url, run_id)["outputs"]["3"]["images"][0]
    assert on_server["subfolder"] == f"comfyq/{run_id}"


def test_validation_failure_on_the_server_is_recorded_with_its_node_errors(comfyui_fleet):
    from comfyq import RunStatus

    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "not-on-this-server.png"}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    run = comfyui_fleet.wait(comfyui_fleet.submit(graph))
    assert run.status == RunStatus.FAILED
    assert run.error["exception_type"] == "prompt_outputs_failed_validation"
    [problem] = run.error["node_errors"]["1"]["errors"]
    assert problem["type"] == "custom_validation_failed"
    assert "Invalid image file: not-on-this-server.png" in problem["details"]
    assert run.live_status.startswith("Failed at node 1:")


def test_execution_error_reaches_the_run_record_and_the_final_webhook(comfyui_fleet):
    from comfyq import RunStatus
    from comfyq.devtools.local_receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        run_id = comfyui_fleet.submit(chain(("StandinFail", {"message": "no more paint"})),
                                      webhook=receiver.url)
        run = comfyui_fleet.wait(run_id)
        assert receiver.wait_for(lambda deliveries: deliveries, 20)
        [delivery] = receiver.accepted()
    assert run.status == RunStatus.FAILED
    expected = {"node_id": "10", "node_type": "StandinFail", "exception_type": "RuntimeError",
                "exception_message": "no more paint"}
    assert {key: run.error[key] for key in expected} == expected
    assert "raise RuntimeError(message)" in run.error["traceback"]
    body = delivery.json()
    assert body["status"] == "failed"
    assert {key: body["error"][key] for key in expected} == expected
    assert body["error"]["traceback"] == run.error["traceback"]


def test_cancel_deletes_a_queued_prompt_and_interrupts_a_running_one(comfyui_fleet):
    from comfyq import RunStatus

    url = comfyui_fleet.standin.url
    blocker = f"someone-else-{uuid.uuid4().hex[:6]}"
    requests.post(f"{url}/prompt", json={"prompt": chain(sleep(30, 300), prefix="busy"),
                                         "prompt_id": blocker}, timeout=10)
    queued = comfyui_fleet.submit(invert_graph())
    wait_until(lambda: any(item[1] == queued for item in requests.get(
        f"{url}/queue", timeout=10).json()["queue_pending"]), timeout=30)
    comfyui_fleet.client.cancel(queued)
    assert comfyui_fleet.wait(queued, 10).status == RunStatus.CANCELLED
    assert queued not in str(requests.get(f"{url}/queue", timeout=10).json())
    requests.post(f"{url}/interrupt", json={"prompt_id": blocker}, timeout=10)

    running = comfyui_fleet.submit(chain(sleep(30, 300)))
    wait_until(lambda: comfyui_fleet.live_status(running).startswith("Executing StandinSleep"),
               timeout=30)
    comfyui_fleet.client.cancel(running)
    run = comfyui_fleet.wait(running, 10)
    assert run.status == RunStatus.CANCELLED
    # Interrupted inside its 30 s node, not waited out.
    assert history(url, running)["status"]["messages"][-1][0] == "execution_interrupted"
    assert history(url, queued) == {}


def test_server_killed_mid_run_the_run_is_retried_on_the_restarted_server(comfyui_fleet):
    from comfyq import RunStatus

    run_id = comfyui_fleet.submit(chain(sleep(2, 20)))
    wait_until(lambda: comfyui_fleet.live_status(run_id).startswith("Executing StandinSleep"),
               timeout=30)
    comfyui_fleet.standin.restart()
    run = comfyui_fleet.wait(run_id)
    assert run.status == RunStatus.SUCCESS, run.error
    assert local_file(run.outputs[0].data["images"][0]["url"]).is_file()
    assert history(comfyui_fleet.standin.url, run_id)["status"]["status_str"] == "success"


def test_websocket_dropped_mid_run_the_run_still_succeeds(comfyui_fleet):
    from comfyq import RunStatus

    graph = chain(("StandinDropWebsockets", {"refuse_seconds": 0.5}), sleep(1.0, 10))
    run = comfyui_fleet.wait(comfyui_fleet.submit(graph))
    assert run.status == RunStatus.SUCCESS, run.error
    assert local_file(run.outputs[0].data["images"][0]["url"]).is_file()


def test_node_that_never_yields_is_timed_out_after_the_grace_period(comfyui_fleet):
    from comfyq import RunStatus

    run_id = comfyui_fleet.submit(chain(sleep(600, 0)), machine_id="short")
    try:
        run = comfyui_fleet.wait(run_id, 20)
        assert run.status == RunStatus.TIMEOUT
        assert run.error["exception_type"] == "RunTimeout"
        # Not before its 2 s limit; ended by it, not by the ten-minute node.
        assert run.run_duration >= 2.0
        assert comfyui_fleet.standin_queue_running() == [run_id]
    finally:
        comfyui_fleet.standin.restart()  # the node would hold the server for ten minutes


# --- `comfyq worker --comfyui-path`: a launched, supervised server per device ----------------------

FAKE_MAIN = '''\
"""Stands in for ComfyUI's main.py: records how it was launched, then serves the stand-in."""
import json, os, sys
with open(os.environ["COMFYQ_TEST_LAUNCH_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "pid": os.getpid(), "cwd": os.getcwd(),
                          "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
from comfyq.devtools.comfyui_standin import main
sys.exit(main(sys.argv[1:]))
'''


def launches(log: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_worker_launches_its_comfyui_pinned_to_its_device_and_restarts_it(fresh_redis_url,
                                                                          tmp_path):
    from comfyq import RunStatus
    from comfyq.devtools.standin_process import free_port

    checkout = tmp_path / "ComfyUI"
    checkout.mkdir()
    (checkout / "main.py").write_text(FAKE_MAIN)
    log = tmp_path / "launches.jsonl"
    port = free_port()
    fleet = ComfyUIFleet(fresh_redis_url, tmp_path,
                         ["--comfyui-path", str(checkout)], COMFYQ_COMFYUI_BASE_PORT=str(port),
                         COMFYQ_TEST_LAUNCH_LOG=str(log))
    fleet.start()
    try:
        [launch] = launches(log)
        folders = tmp_path / "data" / "comfyui" / "gpu0"
        assert launch["cuda"] == "" and launch["cwd"] == str(checkout)
        arguments = " ".join(launch["argv"])
        assert f"--listen 127.0.0.1 --port {port}" in arguments
        assert f"--output-directory {folders / 'output'}" in arguments and "--cpu" in arguments
        first = fleet.wait(fleet.submit(invert_graph()))
        assert first.status == RunStatus.SUCCESS, first.error
        assert (folders / "output" / "comfyq" / first.id / "inverted_00001_.png").is_file()

        os.kill(launch["pid"], signal.SIGKILL)
        wait_until(lambda: len(launches(log)) == 2, timeout=30)
        second = fleet.wait(fleet.submit(invert_graph()))
        assert second.status == RunStatus.SUCCESS, second.error
        assert local_file(second.outputs[0].data["images"][0]["url"]).is_file()
    finally:
        fleet.stop()
    assert all(not Path(f"/proc/{entry['pid']}").exists() for entry in launches(log))


@pytest.mark.parametrize(("arguments", "message"), [
    (["--comfyui-url", "http://127.0.0.1:8188"],
     "--comfyui-url names 1 server(s) for 2 device(s)"),
    (["--comfyui-url", "ftp://host,http://127.0.0.1:8188"], "expected http://host:port"),
    (["--comfyui-path", "/nonexistent/ComfyUI"], "no main.py there"),
    (["--comfyui-url", "http://a:1,http://b:2", "--comfyui-path", "/opt/ComfyUI"], "not both"),
])
def test_worker_refuses_a_comfyui_setup_it_cannot_serve(arguments, message, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "COMFYQ_GPU_TYPES": "A100,T4", "COMFYQ_DATA_DIR": str(tmp_path),
           "COMFYQ_DEFAULT_GPU": "A100"}
    result = subprocess.run([sys.executable, "-m", "comfyq.cli", "worker", "--gpus", "A100,T4",
                             *arguments], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0
    assert message in result.stderr and result.stderr.startswith("comfyq: error:")
