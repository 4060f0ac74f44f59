"""The ``comfyq`` command as a user runs it: a real process against the test fleet."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from comfyq import RunStatus
from comfyq.broker import gpu_queue
from comfyq.broker.redis_transport import queue_lists
from comfyq.redis import keys
from tests.helpers import invert_graph, request
from tests.ops_helpers import (
    GatedImageServer,
    OutputReader,
    comfyq_command,
    held_graph,
    png_bytes,
    run_comfyq,
    wait_until,
)


@pytest.fixture
def env(fleet, fleet_settings) -> dict[str, str]:
    return dict(fleet_settings[0])


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed; it must be a single line and no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("comfyq: error: ")
    return lines[0]


# --- submit --wait ------------------------------------------------------------------------------


def test_submit_wait_shows_node_being_executed_and_exits_0_on_success(env, tmp_path):
    graph_file = write_json(tmp_path / "held.json", held_graph("waited"))
    with GatedImageServer() as gate:
        process = subprocess.Popen(
            [*comfyq_command(), "submit", str(graph_file), "--gpu", "A100",
             "--input", f"picture={gate.url()}", "--wait"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shown = OutputReader(process.stderr)
        try:
            assert gate.requested.wait(30), "the run never reached its image node"
            # The bar shows the node while its download is held.
            wait_until(lambda: "running: Executing ComfyUIDeployExternalImage" in shown.text(),
                       timeout=30, describe=shown.text)
            gate.open()
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    stdout, stderr = process.stdout.read().decode(), shown.finish()
    assert process.returncode == 0, stderr
    run_id, status = stdout.split()
    assert status == "success"
    assert "100%" in stderr
    assert run_id in run_comfyq(env, "status", run_id).stdout


def test_submit_wait_exits_1_when_the_run_fails(env, tmp_path):
    graph_file = write_json(tmp_path / "broken.json", held_graph("broken"))
    result = run_comfyq(env, "submit", str(graph_file), "--gpu", "T4", "--wait",
                        "--input", "picture=http://127.0.0.1:9/nothing.png")
    assert result.returncode == 1
    assert result.stdout.split()[1] == "failed"
    assert "failed: Failed at node 1" in result.stderr


def test_submit_wait_names_the_run_first_and_says_no_worker_serves_its_gpu_type(
        env, client, redis_client, tmp_path):
    request_file = write_json(tmp_path / "h100.json", request(gpu="H100"))
    process = subprocess.Popen([*comfyq_command(), "submit", str(request_file), "--wait"],
                               env={**os.environ, **env, "COMFYQ_GPU_TYPES": "A100,T4,H100"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shown = OutputReader(process.stderr)
    try:
        # Following the run: its bar is up, and no worker will ever take it.
        wait_until(lambda: "queued:" in shown.text(), timeout=30, describe=shown.text)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = shown.finish()
    run_id = re.search(r"^comfyq: submitted run (\S+)$", stderr, re.MULTILINE).group(1)
    try:
        assert process.returncode == 130
        assert stderr.index(f"submitted run {run_id}") < stderr.index("queued:")
        assert ("comfyq: warning: no online worker serves GPU type H100; the run waits in "
                "comfyq.gpu.H100 until one starts") in stderr
        assert f"stopped waiting; run {run_id} goes on (comfyq cancel {run_id} stops it)" in stderr
        assert client.get_run(run_id).status == RunStatus.QUEUED
    finally:
        client.cancel(run_id)
        redis_client.delete(*queue_lists(gpu_queue("H100")))


def test_submit_json_prints_the_run_id(env, tmp_path):
    graph_file = write_json(tmp_path / "plain.json", request(invert_graph()))
    result = run_comfyq(env, "submit", str(graph_file), "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    assert json.loads(run_comfyq(env, "status", run_id, "--json").stdout)["id"] == run_id


# --- status, runs, outputs ----------------------------------------------------------------------


@pytest.fixture
def finished_run(client) -> str:
    run_id = client.submit(request(invert_graph(prefix="listed", width=10), gpu="T4"))
    assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    return run_id


def test_status_shows_the_run(env, finished_run):
    human = run_comfyq(env, "status", finished_run)
    assert human.returncode == 0
    assert human.stdout.startswith(f"{finished_run}  success  gpu=T4  progress=100%  worker=gpu")
    record = json.loads(run_comfyq(env, "status", finished_run, "--json").stdout)
    assert record["status"] == "success" and record["gpu"] == "T4"


def test_a_reader_that_stops_early_ends_the_command_quietly(env, finished_run):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `comfyq runs | head` once head has what it wanted
    try:
        shown = subprocess.run([*comfyq_command(), "runs"], env={**os.environ, **env},
                               stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (shown.returncode, shown.stderr) == (141, "")


def test_runs_lists_newest_first_with_filters(env, client, finished_run):
    failed = client.submit(request(held_graph("unlisted"), gpu="A100",
                                   inputs={"picture": "http://127.0.0.1:9/x.png"}))
    assert client.wait(failed, 60).status == RunStatus.FAILED

    newest = json.loads(run_comfyq(env, "runs", "--limit", "2", "--json").stdout)
    assert [run["id"] for run in newest] == [failed, finished_run]
    assert newest[1]["status"] == "success" and newest[1]["gpu"] == "T4"
    assert newest[1]["worker"].startswith("gpu") and newest[1]["run_seconds"] >= 0
    assert newest[1]["created_at"].endswith("+00:00")

    successes = json.loads(run_comfyq(env, "runs", "--status", "success", "--json").stdout)
    assert finished_run in [run["id"] for run in successes]
    assert {run["status"] for run in successes} == {"success"}
    a100_failed = json.loads(
        run_comfyq(env, "runs", "--status", "failed", "--gpu", "A100", "--json").stdout)
    assert a100_failed[0]["id"] == failed and {run["gpu"] for run in a100_failed} == {"A100"}

    table = run_comfyq(env, "runs", "--limit", "2").stdout.splitlines()
    assert table[0].split()[:3] == ["RUN", "STATUS", "GPU"]
    assert table[1].split()[:3] == [failed, "failed", "A100"]
    assert table[2].split()[:3] == [finished_run, "success", "T4"]


def test_outputs_lists_and_downloads_the_png(env, finished_run, tmp_path):
    listed = json.loads(run_comfyq(env, "outputs", finished_run, "--json").stdout)
    assert [(f["node_id"], f["kind"], f["filename"]) for f in listed] == [
        ("3", "images", "listed_00001_.png")]
    assert listed[0]["url"].startswith("file://")

    result = run_comfyq(env, "outputs", finished_run, "--download", str(tmp_path / "got"))
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "got" / "listed_00001_.png"
    assert str(saved) in result.stdout
    pixels = np.asarray(Image.open(saved))
    assert pixels.shape == (8, 10, 3) and (pixels == [0, 255, 255]).all()


class _FileServer:
    """Serves one PNG at /out/a.png and 404 elsewhere, like an outputs URL base."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/out/a.png"
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/out"


