"""The whole pipeline with real processes: submit -> GPU queue -> pinned worker -> PNG -> webhook.

Every test runs once per broker: a fleet of this module's own on a Redis database of its own,
with Redis as the broker, then with RabbitMQ (a vhost of its own)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import redis
from PIL import Image

from comfyq import RunStatus
from comfyq.redis import keys
from tests.e2e.conftest import fleet_environment, ready_fleet
from tests.helpers import invert_graph, request
from tests.ops_helpers import wait_until


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def fleet_settings(request, database_pool, tmp_path_factory):
    """This module's fleet settings, once per broker (overrides the session's)."""
    from tests.rabbitmq import fresh_vhost, unavailable_reason

    with contextlib.ExitStack() as stack:
        broker_url = None
        if request.param == "rabbitmq":
            reason = unavailable_reason()
            if reason:
                pytest.skip(reason)
            broker_url = stack.enter_context(fresh_vhost())
        records_url = stack.enter_context(database_pool.lend())
        yield fleet_environment(records_url, tmp_path_factory.mktemp("comfyq-data"), broker_url)


@pytest.fixture(scope="module")
def fleet(fleet_settings, tmp_path_factory):
    with ready_fleet(fleet_settings[0], tmp_path_factory.mktemp("logs") / "fleet.log") as running:
        yield running


@pytest.fixture
def redis_client(fleet_settings):
    client = redis.Redis.from_url(fleet_settings[0]["COMFYQ_REDIS_URL"], decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def worker_of(fleet, redis_client, gpu_type: str) -> str:
    return next(w["name"] for w in fleet.workers(redis_client) if w.get("gpu_type") == gpu_type)


def test_runs_execute_only_on_workers_of_their_gpu(client, fleet, redis_client):
    a100_runs = [client.submit(request(gpu="A100")) for _ in range(3)]
    t4_runs = [client.submit(request(gpu="T4")) for _ in range(3)]
    finished = {run_id: client.wait(run_id, timeout=60) for run_id in a100_runs + t4_runs}
    assert {run.status for run in finished.values()} == {RunStatus.SUCCESS}
    a100_worker, t4_worker = worker_of(fleet, redis_client, "A100"), worker_of(fleet, redis_client, "T4")
    assert a100_worker != t4_worker
    assert {finished[r].worker for r in a100_runs} == {a100_worker}
    assert {finished[r].worker for r in t4_runs} == {t4_worker}
    assert {finished[r].gpu for r in a100_runs} == {"A100"}


def test_success_records_png_output(client):
    run_id = client.submit(request(invert_graph(), inputs={"width": 12, "prefix": "cyan"}))
    run = client.wait(run_id, timeout=60)
    assert run.status == RunStatus.SUCCESS, run.error
    assert run.progress == 1.0
    assert run.started_at and run.ended_at and run.queued_at <= run.started_at <= run.ended_at
    [output] = run.outputs
    assert output.node_id == "3" and output.run_id == run_id
    [image] = output.data["images"]
    assert image["filename"] == "cyan_00001_.png" and image["type"] == "output"
    path = image["url"].removeprefix("file://")
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (8, 12, 3)
    assert (pixels == [0, 255, 255]).all()  # red inverted


def test_final_webhook_only_unless_intermediate_asked(client, redis_client):
    from comfyq.devtools.local_receiver import WebhookReceiver

    def outbox_done(run_id: str) -> bool:
        """Every event of the run's outbox delivered, the final one (recorded last) among
        them: nothing more can be sent for it."""
        return (client.get_run(run_id).webhook_status == "delivered"
                and redis_client.zcard(keys.webhook_run_queue(run_id)) == 0)

    with WebhookReceiver() as quiet, WebhookReceiver() as chatty:
        quiet_run = client.submit(request(webhook=quiet.url))
        chatty_run = client.submit(request(webhook=chatty.url, webhook_intermediate_status=True))
        assert client.wait(quiet_run, 60).status == RunStatus.SUCCESS
        assert client.wait(chatty_run, 60).status == RunStatus.SUCCESS
        final = lambda ds: any(d.json()["status"] == "success" for d in ds)
        assert quiet.wait_for(final, 20) and chatty.wait_for(final, 20)
        wait_until(lambda: outbox_done(quiet_run) and outbox_done(chatty_run))
        quiet_bodies = [d.json() for d in quiet.accepted()]
        chatty_statuses = [d.json()["status"] for d in chatty.accepted()]
    assert [b["status"] for b in quiet_bodies] == ["success"]
    assert quiet_bodies[0]["run_id"] == quiet_run
    assert quiet_bodies[0]["outputs"][0]["data"]["images"][0]["filename"].endswith(".png")
    assert quiet_bodies[0]["progress"] == 1.0
    assert chatty_statuses[-1] == "success"
    assert {"started", "running"} <= set(chatty_statuses)
    order = [RunStatus(s).rank for s in chatty_statuses]
    assert order == sorted(order), chatty_statuses


def test_webhook_answered_500_twice_is_delivered_on_retry(client):
    from comfyq.devtools.local_receiver import WebhookReceiver

    with WebhookReceiver(answers=[500, 500]) as receiver:
        run_id = client.submit(request(webhook=receiver.url))
        assert client.wait(run_id, 60).status == RunStatus.SUCCESS
        assert receiver.wait_for(lambda ds: len(ds) == 1, 30)
        attempts = list(receiver.deliveries)
    assert [d.status_answered for d in attempts] == [500, 500, 200]
    assert len({d.headers.get("webhook-id") for d in attempts}) == 1
    # The worker records the outcome once the receiver's answer is back: after it was received.
    wait_until(lambda: client.get_run(run_id).webhook_status == "delivered",
               describe=lambda: client.get_run(run_id).webhook_status)


def test_failing_node_fails_the_run_with_node_and_message(client):
    from comfyq.devtools.local_receiver import WebhookReceiver

    graph = {
        "1": {"class_type": "ComfyUIDeployExternalImage",
              "inputs": {"input_id": "picture", "default_value_url": ""}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    with WebhookReceiver() as receiver:
        run_id = client.submit(request(graph, webhook=receiver.url,
                                       inputs={"picture": "http://127.0.0.1:9/missing.png"}))
        run = client.wait(run_id, 60)
        assert receiver.wait_for(lambda ds: len(ds) == 1, 20)
        [delivery] = receiver.accepted()
    assert run.status == RunStatus.FAILED
    assert run.error["node_id"] == "1"
    assert run.error["node_type"] == "ComfyUIDeployExternalImage"
    assert "127.0.0.1:9" in run.error["exception_message"]
    assert run.outputs == []
    body = delivery.json()
    assert body["status"] == "failed"
    assert body["error"]["node_id"] == "1"
    assert "127.0.0.1:9" in body["error"]["exception_message"]


def test_cancel_of_finished_run_is_a_clear_no_op(client):
    run_id = client.submit(request())
    client.wait(run_id, 60)
    result = client.cancel(run_id)
    assert not result.cancelled and result.status == RunStatus.SUCCESS
    assert "already finished" in result.message


@pytest.mark.parametrize("missing", ["nope"])
def test_unknown_run(client, missing):
    from comfyq import RunNotFound

    with pytest.raises(RunNotFound):
        client.get_run(missing)
