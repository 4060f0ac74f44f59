"""Input files by URL: ``POST /file/upload`` through ComfyDeploy's SDK keeps a file in the bucket
(a real S3 server: moto) and answers its URL; a worker fetches such URLs through the SSRF guard
(the bucket allowed on its loopback address, any other loopback URL refused), within a size limit,
checking the content, and from its cache the second time; a run's external LoRA input does it."""

from __future__ import annotations

import json
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import pytest
import requests

from comfyq import RunStatus
from comfyq.api.app import create_app
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.registry import node_classes
from comfyq.execution.runner import RunRunner, WorkerIdentity
from comfyq.remote_files import InputFetchError, fetch_input
from comfyq.runs.hooks import RunHooks
from comfyq.runs.outputs import output_files
from comfyq.settings import Settings, reset_settings
from comfyq.webhooks.settings import WebhookSettings
from tests.e2e.test_api import ThreadedServer
from tests.s3_server import BUCKET, moto_server

comfydeploy = pytest.importorskip("comfydeploy", reason="pip install 'comfydeploy>=0.6,<0.7'")
pytest.importorskip("moto", reason="pip install 'moto[server]>=5,<6'")

TOKEN = "upload-token"
GUARD = WebhookSettings()  # the default guard: public addresses only


def safetensors(tensor_names=("lora_up.weight",)) -> bytes:
    header = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
                         for name in tensor_names}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0\0\0\0"


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture
def settings(s3, fresh_redis_url, tmp_path, monkeypatch):
    env = {**s3.settings_env(prefix="inputs"), "COMFYQ_DATA_DIR": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield Settings(redis_url=fresh_redis_url, gpu_types=["A100"], default_gpu="A100",
                   data_dir=tmp_path, api_tokens=[TOKEN], storage="s3",
                   s3_endpoint_url=s3.endpoint_url, s3_region="us-east-1", s3_bucket=BUCKET,
                   s3_prefix="inputs", s3_addressing_style="path")
    reset_settings()


@pytest.fixture
def upload(settings):
    """Upload through ComfyDeploy's SDK to comfyq's API; answers the SDK's response."""
    with ThreadedServer(create_app(settings)) as server, comfydeploy.ComfyDeploy(
            bearer=TOKEN, server_url=f"{server.root}/api") as sdk:
        def send(name: str, content: bytes, content_type: str = "application/octet-stream"):
            return sdk.file.upload(request={"file": {"file_name": name, "content": content,
                                                      "content_type": content_type}}
                                   ).file_upload_response
        yield send


def test_an_uploaded_file_is_kept_in_the_bucket_and_its_url_opens(upload, s3):
    content = safetensors()
    answer = upload("../my lora?.safetensors", content)
    assert answer.file_name == "my_lora_.safetensors"  # no folders, no odd characters
    assert answer.file_url.startswith(
        f"{s3.endpoint_url}/{BUCKET}/inputs/uploads/{answer.file_id}/my_lora_.safetensors?")
    assert "X-Amz-Signature=" in answer.file_url
    assert requests.get(answer.file_url, timeout=10).content == content
    assert s3.keys("inputs/uploads/") == [f"inputs/uploads/{answer.file_id}/my_lora_.safetensors"]


@pytest.mark.parametrize(("name", "claimed", "served"), [
    ("page.html", "text/html", "application/octet-stream"),
    ("photo.png", "text/html", "image/png"),
    ("clip.mp4", "application/octet-stream", "video/mp4"),
    ("notes", "image/svg+xml", "application/octet-stream"),
    ("drawing.svg", "image/svg+xml", "application/octet-stream"),
])
def test_an_upload_is_served_as_its_name_says_never_as_a_page(upload, name, claimed, served):
    answer = upload(name, b"<script>alert(1)</script>", claimed)
    assert requests.get(answer.file_url, timeout=10).headers["Content-Type"] == served


def test_the_bucket_is_fetched_on_its_loopback_address_and_cached(upload, settings, s3):
    content = safetensors()
    answer = upload("style.safetensors", content)
    path = fetch_input(answer.file_url, "lora", settings, GUARD)
    assert path.read_bytes() == content and path.name == "style.safetensors"
    s3.client().delete_object(Bucket=BUCKET,
                              Key=f"inputs/uploads/{answer.file_id}/style.safetensors")
    # Gone from the bucket, still here: the cache answers, for a re-signed URL too.
    resigned = answer.file_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert fetch_input(resigned, "lora", settings, GUARD) == path


class _Files(ThreadingHTTPServer):
    """A loopback server (not the bucket) answering the same bytes to every GET."""

    def __init__(self, body: bytes) -> None:
        body_bytes = body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body_bytes)))
                self.end_headers()
                self.wfile.write(body_bytes)

            def log_message(self, *args) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/model.safetensors"


