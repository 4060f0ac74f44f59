"""The HTTP API, driven over real HTTP: ``comfyq api`` in its own process, the session's real fleet.

Every test speaks to the server only with ``requests``, as an application in another language
would, and checks what that application sees: status codes, bodies, headers and events.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import requests

from comfyq import RunStatus
from comfyq.execution.runner import CANCEL_CHECK_SECONDS
from comfyq.redis import keys
from tests.helpers import invert_graph, request
from tests.ops_helpers import GatedImageServer, held_graph, wait_until

TOKENS = ("first-token", "second-token")
MAX_BODY_BYTES = 64 * 1024
SYNC_TIMEOUT_SECONDS = 5
HTTP_TIMEOUT = 60


@dataclass
class ApiServer:
    """A running API: its root URL and the prefix of its run endpoints."""

    root: str
    prefix: str = "/api"

    def url(self, path: str) -> str:
        return f"{self.root}{self.prefix}{path}"

    def call(self, method: str, path: str, token: str | None = TOKENS[0],
             **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url(path), headers=headers, timeout=HTTP_TIMEOUT,
                                **kwargs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(root: str, process: subprocess.Popen | None = None) -> None:
    def healthy() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"comfyq api exited with code {process.returncode}")
        try:
            return requests.get(f"{root}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, timeout=30, describe=lambda: f"no answer from {root}/health")


def api_environment(fleet_settings) -> dict[str, str]:
    env, _ = fleet_settings
    return {**os.environ, **env, "COMFYQ_API_TOKENS": ",".join(TOKENS),
            "COMFYQ_API_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "COMFYQ_API_SYNC_TIMEOUT_SECONDS": str(SYNC_TIMEOUT_SECONDS)}


@contextlib.contextmanager
def api_process(environment: dict[str, str], log: Path) -> Iterator[str]:
    """``comfyq api`` in its own process with ``environment``; yields its root URL once it
    answers, and prints the end of its log when something fails."""
    port = free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfyq.cli", "api", "--port", str(port)],
            env=environment, stdout=output, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(root, process)
        yield root
    except Exception:
        print(log.read_text()[-3000:])
        raise
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def api(fleet, fleet_settings, tmp_path_factory) -> Iterator[ApiServer]:
    """``comfyq api`` in its own process, against the session's fleet."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    with api_process(api_environment(fleet_settings), log) as root:
        yield ApiServer(root)


