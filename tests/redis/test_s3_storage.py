"""Outputs in S3-compatible storage, against a real S3 server (moto's server mode) and a real
Redis: a worker's runner uploads each output under ``<prefix>/<run_id>/``, records keep the
object's address, every read signs a fresh URL that downloads the same bytes, an upload retries
through an outage and fails the run when it cannot succeed, and retention deletes the objects
with the record."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from comfyq import RunStatus
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.registry import node_classes
from comfyq.execution.runner import RunRunner, WorkerIdentity
from comfyq.redis import keys
from comfyq.runs.codec import decode_value
from comfyq.runs.hooks import RunHooks
from comfyq.runs.outputs import download_outputs, output_files
from comfyq.scheduler import reaper
from comfyq.settings import SettingsError, environment_settings, Settings, reset_settings
from tests.helpers import invert_graph, request
from tests.ops_helpers import run_comfyq
from tests.s3_server import BUCKET, TcpRelay, free_port, moto_server

pytest.importorskip("moto", reason="pip install 'moto[server]>=5,<6'")
pytest.importorskip("boto3", reason="pip install 'boto3>=1.34,<2'")

WORKER = "gpu-test@storage-host"


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process reads records with the S3 settings (records are signed on read)."""
    def apply(**overrides: str) -> dict[str, str]:
        env = {**s3.settings_env(), **overrides}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_settings()
        return env
    apply()
    yield apply
    reset_settings()


def s3_settings(env: dict[str, str]) -> dict:
    return {"storage": "s3", "s3_endpoint_url": env["COMFYQ_S3_ENDPOINT_URL"],
            "s3_region": "us-east-1", "s3_bucket": env["COMFYQ_S3_BUCKET"],
            "s3_prefix": env["COMFYQ_S3_PREFIX"], "s3_addressing_style": "path",
            "s3_upload_retry_seconds": float(env.get("COMFYQ_S3_UPLOAD_RETRY_SECONDS", 5))}


def run_once(client, **graph_args) -> str:
    run_id = client.submit(request(invert_graph(**graph_args), gpu="A100"))
    runner = RunRunner(client.store, client.settings, InProcessBackend(node_classes()),
                       WorkerIdentity(WORKER), RunHooks())
    runner.run(run_id)
    return run_id


def raw_items(client, run_id: str) -> list[dict]:
    outputs = decode_value(client.store.client.hget(keys.run(run_id), "outputs"))
    return [item for output in outputs for item in output["data"].get("images", [])]


def test_outputs_go_to_the_bucket_and_every_read_gives_a_url_with_the_same_bytes(
        make_client, s3, s3_env, tmp_path):
    client = make_client(**s3_settings(s3_env()))
    run_id = run_once(client, prefix="stored")
    run = client.get_run(run_id)
    assert run.status == RunStatus.SUCCESS, run.error

    [item] = raw_items(client, run_id)  # the record keeps the address, never a signed URL
    [key] = s3.keys(f"runs/{run_id}/")
    assert re.fullmatch(rf"runs/{run_id}/[0-9a-f]{{12}}/stored_00001_\.png", key)
    assert item["url"] == f"s3://{BUCKET}/{key}"
    head = s3.client().head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "image/png" and head["Metadata"]["worker"] == WORKER

    local = (client.settings.output_dir / run_id / "stored_00001_.png").read_bytes()
    [file] = output_files(run.outputs)
    assert file.url.startswith(f"{s3.endpoint_url}/{BUCKET}/{key}?")
    assert "X-Amz-Signature" in parse_qs(urlsplit(file.url).query)
    answer = requests.get(file.url, timeout=10)
    assert answer.status_code == 200 and answer.content == local
    assert answer.headers["Content-Type"] == "image/png"
    [saved] = download_outputs([file], tmp_path / "download")
    assert saved.read_bytes() == local
    command = run_comfyq({**s3_env(), "COMFYQ_REDIS_URL": client.settings.redis_url},
                         "outputs", run_id, "--download", str(tmp_path / "cli"))
    assert command.returncode == 0, command.stderr
    assert (tmp_path / "cli" / "stored_00001_.png").read_bytes() == local