def test_download_outputs_fetches_http_urls_and_names_http_errors(tmp_path):
    from comfyq.errors import ComfyqError
    from comfyq.runs.outputs import OutputFile, download_outputs

    body = png_bytes(3, 3)
    files = _FileServer(body)
    try:
        [path] = download_outputs([OutputFile("9", "images", "a.png", "", f"{files.base}/a.png")],
                                  tmp_path)
        assert path.read_bytes() == body
        with pytest.raises(ComfyqError, match=r"gone\.png: .*answered HTTP 404"):
            download_outputs([OutputFile("9", "images", "gone.png", "", f"{files.base}/gone.png")],
                             tmp_path)
        assert not (tmp_path / "gone.png").exists()
    finally:
        files.server.shutdown()


# --- cancel and queues, with a worker held busy --------------------------------------------------


def test_cancel_of_a_queued_run(env, client):
    with GatedImageServer() as gate:
        busy = client.submit(request(held_graph("busy"), gpu="T4", inputs={"picture": gate.url()}))
        assert gate.requested.wait(30)
        queued = client.submit(request(gpu="T4"))
        result = run_comfyq(env, "cancel", queued)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "cancelled before it started"
        gate.open()
        assert client.wait(busy, 60).status == RunStatus.SUCCESS
    assert json.loads(run_comfyq(env, "status", queued, "--json").stdout)["status"] == "cancelled"
    again = json.loads(run_comfyq(env, "cancel", queued, "--json").stdout)
    assert again["cancelled"] is False and "already finished" in again["message"]


