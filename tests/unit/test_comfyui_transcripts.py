"""comfyq's ComfyUI client against the answers a real ComfyUI 0.3.64 gave (recorded transcripts).

A replay server answers every request the way the real server answered the recorder
(``tests/data/comfyui_transcripts``): each HTTP route with its recorded answers in order, and
``/ws`` with the recorded websocket frames (those after the ``POST /prompt`` once comfyq has
posted). ``GET /object_info`` is a real ComfyUI 0.3.64's catalog (``tests/data/reference``).
comfyq's ComfyUI backend then runs the recorded graph, with the recorded prompt id as its run
id, and what it reports (outputs and downloaded files, nodes started, progress, failures) must
be what the recorded answers say.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfyq.comfyui.backend import ComfyUIBackend, ComfyUIOptions
from comfyq.comfyui.errors import ComfyUIRunError
from comfyq.run_context import RunContext
from tests.paths import OBJECT_INFO
from tests.unit.comfyui_recordings import (
    VALIDATION_POSTS,
    recorded_calls,
    recorded_case,
    recorded_frames,
    recorded_history,
    validation_post_name,
)

CATALOG = json.loads(OBJECT_INFO.read_text())


def _recorded_bytes(length: int, first_bytes_hex: str) -> bytes:
    """A body or frame of the recorded length that starts with the recorded bytes."""
    start = bytes.fromhex(first_bytes_hex)
    return start + bytes(length - len(start))


def _answer(call: dict[str, Any]) -> web.Response:
    if "body" in call:
        return web.json_response(call["body"], status=call["status"])
    if "body_length" in call:
        return web.Response(status=call["status"], content_type=call["content_type"],
                            body=_recorded_bytes(call["body_length"],
                                                 call["body_first_8_bytes_hex"]))
    return web.Response(status=call["status"], text=call.get("body_text") or None)


class Replay:
    """A loopback server answering as the recorded ComfyUI answered in ``case``.

    :param also: recorded exchanges of other cases of the same server (the same files, the same
        bodiless routes), answered too.
    """

    def __init__(self, case: dict[str, Any], also: list[dict[str, Any]] = ()) -> None:
        self.calls: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for call in [*case["http"], *also]:
            self.calls[self._key(call["method"], call["path"], call.get("params"))].append(call)
        posts = [call["t_ms"] for call in case["http"] if call["path"] == "/prompt"]
        first_post = min(posts, default=float("inf"))
        self.before_post = [frame for frame in case["ws_frames"] if frame["t_ms"] < first_post]
        self.after_post = [frame for frame in case["ws_frames"] if frame["t_ms"] >= first_post]
        self.unrecorded: list[tuple[str, str]] = []
        self.received: list[tuple[str, str, Any]] = []
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._posted: asyncio.Event | None = None

    @staticmethod
    def _key(method: str, path: str, params: Any) -> tuple:
        return method, path, json.dumps(dict(params or {}), sort_keys=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            return await self._websocket(request)
        body = await request.json() if request.can_read_body and request.content_type == \
            "application/json" else None
        self.received.append((request.method, request.path, body))
        if (request.method, request.path) == ("GET", "/object_info"):
            return web.json_response(CATALOG)
        answers = self.calls.get(self._key(request.method, request.path, request.query))
        if not answers:
            self.unrecorded.append((request.method, request.path))
            return web.Response(status=404)
        call = answers.pop(0) if len(answers) > 1 else answers[0]
        if request.path == "/prompt":
            self._posted.set()
        return _answer(call)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await self._send(socket, self.before_post)
        await self._posted.wait()
        await self._send(socket, self.after_post)
        async for _ in socket:
            pass
        return socket

    @staticmethod
    async def _send(socket: web.WebSocketResponse, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            if "text" in frame:
                await socket.send_str(json.dumps(frame["text"]))
            else:
                binary = frame["binary"]
                await socket.send_bytes(_recorded_bytes(
                    binary["length"], binary["first_4_bytes_hex"] + binary["bytes_4_to_8_hex"]))

    def _serve(self) -> None:
        async def serve() -> None:
            self._stop, self._posted = asyncio.Event(), asyncio.Event()
            app = web.Application()
            app.router.add_route("*", "/{path:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(serve())
        self._loop.close()

    def __enter__(self) -> Replay:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the replay server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class BackendRun:
    """comfyq's ComfyUI backend running one recorded graph, with what it reported."""

    def __init__(self, replay: Replay, run_id: str, root: Path) -> None:
        self.started: list[tuple[str, str, int, int]] = []
        self.progress: list[tuple[float, float, str | None]] = []
        self.root = root
        self.context = RunContext(
            run_id=run_id, output_dir=root / "outputs" / run_id, temp_dir=root / "temp" / run_id,
            report_progress=lambda *report: self.progress.append(report))
        self.backend = ComfyUIBackend(ComfyUIOptions(
            url=replay.url, request_timeout=5.0, interrupt_grace=1.0, unavailable_seconds=5.0,
            probe_seconds=30.0))

    def execute(self, graph: dict[str, Any]) -> dict[str, dict]:
        try:
            return self.backend.execute(graph, None, self.context,
                                        lambda *started: self.started.append(started))
        finally:
            self.backend.close()