def test_an_old_record_still_gives_a_working_url_because_each_read_signs_anew(
        make_client, s3, s3_env):
    env = s3_env(COMFYQ_S3_URL_LIFETIME_SECONDS="60")
    client = make_client(**s3_settings(env))
    run_id = run_once(client)
    first = parse_qs(urlsplit(output_files(client.get_run(run_id).outputs)[0].url).query)
    time.sleep(1.1)  # signing times are in whole seconds
    read_at = datetime.now(UTC).replace(microsecond=0)
    url = output_files(client.get_run(run_id).outputs)[0].url
    again = parse_qs(urlsplit(url).query)
    assert first["X-Amz-Expires"] == again["X-Amz-Expires"] == ["60"]
    signed_at = datetime.strptime(again["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert signed_at >= read_at and again["X-Amz-Date"] != first["X-Amz-Date"]
    assert requests.get(url, timeout=10).status_code == 200


def test_a_public_base_url_gives_plain_urls(make_client, s3, s3_env):
    env = s3_env(COMFYQ_S3_PUBLIC_BASE_URL=f"{s3.endpoint_url}/{BUCKET}/")
    client = make_client(**s3_settings(env))
    run_id = run_once(client, prefix="public")
    [file] = output_files(client.get_run(run_id).outputs)
    [key] = s3.keys(f"runs/{run_id}/")
    assert file.url == f"{s3.endpoint_url}/{BUCKET}/{key}"
    assert raw_items(client, run_id)[0]["is_public"] is True


def test_an_upload_refused_by_the_server_fails_the_run_naming_the_cause(make_client, s3,
                                                                        s3_env):
    env = s3_env(COMFYQ_S3_BUCKET="no-such-bucket")
    client = make_client(**s3_settings(env))
    run_id = run_once(client)
    run = client.get_run(run_id)
    assert run.status == RunStatus.FAILED and not run.outputs
    assert run.error["exception_type"] == "OutputUploadFailed"
    assert "s3://no-such-bucket/" in run.error["exception_message"]
    assert "NoSuchBucket" in run.error["exception_message"]
    assert run.live_status == "Failed: outputs could not be stored"


def test_an_unreachable_server_is_retried_then_fails_the_run(make_client, s3_env, caplog):
    env = s3_env(COMFYQ_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
                 COMFYQ_S3_UPLOAD_RETRY_SECONDS="2")
    client = make_client(**s3_settings(env))
    with caplog.at_level(logging.WARNING, logger="comfyq.storage.s3"):
        run_id = run_once(client)
    run = client.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.error["exception_type"] == "OutputUploadFailed"
    retries = [record for record in caplog.records if "retrying" in record.getMessage()]
    assert retries, "the upload was not retried"
    assert f"({len(retries) + 1} attempt(s))" in run.error["exception_message"]


def test_an_upload_retries_through_a_server_outage_and_the_run_succeeds(
        make_client, s3, s3_env, caplog):
    relay = TcpRelay(int(s3.endpoint_url.rsplit(":", 1)[1]))  # down: nothing listens
    env = s3_env(COMFYQ_S3_ENDPOINT_URL=relay.endpoint_url, COMFYQ_S3_PREFIX="outage",
                 COMFYQ_S3_UPLOAD_RETRY_SECONDS="30")
    client = make_client(**s3_settings(env))
    outcome = {}
    with caplog.at_level(logging.WARNING, logger="comfyq.storage.s3"):
        worker = threading.Thread(target=lambda: outcome.update(run_id=run_once(client)))
        worker.start()
        deadline = time.monotonic() + 30
        while not any("retrying" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, "no upload attempt failed"
            time.sleep(0.05)
        relay.up()  # the server is back
        try:
            worker.join(60)
            run = client.get_run(outcome["run_id"])
        finally:
            relay.down()
    assert run.status == RunStatus.SUCCESS, run.error
    [key] = s3.keys(f"outage/{run.id}/")
    assert key.endswith("/invert_00001_.png")
    assert s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == (
        client.settings.output_dir / run.id / "invert_00001_.png").read_bytes()


def test_retention_deletes_a_runs_objects_with_its_record(make_client, s3, s3_env, clock):
    env = s3_env(COMFYQ_S3_PREFIX="retained")
    client = make_client(run_retention_seconds=60, **s3_settings(env))
    expired, kept = run_once(client), run_once(client)
    assert len(s3.keys(f"retained/{expired}/")) == 1
    client.store.client.delete(keys.run(expired))  # its record expired
    clock.advance(61)
    assert reaper.expire_old_runs(client.store, client.settings) == 1
    assert s3.keys(f"retained/{expired}/") == []
    assert len(s3.keys(f"retained/{kept}/")) == 1


def test_s3_storage_needs_a_bucket_and_http_urls(monkeypatch):
    monkeypatch.setenv("COMFYQ_STORAGE", "s3")
    monkeypatch.setenv("COMFYQ_S3_ENDPOINT_URL", "ftp://storage.example")
    with pytest.raises(SettingsError) as refused:
        environment_settings(Settings)
    assert refused.value.problems == [
        "COMFYQ_S3_ENDPOINT_URL: expected a URL starting with http:// or https://",
        "COMFYQ_S3_BUCKET: required when COMFYQ_STORAGE is s3"]


def test_a_large_output_goes_up_in_parts(s3, s3_env, tmp_path):
    from comfyq.storage import RunFiles, output_storage
    from comfyq.storage.s3 import MULTIPART_BYTES

    env = s3_env(COMFYQ_S3_PREFIX="large")
    settings = Settings(**s3_settings(env), data_dir=tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_BYTES + 1024))
    url = output_storage(settings).keep(RunFiles("large-run", "e1"), big, "large-run/big.bin")
    assert url == f"s3://{BUCKET}/large/large-run/e1/big.bin"
    head = s3.client().head_object(Bucket=BUCKET, Key="large/large-run/e1/big.bin")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of two parts