class ThreadedServer:
    """uvicorn serving ``app`` from a thread of this process, on a socket bound beforehand."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        wait_for_health(self.root)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def run_count(redis_client) -> int:
    return redis_client.zcard(keys.RUNS_INDEX)


def server_events(response: requests.Response) -> Iterator[tuple[str, Any]]:
    """(event, decoded data) of each server-sent event; comments are skipped."""
    event, data = None, []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


# --- queue, get, cancel ---------------------------------------------------------------------------


def test_queue_then_get_answers_comfydeploys_run_model(api, client):
    answer = api.call("POST", "/run/workflow/queue",
                      json=request(invert_graph(), inputs={"width": 10, "prefix": "viahttp"}))
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run_id"]
    assert answer.json() == {"run_id": run_id}
    assert client.wait(run_id, 60).status == RunStatus.SUCCESS

    got = api.call("GET", f"/run/{run_id}")
    assert got.status_code == 200
    run = got.json()
    assert run["id"] == run_id and run["status"] == "success" and run["progress"] == 1.0
    assert run["workflow_inputs"] == {"width": 10, "prefix": "viahttp"}
    assert run["gpu"] == "T4" and run["origin"] == "api"
    # Nullable fields are present as null, not left out.
    for field in ("machine_id", "webhook", "webhook_status", "error", "workflow_version_id",
                  "user_id", "org_id"):
        assert field in run and run[field] is None, field
    assert run["started_at"] and run["ended_at"] and run["run_duration"] >= 0
    [output] = run["outputs"]
    assert output["node_id"] == "3" and output["run_id"] == run_id
    assert output["data"]["images"][0]["filename"] == "viahttp_00001_.png"


def test_same_idempotency_key_queues_one_run(api, redis_client):
    headers = {"Idempotency-Key": f"order-{time.time_ns()}"}
    before = run_count(redis_client)
    first = api.call("POST", "/run/workflow/queue", json=request(), headers=headers)
    again = api.call("POST", "/run/workflow/queue", json=request(), headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["run_id"] == again.json()["run_id"]
    assert run_count(redis_client) == before + 1


def test_a_batch_answers_each_request_as_the_single_endpoint_would(api, client, redis_client):
    good = request(inputs={"prefix": "batched"})
    bad_field = {**request(), "webhook_intermediate_status": "yes"}
    unknown_gpu = request(gpu="NO-SUCH-GPU")
    before = run_count(redis_client)
    answer = api.call("POST", "/run/workflow/queue/batch",
                      json={"runs": [good, bad_field, unknown_gpu, good]})
    assert answer.status_code == 200, answer.text
    first, refused, no_gpu, last = answer.json()["runs"]

    alone = api.call("POST", "/run/workflow/queue", json=bad_field)
    assert refused == {"run_id": None, "status": 422, "error": alone.json()}
    assert no_gpu["status"] == 422 and no_gpu["error"]["detail"][0]["field"] == "gpu"
    assert run_count(redis_client) == before + 2
    for queued in (first, last):
        assert queued["status"] == 200 and queued["error"] is None
        assert client.wait(queued["run_id"], 60).status == RunStatus.SUCCESS


@pytest.mark.parametrize("body,field", [
    ([request()], "request"), ({"runs": request()}, "runs"), ({"runs": [], "x": 1}, "request"),
    ({"runs": [request(), 7]}, "runs.1"),
    ({"runs": [{}] * 1001}, "runs")])
def test_a_malformed_batch_is_422_and_queues_nothing(api, redis_client, body, field):
    before = run_count(redis_client)
    answer = api.call("POST", "/run/workflow/queue/batch", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["field"] == field
    assert run_count(redis_client) == before


def test_cancel_queued_and_running_runs(api, client):
    with GatedImageServer() as gate:
        busy = api.call("POST", "/run/workflow/queue", json=request(
            held_graph("busy"), gpu="T4", inputs={"picture": gate.url()})).json()["run_id"]
        assert gate.requested.wait(30)
        # The worker claimed the run (and last looked at its cancel flag) before its download
        # began; it looks again at its first check CANCEL_CHECK_SECONDS after that.
        next_look_due = time.time() + CANCEL_CHECK_SECONDS
        queued = api.call("POST", "/run/workflow/queue", json=request(gpu="T4")).json()["run_id"]

        cancelled_queued = api.call("POST", f"/run/{queued}/cancel")
        cancelled_running = api.call("POST", f"/run/{busy}/cancel", json={"function_id": "x"})
        # So the check at the next node asks Redis and sees the cancel.
        wait_until(lambda: time.time() >= next_look_due, interval=0.02)
        gate.open()
        assert client.wait(busy, 60).status == RunStatus.CANCELLED

    assert cancelled_queued.status_code == 200
    assert cancelled_queued.json() == {"run_id": queued, "cancelled": True, "status": "cancelled",
                                       "message": "cancelled before it started"}
    assert cancelled_running.status_code == 200
    assert cancelled_running.json()["cancelled"] is True
    assert "next node" in cancelled_running.json()["message"]
    assert api.call("GET", f"/run/{queued}").json()["status"] == "cancelled"
    again = api.call("POST", f"/run/{queued}/cancel").json()
    assert again["cancelled"] is False and "already finished" in again["message"]


@pytest.mark.parametrize("method,path", [("GET", "/run/no-such-run"),
                                         ("POST", "/run/no-such-run/cancel")])
def test_unknown_run_is_404(api, method, path):
    answer = api.call(method, path)
    assert answer.status_code == 404
    assert answer.json() == {"detail": "no run with id 'no-such-run'"}


# --- sync -------------------------------------------------------------------------------------


def test_sync_answers_the_outputs(api):
    answer = api.call("POST", "/run/workflow/sync", json=request(inputs={"prefix": "synced"}))
    assert answer.status_code == 200, answer.text
    [output] = answer.json()
    assert output["run_id"] == answer.headers["x-comfyq-run-id"]
    assert output["data"]["images"][0]["filename"] == "synced_00001_.png"


def test_sync_of_a_failing_run_says_which_node_failed(api):
    graph = held_graph()
    answer = api.call("POST", "/run/workflow/sync", json=request(
        graph, inputs={"picture": "http://127.0.0.1:9/missing.png"}))
    assert answer.status_code == 500
    body = answer.json()
    assert body["status"] == "failed" and body["run_id"] == answer.headers["x-comfyq-run-id"]
    assert body["error"]["node_id"] == "1"
    assert "127.0.0.1:9" in body["detail"]


def test_sync_gives_up_at_the_server_limit_and_names_the_run(api, client):
    with GatedImageServer() as gate:
        started = time.monotonic()
        answer = api.call("POST", "/run/workflow/sync", json=request(
            held_graph(), inputs={"picture": gate.url()}))
        waited = time.monotonic() - started
        gate.open()
        run_id = answer.headers["x-comfyq-run-id"]
        assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    # It answered while the run was still held (it finished only once the gate opened), and
    # not before its limit.
    assert answer.status_code == 504
    assert waited >= SYNC_TIMEOUT_SECONDS
    body = answer.json()
    assert body["run_id"] == run_id and body["status"] in ("started", "running")
    assert f"GET /run/{run_id}" in body["detail"]


# --- stream -----------------------------------------------------------------------------------


def test_stream_reports_progress_as_it_happens_and_ends_with_the_final_status(api):
    with GatedImageServer() as gate:
        response = api.call("POST", "/run/workflow/stream", stream=True, json=request(
            held_graph("streamed"), inputs={"picture": gate.url()}))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for event in server_events(response):
            events.append(event)
            name, data = event
            if name == "event_update" and data["event"] == "status" and (
                    data["data"]["status"] == "running"):
                gate.open()  # only once the stream has shown the run executing
        response.close()

    run_id = response.headers["x-comfyq-run-id"]
    updates = [data for name, data in events if name == "event_update"]
    assert updates[0] == {"event": "run_created", "data": {"run_id": run_id}}
    statuses = [u["data"]["status"] for u in updates if u["event"] == "status"]
    assert "running" in statuses and statuses[-1] == "success"
    assert [RunStatus(s).rank for s in statuses] == sorted(RunStatus(s).rank for s in statuses)
    assert len(statuses) == len(set(statuses)), statuses
    final = updates[-1]
    assert final["event"] == "status" and final["data"]["progress"] == 1.0
    assert final["data"]["outputs"][0]["data"]["images"][0]["filename"] == "streamed_00001_.png"
    logs = [data for name, data in events if name == "log_update"]
    assert "Executing ComfyUIDeployExternalImage" in [log["logs"] for log in logs]
    assert logs[-1]["logs"] == "Done" and logs[-1]["timestamp"]
    assert all(u["data"]["run_id"] == run_id for u in updates)


def test_a_stream_the_client_leaves_lets_go_of_its_subscription(api, redis_client):
    with GatedImageServer() as gate:
        response = api.call("POST", "/run/workflow/stream", stream=True, json=request(
            held_graph(), inputs={"picture": gate.url()}))
        channel = keys.run_updates(response.headers["x-comfyq-run-id"])
        events = server_events(response)  # kept: dropping it would close the connection
        # Once the first status arrives, the server is subscribed to the run's channel.
        next(data for name, data in events if name == "event_update" and data["event"] == "status")
        assert dict(redis_client.pubsub_numsub(channel))[channel] == 1
        response.close()
        wait_until(lambda: dict(redis_client.pubsub_numsub(channel))[channel] == 0,
                   timeout=10, interval=0.05,
                   describe=lambda: redis_client.pubsub_numsub(channel))


def test_a_stream_ends_with_stream_timeout_when_the_run_outlives_its_limit(fleet_settings, fleet,
                                                                          client):
    from comfyq.api import create_app

    settings = fleet_settings[1].model_copy(update={"api_tokens": list(TOKENS),
                                                    "api_stream_timeout_seconds": 1.0})
    with ThreadedServer(create_app(settings)) as server, GatedImageServer() as gate:
        started = time.monotonic()
        response = ApiServer(server.root).call("POST", "/run/workflow/stream", stream=True,
                                               json=request(held_graph(),
                                                            inputs={"picture": gate.url()}))
        updates = [data for name, data in server_events(response) if name == "event_update"]
        took = time.monotonic() - started
        gate.open()
        run_id = response.headers["x-comfyq-run-id"]
        assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    # The stream ended while the run was still held, and not before its limit.
    assert took >= 1.0
    assert updates[-1]["event"] == "stream_timeout"
    assert updates[-1]["data"]["run_id"] == run_id
    assert updates[-1]["data"]["status"] in ("queued", "started", "running")


# --- authentication ---------------------------------------------------------------------------

RUN_ENDPOINTS = [("POST", "/run/workflow/queue"), ("POST", "/run/workflow/sync"),
                 ("POST", "/run/workflow/stream"), ("GET", "/run/some-run"),
                 ("POST", "/run/some-run/cancel")]
BAD_CREDENTIALS = [None, "", "wrong-token", "first-token-but-longer"]


@pytest.mark.parametrize("method,path", RUN_ENDPOINTS)
@pytest.mark.parametrize("token", BAD_CREDENTIALS)
def test_missing_or_wrong_token_gets_401_and_nothing_else(api, redis_client, method, path, token):
    before = run_count(redis_client)
    answer = api.call(method, path, token=token, json=request())
    assert answer.status_code == 401
    assert answer.json() == {"detail": "missing or invalid bearer token"}
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert run_count(redis_client) == before


def test_token_is_checked_before_the_body(api, redis_client):
    basic = api.call("POST", "/run/workflow/queue", token=None, data=b"{not json",
                     headers={"Authorization": f"Basic {TOKENS[0]}"})
    huge = api.call("POST", "/run/workflow/queue", token="wrong",
                    data=b"x" * (MAX_BODY_BYTES + 1))
    unknown_path = api.call("GET", "/no/such/endpoint", token=None)
    assert [basic.status_code, huge.status_code, unknown_path.status_code] == [401, 401, 401]


def test_every_configured_token_is_accepted(api):
    for token in TOKENS:
        assert api.call("POST", "/run/workflow/queue", token=token,
                        json=request()).status_code == 200


def test_health_and_ready_need_no_token(api):
    health = requests.get(f"{api.root}/health", timeout=10)
    ready = requests.get(f"{api.root}/ready", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["redis"] is True
    assert ready.json()["workers"] >= 3  # gpu A100, gpu T4 and callbacks


# --- bad requests -----------------------------------------------------------------------------


def test_body_over_the_limit_is_413_by_declared_length_and_by_count(api, redis_client):
    before = run_count(redis_client)
    declared = api.call("POST", "/run/workflow/queue", data=b" " * (MAX_BODY_BYTES + 1))
    chunks = iter([b" " * 16 * 1024] * 5)  # chunked: no Content-Length to trust
    counted = api.call("POST", "/run/workflow/queue", data=chunks)
    for answer in (declared, counted):
        assert answer.status_code == 413
        assert f"limit of {MAX_BODY_BYTES} bytes" in answer.json()["detail"]
    assert run_count(redis_client) == before
    # Under the limit, padding and all, a body is read and the run queued.
    padded = json.dumps(request()).encode() + b" " * (MAX_BODY_BYTES // 2)
    assert api.call("POST", "/run/workflow/queue", data=padded).status_code == 200


def test_bad_json_is_422_saying_so(api):
    answer = api.call("POST", "/run/workflow/queue", data=b'{"workflow_id": "x",',
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body"] and "not valid JSON" in problem["msg"]


def test_validation_lists_every_problem_with_its_field_path(api, redis_client):
    graph = invert_graph()
    graph["2"]["inputs"]["image"] = ["99", 0]
    before = run_count(redis_client)
    answer = api.call("POST", "/run/workflow/queue", json={
        "workflow_api_json": graph, "inputs": {"width": {"no": "dicts"}}, "colour": "red"})
    assert answer.status_code == 422
    problems = {tuple(p["loc"]): p for p in answer.json()["detail"]}
    assert set(problems) == {
        ("body", "workflow_id"), ("body", "inputs", "width"), ("body", "colour"),
        ("body", "workflow_api_json", "2", "inputs", "image")}
    assert "Field required" in problems[("body", "workflow_id")]["msg"]
    assert "'99'" in problems[("body", "workflow_api_json", "2", "inputs", "image")]["msg"]
    assert problems[("body", "colour")]["field"] == "colour"
    assert "4 problems" in answer.json()["message"]
    assert run_count(redis_client) == before


def test_gpu_type_not_served_is_422_on_the_gpu_field(api):
    answer = api.call("POST", "/run/workflow/queue", json=request(gpu="H100"))
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "gpu"] and problem["type"] == "unknown_gpu_type"
    assert "'H100' is not served" in problem["msg"] and "A100, T4" in problem["msg"]


def test_graph_refused_by_the_node_catalog_answers_comfyuis_node_errors(api, redis_client):
    graph = invert_graph()
    del graph["2"]["inputs"]["image"]
    before = run_count(redis_client)
    answer = api.call("POST", "/run/workflow/queue", json=request(graph))
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["2"]["class_type"] == "ImageInvert"
    [error] = body["node_errors"]["2"]["errors"]
    assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == "image"
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]
    assert run_count(redis_client) == before


def test_input_that_does_not_fit_its_node_is_422_on_that_input(api):
    answer = api.call("POST", "/run/workflow/queue", json=request(inputs={"width": "wide"}))
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "inputs", "width"]
    assert "expected an integer" in problem["msg"]


def test_prefix_is_configurable(fleet_settings, fleet):
    """create_app served in this process by uvicorn, with the run endpoints under /cd."""
    from comfyq.api import create_app

    settings = fleet_settings[1].model_copy(update={"api_tokens": list(TOKENS),
                                                    "api_path_prefix": "/cd"})
    with ThreadedServer(create_app(settings)) as server:
        moved = ApiServer(server.root, prefix="/cd")
        queued = moved.call("POST", "/run/workflow/queue", json=request())
        got = moved.call("GET", f"/run/{queued.json()['run_id']}")
        old_place = ApiServer(server.root).call("POST", "/run/workflow/queue", json=request())
    assert queued.status_code == 200 and got.status_code == 200
    assert got.json()["id"] == queued.json()["run_id"]
    assert old_place.status_code == 404


# --- documents and the command ----------------------------------------------------------------


def test_openapi_document_and_docs_are_generated_from_the_models(api):
    document = requests.get(f"{api.root}/openapi.json", timeout=10).json()
    queue = document["paths"]["/api/run/workflow/queue"]["post"]
    body_schema = queue["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/WorkflowRunRequest"}
    schemas = document["components"]["schemas"]
    assert {"workflow_id", "workflow_api_json", "inputs", "gpu"} <= set(
        schemas["WorkflowRunRequest"]["properties"])
    assert schemas["GPU"]["enum"] == ["T4", "A100"]  # what this deployment serves, no more
    assert queue["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateRunResponse"}
    assert "422" in queue["responses"] and "413" in queue["responses"]
    run_fields = schemas["RunModel"]["properties"]
    assert {"id", "status", "outputs", "live_status", "progress", "number"} <= set(run_fields)
    assert set(document["paths"]) >= {"/api/run/{run_id}", "/api/run/{run_id}/cancel",
                                      "/api/run/workflow/sync", "/api/run/workflow/stream",
                                      "/health", "/ready"}
    docs = requests.get(f"{api.root}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_api_command_refuses_to_start_without_tokens(fleet_settings):
    env = {**api_environment(fleet_settings), "COMFYQ_API_TOKENS": ""}
    result = subprocess.run([sys.executable, "-m", "comfyq.cli", "api", "--port",
                             str(free_port())], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert "COMFYQ_API_TOKENS" in result.stderr


def test_run_endpoints_live_under_the_prefix_only(api):
    inside = api.call("GET", "/run/x")
    outside = requests.get(f"{api.root}/run/x", timeout=10,
                           headers={"Authorization": f"Bearer {TOKENS[0]}"})
    assert inside.json() == {"detail": "no run with id 'x'"}
    assert outside.status_code == 404 and outside.json() == {"detail": "Not Found"}