def test_queues_show_depth_oldest_wait_and_what_each_worker_executes(env, client, fleet,
                                                                       redis_client):
    def queues_while(condition) -> tuple[float, dict, float] | None:
        """`comfyq queues --json` by GPU type, with the times just before and after it ran,
        once ``condition(states)`` holds."""
        before = time.time()
        states = {q["gpu_type"]: q for q in json.loads(
            run_comfyq(env, "queues", "--json").stdout)}
        return (before, states, time.time()) if condition(states) else None

    with GatedImageServer() as gate:
        busy = client.submit(request(held_graph("busy"), gpu="T4", inputs={"picture": gate.url()}))
        assert gate.requested.wait(30)
        waiting = [client.submit(request(gpu="T4")) for _ in range(2)]
        try:
            asked, states, answered = wait_until(lambda: queues_while(
                lambda states: any(w["current_run"] == busy for w in states["T4"]["workers"])))
            table = run_comfyq(env, "queues").stdout
        finally:
            gate.open()
        for run_id in [busy, *waiting]:
            assert client.wait(run_id, 60).status == RunStatus.SUCCESS

    t4, a100 = states["T4"], states["A100"]
    assert t4["queue"] == "comfyq.gpu.T4" and t4["depth"] == 2
    assert t4["oldest_waiting"]["run_id"] == waiting[0]
    # Its age: from when it was queued to when the command looked (ages are in milliseconds).
    queued_at = client.get_run(waiting[0]).queued_at.timestamp()
    assert asked - queued_at - 0.001 <= t4["oldest_waiting"]["age_seconds"] <= (
        answered - queued_at + 0.001)
    t4_names = {w["name"] for w in fleet.workers(redis_client) if w.get("gpu_type") == "T4"}
    [t4_worker] = [w for w in t4["workers"] if w["name"] in t4_names]
    assert t4_worker["current_run"] == busy and t4_worker["device"] == "cpu"
    assert a100["depth"] == 0 and a100["oldest_waiting"] is None
    assert all(w["current_run"] is None for w in a100["workers"])
    assert "oldest waiting" in table and f"(run {waiting[0]})" in table
    assert f"executing {busy}" in table


def test_queues_do_not_count_a_run_cancelled_while_queued(env, client):
    with GatedImageServer() as gate:
        busy = client.submit(request(held_graph("busy"), gpu="T4", inputs={"picture": gate.url()}))
        assert gate.requested.wait(30)
        cancelled = client.submit(request(gpu="T4"))
        waiting = client.submit(request(gpu="T4"))
        assert client.cancel(cancelled).cancelled
        try:
            messages = client.broker.waiting_run_ids("T4")
            t4 = {q["gpu_type"]: q for q in json.loads(
                run_comfyq(env, "queues", "--json").stdout)}["T4"]
            table = run_comfyq(env, "queues").stdout
        finally:
            gate.open()
        for run_id in (busy, waiting):
            assert client.wait(run_id, 60).status == RunStatus.SUCCESS
    # Its message is still in the queue (no worker took it yet), but it no longer waits.
    assert messages == [cancelled, waiting]
    assert t4["depth"] == 1 and t4["oldest_waiting"]["run_id"] == waiting
    assert "depth 1 " in table and f"(run {waiting})" in table