def test_any_other_private_url_is_refused_by_the_guard(settings):
    server = _Files(safetensors())
    try:
        with pytest.raises(InputFetchError, match="127.0.0.1 is a loopback address"):
            fetch_input(server.url, "lora", settings, GUARD)
        allowed = WebhookSettings(webhook_allowed_networks=["127.0.0.1/32"])
        assert fetch_input(server.url, "lora", settings, allowed).read_bytes() == safetensors()
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_over_the_size_limit_is_refused(upload, settings):
    answer = upload("big.bin", b"x" * 1000)
    small = settings.model_copy(update={"input_max_bytes": 999})
    with pytest.raises(InputFetchError, match=r"over the limit of 999 .*COMFYQ_INPUT_MAX_BYTES"):
        fetch_input(answer.file_url, "file", small, GUARD)
    assert not any(small.data_dir.joinpath("input-cache").rglob("big.bin"))


def test_content_is_checked_by_kind(upload, settings):
    pickled = upload("model.ckpt", b"\x80\x04\x95 pickled checkpoint")
    with pytest.raises(InputFetchError, match="not a safetensors file"):
        fetch_input(pickled.file_url, "checkpoint", settings, GUARD)
    assert fetch_input(pickled.file_url, "file", settings, GUARD).read_bytes().startswith(b"\x80")
    not_image = upload("photo.png", b"no picture here")
    with pytest.raises(InputFetchError, match="not an image"):
        fetch_input(not_image.file_url, "image", settings, GUARD)


def test_local_storage_uploads_are_read_from_this_hosts_uploads_folder_only(settings, tmp_path):
    from comfyq.storage.uploads import keep_upload

    local = settings.model_copy(update={"storage": "local"})
    with (tmp_path / "notes.txt").open("w+b") as source:
        source.write(b"hello")
        source.seek(0)
        kept = keep_upload(local, source, "notes.txt")
    assert kept.url.startswith("file://")
    assert fetch_input(kept.url, "file", local, GUARD).read_bytes() == b"hello"
    with pytest.raises(InputFetchError, match="file:// inputs are read only inside"):
        fetch_input((tmp_path / "notes.txt").as_uri(), "file", local, GUARD)


def test_a_runs_external_lora_input_is_fetched_by_its_worker(upload, settings):
    from comfyq import Client

    content = safetensors(("a.weight", "b.weight"))
    answer = upload("detail.safetensors", content)
    client = Client(settings=settings)
    graph = {
        "1": {"class_type": "ComfyUIDeployExternalLora", "inputs": {"input_id": "lora"}},
        "2": {"class_type": "ComfyDeployOutputText",
              "inputs": {"text": ["1", 0], "filename_prefix": "lora-path", "file_type": "txt"}},
    }
    run_id = client.submit({"workflow_id": "inputs", "workflow_api_json": graph,
                            "inputs": {"lora": answer.file_url},
                            "gpu": "A100"})
    RunRunner(client.store, settings, InProcessBackend(node_classes()),
              WorkerIdentity("gpu-inputs@host"), RunHooks()).run(run_id)
    run = client.get_run(run_id)
    assert run.status == RunStatus.SUCCESS, run.error
    [kept] = list(settings.data_dir.joinpath("input-cache").rglob("detail.safetensors"))
    assert kept.read_bytes() == content
    [text_file] = output_files(run.outputs)  # the path the LoRA input gave, as the run wrote it
    assert requests.get(text_file.url, timeout=10).text == str(kept)


def test_retention_deletes_old_uploads(upload, settings, s3, fresh_redis):
    from comfyq.runs.store import RunStore
    from comfyq.scheduler import reaper
    from tests.redis.moving_time import MovableClock

    answer = upload("old.bin", b"old")
    store, clock = RunStore(fresh_redis), MovableClock()
    store.clock = clock
    retained = settings.model_copy(update={"run_retention_seconds": 60})
    clock.advance(30)
    reaper.expire_old_runs(store, retained)
    assert s3.keys(f"inputs/uploads/{answer.file_id}/") != []  # not old enough yet
    clock.advance(31)
    reaper.expire_old_runs(store, retained)
    assert s3.keys(f"inputs/uploads/{answer.file_id}/") == []