def posted(case: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The prompt id and graph of the case's (first) ``POST /prompt``."""
    request = next(call for call in case["http"] if call["path"] == "/prompt")["request_json"]
    return request["prompt_id"], request["prompt"]


def nodes_started(case: dict[str, Any], prompt_id: str) -> list[tuple[str, str, int, int]]:
    """``(node, class, index, total)`` for each recorded ``executing`` frame of the prompt."""
    _, graph = posted(case)
    frames = [frame for frame in recorded_frames(case)
              if frame["data"].get("prompt_id") == prompt_id]
    [cached] = [frame["data"]["nodes"] for frame in frames if frame["type"] == "execution_cached"]
    order = [frame["data"]["node"] for frame in frames
             if frame["type"] == "executing" and frame["data"]["node"] is not None]
    total = len(set(graph) - set(cached))
    return [(node, graph[node]["class_type"], index, total) for index, node in enumerate(order)]


def in_run_folder(outputs: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The recorded history outputs as comfyq reports them: files moved under the run id."""
    return {node: {kind: [{**item, "subfolder": run_id} for item in items]
                   for kind, items in ui.items()} for node, ui in outputs.items()}


@pytest.fixture
def replay_of(request) -> Iterator:
    servers: list[Replay] = []

    def start(case: dict[str, Any], also: list[dict[str, Any]] = ()) -> Replay:
        servers.append(Replay(case, also).__enter__())
        return servers[-1]

    yield start
    for server in servers:
        server.__exit__()


@pytest.mark.parametrize("file,name", [("success", "success"), ("cached", "cached")])
def test_a_finished_prompt_gives_the_recorded_outputs_and_files(replay_of, tmp_path, file,
                                                                  name):
    case = recorded_case(file, name)
    # The cached run points at the file the success case made: the same server, the same file.
    replay = replay_of(case, also=recorded_calls("success", "success", "GET", "/view"))
    prompt_id, graph = posted(case)
    run = BackendRun(replay, prompt_id, tmp_path)

    outputs = run.execute(graph)

    recorded = recorded_history(case, prompt_id)["outputs"]
    assert outputs == in_run_folder(recorded, prompt_id)
    [view] = recorded_calls("success", "success", "GET", "/view")
    saved = (tmp_path / "outputs" / prompt_id / view["params"]["filename"]).read_bytes()
    assert (len(saved), saved[:8].hex()) == (view["body_length"], view["body_first_8_bytes_hex"])
    assert run.started == nodes_started(case, prompt_id)
    [cached] = [frame["data"]["nodes"] for frame in recorded_frames(case)
                if frame["type"] == "execution_cached"
                and frame["data"].get("prompt_id") == prompt_id]
    assert run.context.cached_nodes == [node for node in cached if node in graph]
    assert replay.unrecorded == []


def test_binary_preview_frames_are_skipped_and_progress_is_reported(replay_of, tmp_path):
    case = recorded_case("binary_frames", "binary_frames")
    prompt_id, graph = posted(case)
    run = BackendRun(replay_of(case), prompt_id, tmp_path)

    assert run.execute(graph) == recorded_history(case, prompt_id)["outputs"] == {}
    assert run.progress == [
        (float(frame["data"]["value"]), float(frame["data"]["max"]), frame["data"]["node"])
        for frame in recorded_frames(case) if frame["type"] == "progress"]
    assert run.started == nodes_started(case, prompt_id)


def test_an_execution_error_fails_the_run_with_comfyuis_report(replay_of, tmp_path):
    case = recorded_case("execution_error", "execution_error")
    prompt_id, graph = posted(case)

    with pytest.raises(ComfyUIRunError) as failure:
        BackendRun(replay_of(case), prompt_id, tmp_path).execute(graph)

    [event] = [frame["data"] for frame in recorded_frames(case)
               if frame["type"] == "execution_error"]
    assert failure.value.as_dict() == {
        "node_id": event["node_id"], "node_type": event["node_type"],
        "exception_type": event["exception_type"],
        "exception_message": event["exception_message"].rstrip("\n"),
        "traceback": "".join(event["traceback"]), "executed": event["executed"]}


def test_an_interrupt_from_someone_else_fails_the_run_naming_the_node(replay_of, tmp_path):
    case = recorded_case("interrupt", "interrupt_running")
    prompt_id, graph = posted(case)
    run = BackendRun(replay_of(case), prompt_id, tmp_path)

    with pytest.raises(ComfyUIRunError) as failure:
        run.execute(graph)

    [event] = [frame["data"] for frame in recorded_frames(case)
               if frame["type"] == "execution_interrupted"]
    error = failure.value.as_dict()
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        event["node_id"], event["node_type"], "ComfyUIInterrupted")
    assert run.started == nodes_started(case, prompt_id)


@pytest.mark.parametrize("recorded", [call for call in VALIDATION_POSTS
                                      if "prompt" in call["request_json"]],
                         ids=validation_post_name)
def test_a_refused_prompt_fails_the_run_with_comfyuis_answer(replay_of, tmp_path, recorded):
    case = {"http": [recorded], "ws_frames": []}
    bodiless = [*recorded_calls("interrupt", "delete_queued", "POST", "/queue"),
                *recorded_calls("interrupt", "delete_queued", "POST", "/interrupt")]
    replay = replay_of(case, also=bodiless)
    prompt_id, graph = posted(case)

    with pytest.raises(ComfyUIRunError) as failure:
        BackendRun(replay, prompt_id, tmp_path).execute(graph)

    error, answer = failure.value.as_dict(), recorded["body"]
    assert error["node_errors"] == answer["node_errors"]
    if recorded["status"] == 400:
        assert (error["exception_type"], error["error"]) == (answer["error"]["type"],
                                                             answer["error"])
    else:  # accepted with a bad output: comfyq takes it off the server instead of half-running it
        assert error["exception_type"] == "prompt_outputs_failed_validation"
        assert ("POST", "/queue", {"delete": [prompt_id]}) in replay.received
        assert ("POST", "/interrupt", {"prompt_id": prompt_id}) in replay.received
    failing = next(iter(answer["node_errors"]), None)
    if failing is not None:
        assert (error["node_id"], error["node_type"]) == (
            failing, answer["node_errors"][failing]["class_type"])
    elif answer["error"]["type"] == "invalid_prompt":  # the details name the node: "#2"
        assert (error["node_id"], error["node_type"]) == ("2", graph["2"]["class_type"])