def test_queues_count_a_queue_no_worker_consumes(env, fleet_settings, redis_client):
    from comfyq import Client

    settings = fleet_settings[1].model_copy(update={"gpu_types": ["A100", "T4", "H100"]})
    h100 = Client(settings=settings)
    run_id = h100.submit(request(gpu="H100"))
    try:
        states = {q["gpu_type"]: q for q in json.loads(
            run_comfyq({**env, "COMFYQ_GPU_TYPES": "A100,T4,H100"}, "queues", "--json").stdout)}
    finally:
        h100.cancel(run_id)
        redis_client.delete(*queue_lists(gpu_queue("H100")))
    assert states["H100"]["depth"] == 1 and states["H100"]["workers"] == []
    assert states["H100"]["oldest_waiting"]["run_id"] == run_id


# --- errors: one line, non-zero -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status", "nope"], ["cancel", "nope"], ["outputs", "nope"]])
def test_missing_run_is_one_line_error(env, command):
    assert one_line_error(run_comfyq(env, *command)) == "comfyq: error: no run with id 'nope'"


def test_bad_files_are_one_line_errors(env, tmp_path):
    missing = one_line_error(run_comfyq(env, "submit", str(tmp_path / "absent.json")))
    assert "absent.json" in missing and "No such file" in missing
    garbled = write_json(tmp_path / "garbled.json", {})
    garbled.write_text("{not json")
    assert "garbled.json: not valid JSON" in one_line_error(run_comfyq(env, "submit", str(garbled)))
    dangling = write_json(tmp_path / "dangling.json", {
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}}})
    error = one_line_error(run_comfyq(env, "submit", str(dangling)))
    assert "workflow_api_json.2.inputs.image" in error and "'99'" in error


def test_unknown_gpu_filter_is_one_line_error(env):
    assert "--gpu: 'V100' is not one of" in one_line_error(run_comfyq(env, "runs", "--gpu", "V100"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [["status", "x"], ["runs"], ["queues"], ["outputs", "x"],
                                     ["cancel", "x"]])
def test_redis_down_is_one_line_error(env, command):
    port = _closed_port()
    error = one_line_error(run_comfyq(
        {**env, "COMFYQ_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}, *command))
    assert error.startswith(f"comfyq: error: Redis at redis://127.0.0.1:{port}/0 failed: ")
    assert "hunter2" not in error and "Connection refused" in error


def test_redis_that_never_answers_is_one_line_timeout_error(env, tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the kernel, never answers
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        # Without its own timeout the command would hang until run_comfyq gives up (an error
        # there, not this one-line timeout).
        error = one_line_error(run_comfyq({**env, "COMFYQ_REDIS_URL": url}, "runs"))
    assert error.startswith(f"comfyq: error: Redis at {url} failed: Timeout")


# --- the demo beside a deployment ----------------------------------------------------------------


def test_demo_runs_apart_from_a_fleet_on_the_same_redis(env, redis_client, redis_server,
                                                      tmp_path):
    """The session fleet serves the configured database, callback worker included: the demo must
    not share its queues (that worker would take the demo's webhooks), and must leave it alone."""
    shown = run_comfyq({**env, "COMFYQ_DATA_DIR": str(tmp_path)}, "demo", "--gpus", "A100",
                       timeout=240, cwd=tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    claimed = re.search(r"in database (\d+), empty and claimed for the demo", shown.stdout)
    run_id = re.search(r"Submitted run (\S+) for GPU A100", shown.stdout).group(1)
    webhooks = re.findall(r"seq=(\d+) status=(\w+)", shown.stdout)
    assert webhooks[0] == ("1", "queued") and webhooks[-1][1] == "success"
    assert "not every webhook arrived" not in shown.stdout

    demo_database = int(claimed.group(1))
    assert f"{redis_server}/{demo_database}" != env["COMFYQ_REDIS_URL"]
    assert not redis_client.exists(keys.run(run_id))  # nothing of it in the fleet's database
    with redis.Redis.from_url(f"{redis_server}/{demo_database}") as demo_client:
        assert demo_client.dbsize() == 0  # it deleted what it wrote
    assert "Deleted the " in shown.stdout and not list(tmp_path.glob("beat-schedule-*"))
