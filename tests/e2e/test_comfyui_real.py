"""comfyq against a REAL ComfyUI server; skipped unless ``COMFYQ_TEST_COMFYUI_URL`` names one.

A real ``comfyq worker --comfyui-url $COMFYQ_TEST_COMFYUI_URL`` runs model-free graphs there:
EmptyImage -> ImageInvert -> SaveImage must come back as the very PNG ComfyUI wrote (fetched from
its ``/view`` too), a missing upload must fail with ComfyUI's own node_errors, a corrupt one with
its execution_error, and a cancel must interrupt the running prompt. Start a ComfyUI 0.3.64 with
``python main.py --cpu --listen 127.0.0.1 --port 8188`` (CPU is enough), then e.g.
``COMFYQ_TEST_COMFYUI_URL=http://127.0.0.1:8188 pytest -q tests/e2e/test_comfyui_real.py``.
"""

from __future__ import annotations

import io
import os
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from comfyq import RunStatus
from tests.e2e.test_comfyui_backend import ComfyUIFleet, history, local_file
from tests.ops_helpers import wait_until

COMFYUI_URL = os.environ.get("COMFYQ_TEST_COMFYUI_URL", "").rstrip("/")

pytestmark = pytest.mark.skipif(not COMFYUI_URL, reason="COMFYQ_TEST_COMFYUI_URL is not set")


@pytest.fixture(scope="module")
def real_fleet(database_pool, tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui-real")
    with database_pool.lend() as database:
        fleet = ComfyUIFleet(database, root, ["--comfyui-url", COMFYUI_URL],
                             server_class="KSampler", COMFYQ_COMFYUI_INTERRUPT_GRACE_SECONDS="10")
        try:
            yield fleet.start()
        finally:
            fleet.stop()


def test_invert_graph_gives_the_png_comfyui_wrote(real_fleet, record_counts):
    color = int.from_bytes(os.urandom(3), "big")  # a fresh graph, so ComfyUI cannot reuse files
    graph = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage",
              "inputs": {"images": ["2", 0], "filename_prefix": "comfyq_real"}},
    }
    run = real_fleet.wait(real_fleet.submit(graph), timeout=120)
    assert run.status == RunStatus.SUCCESS, run.error
    [image] = run.outputs[0].data["images"]
    ours = local_file(image["url"]).read_bytes()
    [theirs_record] = history(COMFYUI_URL, run.id)["outputs"]["3"]["images"]
    theirs = requests.get(f"{COMFYUI_URL}/view", params=theirs_record, timeout=30).content
    # ComfyUI's float32 arithmetic, truncated when saved: 255 - c, or one less.
    channels = np.array([(color >> 16) & 255, (color >> 8) & 255, color & 255], np.float32)
    expected = (np.float32(255) * (np.float32(1) - channels / np.float32(255))).astype(np.uint8)
    pixels = np.asarray(Image.open(io.BytesIO(ours)))
    record_counts(comfyui=COMFYUI_URL, status=run.status.value, bytes_written=len(theirs),
                  bytes_stored=len(ours), identical=ours == theirs)
    assert ours == theirs
    assert theirs_record["subfolder"] == f"comfyq/{run.id}"
    assert image["filename"] == theirs_record["filename"] == "comfyq_real_00001_.png"
    assert pixels.shape == (48, 64, 3) and (pixels == expected).all()


def test_missing_upload_fails_with_comfyuis_node_errors(real_fleet, record_counts):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": f"{uuid.uuid4().hex}.png"}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    run = real_fleet.wait(real_fleet.submit(graph), timeout=60)
    record_counts(status=run.status.value, live_status=repr(run.live_status))
    assert run.status == RunStatus.FAILED
    [problem] = run.error["node_errors"]["1"]["errors"]
    assert problem["type"] == "custom_validation_failed"


def test_corrupt_upload_fails_with_comfyuis_execution_error(real_fleet, record_counts):
    name = f"comfyq-corrupt-{uuid.uuid4().hex[:8]}.png"
    corrupt = b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 4
    stored = requests.post(f"{COMFYUI_URL}/upload/image", timeout=30,
                           files={"image": (name, corrupt)},
                           data={"type": "input"}).json()
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": stored["name"]}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    run = real_fleet.wait(real_fleet.submit(graph), timeout=60)
    record_counts(status=run.status.value, live_status=repr(run.live_status))
    assert run.status == RunStatus.FAILED
    assert (run.error["node_id"], run.error["node_type"]) == ("1", "LoadImage")
    assert (run.error["exception_type"], run.error["exception_message"]) == (
        "OSError", "Truncated File Read")
    assert "LoadImage" in run.error["traceback"] or "load_image" in run.error["traceback"]


def test_cancel_interrupts_the_prompt_running_on_comfyui(real_fleet, record_counts):
    graph = {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 1024, "height": 1024, "batch_size": 1,
        "color": int.from_bytes(os.urandom(3), "big")}}}
    previous = "1"
    for node in range(10, 16):
        graph[str(node)] = {"class_type": "ImageBlur", "inputs": {
            "image": [previous, 0], "blur_radius": 31, "sigma": 5.0}}
        previous = str(node)
    graph["99"] = {"class_type": "PreviewImage", "inputs": {"images": [previous, 0]}}
    run_id = real_fleet.submit(graph)
    wait_until(lambda: real_fleet.live_status(run_id).startswith("Executing ImageBlur"),
               timeout=60)
    real_fleet.client.cancel(run_id)
    run = real_fleet.wait(run_id, timeout=30)
    entry = history(COMFYUI_URL, run_id)
    last = entry["status"]["messages"][-1]
    record_counts(status=run.status.value, comfyui_said=last[0],
                  at_node=last[1].get("node_id"))
    assert run.status == RunStatus.CANCELLED
    assert last[0] == "execution_interrupted"
