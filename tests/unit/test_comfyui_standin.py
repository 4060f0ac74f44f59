"""The stand-in ComfyUI against the transcripts recorded from a real ComfyUI 0.3.64.

Each test drives the stand-in (a real aiohttp server on loopback) the way the recorder drove the
real server and compares what a client sees: HTTP statuses and bodies, websocket event orders,
history entries. ``POST /prompt`` answers to the recorded graphs must equal the real ones.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import requests
import websocket
from PIL import Image

from comfyq.devtools.comfyui_standin import StandinComfyUI
from tests.unit.comfyui_recordings import (
    VALIDATION_POSTS,
    recorded_case,
    recorded_frames,
    stack_texts_set_aside,
    validation_post_name,
)


def frame_types(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["type"] for frame in frames]


def invert_graph(prefix: str, color: int = 0xFF0000) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def sleep_graph(*steps: tuple[float, int], output: str = "SaveImage") -> dict[str, Any]:
    """EmptyImage -> StandinSleep(seconds, progress_steps)... -> output node "99"."""
    graph: dict[str, Any] = {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    previous = "1"
    for index, (seconds, progress_steps) in enumerate(steps, start=10):
        graph[str(index)] = {"class_type": "StandinSleep", "inputs": {
            "images": [previous, 0], "seconds": seconds, "progress_steps": progress_steps}}
        previous = str(index)
    inputs: dict[str, Any] = {"images": [previous, 0]}
    if output == "SaveImage":
        inputs["filename_prefix"] = f"sleep_{uuid.uuid4().hex[:6]}"
    graph["99"] = {"class_type": output, "inputs": inputs}
    return graph


class Listener:
    """A websocket client of the server: every JSON frame it receives, in order."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:8]}"
        ws_url = url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self.socket = websocket.create_connection(ws_url, timeout=10)
        self.frames: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self.socket.recv_data()
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                with self._changed:
                    self.frames.append(json.loads(data))
                    self._changed.notify_all()
        except (websocket.WebSocketException, OSError):
            return

    def wait_for(self, predicate, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.frames):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out; frames: {frame_types(self.frames)}"
                self._changed.wait(remaining)
            return list(self.frames)

    def until_done(self, prompt_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Frames up to ``executing{node: null}`` of ``prompt_id``."""
        def done(frames):
            return any(f["type"] == "executing" and f["data"].get("node") is None
                       and f["data"].get("prompt_id") == prompt_id for f in frames)
        return self.wait_for(done, timeout)

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    with StandinComfyUI(tmp_path_factory.mktemp("standin")) as server:
        yield server


@pytest.fixture
def listener(standin):
    client = Listener(standin.url)
    client.wait_for(lambda frames: len(frames) >= 1)
    yield client
    client.close()


def post(standin, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return requests.post(standin.url + path, json=body, timeout=10, **kwargs)


def queue_prompt(standin, listener, graph, prompt_id: str | None = None) -> requests.Response:
    body = {"prompt": graph, "prompt_id": prompt_id or uuid.uuid4().hex,
            "client_id": listener.client_id}
    return post(standin, "/prompt", body)


def test_success_sends_comfyuis_events_in_its_order_and_history(standin, listener):
    recorded = recorded_case("success", "success")
    answer = queue_prompt(standin, listener, invert_graph("ok"), "success-1")
    assert answer.status_code == 200
    assert set(answer.json()) == {"prompt_id", "number", "node_errors"}
    assert answer.json()["node_errors"] == {} and isinstance(answer.json()["number"], int)
    frames = listener.until_done("success-1")
    assert frame_types(frames) == frame_types(recorded_frames(recorded))
    assert frames[0]["data"]["sid"] == listener.client_id
    [executed] = [f for f in frames if f["type"] == "executed"]
    assert executed["data"] == {"node": "3", "display_node": "3", "prompt_id": "success-1",
                                "output": {"images": [{"filename": "ok_00001_.png",
                                                       "subfolder": "", "type": "output"}]}}
    last_state = [f for f in frames if f["type"] == "progress_state"][-1]["data"]
    real_state = [f for f in recorded_frames(recorded) if f["type"] == "progress_state"][-1]
    assert set(last_state["nodes"]["3"]) == set(real_state["data"]["nodes"]["3"])

    entry = requests.get(f"{standin.url}/history/success-1", timeout=10).json()["success-1"]
    real_entry = next(next(iter(h["body"].values())) for h in recorded["http"]
                      if h["path"].startswith("/history/") and h["body"])
    assert set(entry) == set(real_entry) == {"prompt", "outputs", "status", "meta"}
    assert entry["prompt"][1:] == ["success-1", invert_graph("ok"),
                                   {"client_id": listener.client_id}, ["3"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in real_entry["status"]["messages"]]
    assert entry["meta"] == {"3": {"node_id": "3", "display_node": "3", "parent_node": None,
                                   "real_node_id": "3"}}

    image = requests.get(f"{standin.url}/view", timeout=10,
                         params={"filename": "ok_00001_.png", "subfolder": "", "type": "output"})
    assert image.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(image.content)))
    assert pixels.shape == (64, 64, 3) and (pixels == [0, 255, 255]).all()
    assert requests.get(f"{standin.url}/queue", timeout=10).json() == {
        "queue_running": [], "queue_pending": []}
    newest = requests.get(f"{standin.url}/history", params={"max_items": 1}, timeout=10).json()
    assert list(newest) == ["success-1"]


@pytest.mark.parametrize("real", VALIDATION_POSTS, ids=validation_post_name)
def test_validation_answers_as_comfyui_does(standin, listener, real):
    request = {**real["request_json"], "client_id": listener.client_id}
    answer = post(standin, "/prompt", request)
    body = answer.json()
    if "EmptyLatentImage" in json.dumps(request):
        # A model class the stand-in does not have: refused as the real server refuses any
        # class it does not have (see the recorded "unknown" answer).
        assert (answer.status_code, body) == (400, {
            "error": {"type": "invalid_prompt",
                      "message": "Cannot execute because node EmptyLatentImage does not exist.",
                      "details": "Node ID '#5'", "extra_info": {}},
            "node_errors": {}})
        return
    assert answer.status_code == real["status"], answer.text
    if answer.status_code == 400:
        assert stack_texts_set_aside(body) == stack_texts_set_aside(real["body"])
        return
    # Accepted with a bad output: the same node_errors, and only the good output runs.
    assert body["prompt_id"] == request["prompt_id"] and isinstance(body["number"], int)
    assert body["node_errors"] == real["body"]["node_errors"]
    frames = listener.until_done(request["prompt_id"])
    assert [f["data"]["node"] for f in frames if f["type"] == "executed"] == ["3"]


def test_missing_upload_fails_validation_like_comfyuis_loadimage(standin, listener):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "never-uploaded.png"}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    answer = queue_prompt(standin, listener, graph)
    assert answer.status_code == 400
    [error] = answer.json()["node_errors"]["1"]["errors"]
    assert error == {"type": "custom_validation_failed",
                     "message": "Custom validation failed for node",
                     "details": "image - Invalid image file: never-uploaded.png",
                     "extra_info": {"input_name": "image"}}


def corrupt_png() -> bytes:
    """What the recorder uploaded: a PNG signature, then no PNG at all."""
    return b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 4


def test_execution_error_event_and_history(standin, listener):
    recorded = recorded_case("execution_error", "execution_error")
    upload = requests.post(f"{standin.url}/upload/image", timeout=10,
                           files={"image": ("corrupt.png", corrupt_png())},
                           data={"type": "input", "overwrite": "true"})
    assert upload.json() == {"name": "corrupt.png", "subfolder": "", "type": "input"}
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "corrupt.png"}},
             "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
             "3": {"class_type": "SaveImage",
                   "inputs": {"images": ["2", 0], "filename_prefix": "broken"}}}
    assert queue_prompt(standin, listener, graph, "error-1").status_code == 200
    frames = listener.until_done("error-1")
    assert frame_types(frames) == frame_types(recorded_frames(recorded))
    [error] = [f["data"] for f in frames if f["type"] == "execution_error"]
    real_error = next(f["data"] for f in recorded_frames(recorded)
                      if f["type"] == "execution_error")
    assert set(error) == set(real_error)
    assert (error["node_id"], error["node_type"], error["exception_type"],
            error["exception_message"]) == ("1", "LoadImage", "OSError", "Truncated File Read\n")
    assert error["exception_message"] == real_error["exception_message"] and error["traceback"]
    entry = requests.get(f"{standin.url}/history/error-1", timeout=10).json()["error-1"]
    assert entry["outputs"] == {}
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"


def test_interrupt_by_prompt_id_stops_at_the_next_node(standin, listener):
    graph = sleep_graph((0.8, 0), (0.8, 0), (0.8, 0))
    assert queue_prompt(standin, listener, graph, "slow-1").status_code == 200
    listener.wait_for(lambda frames: any(f["type"] == "executing" and f["data"]["node"] == "10"
                                         for f in frames))
    assert post(standin, "/interrupt", {"prompt_id": "not-running"}).text == ""
    time.sleep(0.1)
    answer = post(standin, "/interrupt", {"prompt_id": "slow-1"})
    assert (answer.status_code, answer.text, answer.headers.get("content-type")) == (200, "", None)
    frames = listener.until_done("slow-1")
    ours = [f for f in frames if f["data"].get("prompt_id") == "slow-1"
            and f["type"] != "progress_state"]
    tail = [(f["type"], f["data"].get("node", f["data"].get("node_id"))) for f in ours[-3:]]
    # The node running when asked finishes; the next one is announced, then interrupted.
    assert tail == [("executing", "11"), ("execution_interrupted", "11"), ("executing", None)]
    interrupted = ours[-2]["data"]
    assert interrupted["node_type"] == "StandinSleep"
    assert sorted(interrupted["executed"]) == ["1", "10"]
    entry = requests.get(f"{standin.url}/history/slow-1", timeout=10).json()["slow-1"]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


def test_progress_frames_and_interrupt_inside_a_node_with_progress(standin, listener):
    assert queue_prompt(standin, listener, sleep_graph((5.0, 50)), "steps-1").status_code == 200
    frames = listener.wait_for(lambda fs: sum(f["type"] == "progress" for f in fs) >= 3)
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert progress[0] == {"value": 1.0, "max": 50, "prompt_id": "steps-1", "node": "10"}
    post(standin, "/interrupt", {"prompt_id": "steps-1"})
    frames = listener.until_done("steps-1", timeout=5)
    [interrupted] = [f["data"] for f in frames if f["type"] == "execution_interrupted"]
    assert interrupted["node_id"] == "10"


def test_delete_queued_prompt_and_global_interrupt(standin, listener):
    ids = ["first-q", "middle-q", "last-q"]
    for prompt_id in ids:
        assert queue_prompt(standin, listener, sleep_graph((0.6, 6)), prompt_id).status_code == 200
    queue = requests.get(f"{standin.url}/queue", timeout=10).json()
    assert [item[1] for item in queue["queue_running"]] == ["first-q"]
    assert [item[1] for item in queue["queue_pending"]] == ["middle-q", "last-q"]
    assert len(queue["queue_running"][0]) == 5
    assert post(standin, "/queue", {"delete": ["middle-q"]}).text == ""
    after = requests.get(f"{standin.url}/queue", timeout=10).json()
    assert [item[1] for item in after["queue_pending"]] == ["last-q"]
    post(standin, "/interrupt", {})
    listener.until_done("last-q")
    history = {prompt_id: requests.get(f"{standin.url}/history/{prompt_id}", timeout=10).json()
               for prompt_id in ids}
    assert history["middle-q"] == {}
    assert history["first-q"]["first-q"]["status"]["messages"][-1][0] == "execution_interrupted"
    assert history["last-q"]["last-q"]["status"]["status_str"] == "success"
    statuses = [f["data"]["status"]["exec_info"]["queue_remaining"]
                for f in listener.frames if f["type"] == "status"]
    assert 3 in statuses and statuses[-1] == 0


def test_without_client_id_only_broadcasts_arrive(standin, listener):
    answer = post(standin, "/prompt", {"prompt": invert_graph("anonymous"), "prompt_id": "anon"})
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while not requests.get(f"{standin.url}/history/anon", timeout=10).json():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)
    kinds = {f["type"] for f in listener.frames if f["type"] != "status"}
    assert kinds == {"progress_state"}


def test_upload_naming_as_comfyui(standin):
    recorded = recorded_case("upload", "upload")
    first, second = b"\x89PNG first bytes", b"\x89PNG other bytes"
    name = f"up-{uuid.uuid4().hex[:6]}.png"

    def upload(data: bytes, **form: str) -> requests.Response:
        return requests.post(f"{standin.url}/upload/image", files={"image": (name, data)},
                             data=form, timeout=10)

    stem = name.removesuffix(".png")
    assert upload(first, type="input").json()["name"] == name
    assert upload(first, type="input").json()["name"] == name
    assert upload(second, type="input").json()["name"] == f"{stem} (1).png"
    assert upload(second, type="input", overwrite="true").json()["name"] == name
    assert upload(first, type="input", subfolder="sub").json() == {
        "name": name, "subfolder": "sub", "type": "input"}
    escaped = upload(first, subfolder="../escape")
    assert (escaped.status_code, escaped.text) == (400, "")
    assert requests.post(f"{standin.url}/upload/image", timeout=10).status_code == 400
    view = requests.get(f"{standin.url}/view", params={"filename": name, "type": "input"},
                        timeout=10)
    assert view.content == second
    missing = requests.get(f"{standin.url}/view", params={"filename": "nope.png",
                                                          "type": "input"}, timeout=10)
    assert (missing.status_code, missing.text) == (404, "")
    assert [h["status"] for h in recorded["http"]][:7] == [200, 200, 200, 200, 200, 400, 400]


def test_object_info_entries_match_real_comfyui_and_api_prefix(standin):
    recorded = recorded_case("object_info_sample", "object_info_sample")
    for call in recorded["http"]:
        if call["path"].startswith("/object_info/"):
            answer = requests.get(standin.url + call["path"], timeout=10)
            assert answer.json() == call["body"]
    stats = requests.get(f"{standin.url}/api/system_stats", timeout=10).json()
    assert stats["system"]["comfyui_version"] == "0.3.64"
    catalog = requests.get(f"{standin.url}/api/object_info", timeout=10).json()
    assert {"LoadImage", "StandinSleep", "SaveImage"} <= set(catalog)
    assert catalog["SaveImage"]["output_node"] is True


def test_dropped_websockets_are_refused_for_a_while(standin, listener):
    assert post(standin, "/standin/drop_websockets", {"refuse_seconds": 0.5}).status_code == 200
    with pytest.raises(websocket.WebSocketException):
        Listener(standin.url)
    time.sleep(0.6)
    again = Listener(standin.url)
    assert again.wait_for(lambda frames: frames)[0]["type"] == "status"
    again.close()
