"""A submit writes its record and its broker message together; submit_many answers each
request on its own and queues the valid ones in order."""

from __future__ import annotations

import json

import pytest
import redis

from comfyq.broker.names import EXECUTE_RUN_TASK, gpu_queue
from comfyq.broker.priorities import DEFAULT_PRIORITY, message_priority
from comfyq.broker.redis_transport import RedisTransportView, queue_lists
from comfyq.errors import InvalidRunRequest, SubmitFailed, UnknownGpuType
from comfyq.redis import keys
from comfyq.settings import Settings

GRAPH = {"1": {"class_type": "EmptyImage",
               "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
QUEUE = gpu_queue("A100")
#: kombu's Redis lists of the queue, highest priority first; default-priority runs go on the last.
QUEUE_LISTS = queue_lists(QUEUE)
DEFAULT_LIST = QUEUE_LISTS[-1]


def request(**changes):
    return {"workflow_id": "w", "workflow_api_json": GRAPH, "gpu": "A100", **changes}


def queued_messages(client: redis.Redis) -> list[dict]:
    """The queue's messages, oldest (first to be taken) first."""
    return [json.loads(raw) for name in QUEUE_LISTS for raw in reversed(client.lrange(name, 0, -1))]


def test_the_message_is_the_one_send_task_pushes(make_client, fresh_redis):
    client = make_client()
    assert client._publishes_with_records
    run_id = client.submit(request())
    client.celery_app.send_task(EXECUTE_RUN_TASK, args=[run_id], task_id=run_id, queue=QUEUE,
                                priority=message_priority(DEFAULT_PRIORITY, amqp=False))

    ours, celerys = queued_messages(fresh_redis)
    for message in (ours, celerys):
        assert message["properties"].pop("delivery_tag")
    assert ours == celerys
    assert ours["headers"]["id"] == run_id and ours["properties"]["correlation_id"] == run_id


def test_each_message_gets_its_own_delivery_tag(make_client, fresh_redis):
    client = make_client()
    client.submit(request())
    client.submit(request())
    tags = [message["properties"]["delivery_tag"] for message in queued_messages(fresh_redis)]
    assert len(set(tags)) == 2


def test_a_submit_is_one_transaction_with_its_message(make_client, fresh_redis):
    client = make_client()
    first = client.submit(request())  # the first one also makes the queue's message template
    before = fresh_redis.info("commandstats")
    run_id = client.submit(request())
    after = fresh_redis.info("commandstats")

    def calls(stats, command):
        return stats.get(f"cmdstat_{command}", {"calls": 0})["calls"]

    # The INFO commands of this test are the only others the server saw meanwhile.
    assert {command: calls(after, command) - calls(before, command)
            for command in ("multi", "exec", "lpush", "hset")} == {
        "multi": 1, "exec": 1, "lpush": 1, "hset": 1}
    assert fresh_redis.hget(keys.run(run_id), "status") == "queued"
    assert RedisTransportView(fresh_redis).waiting_run_ids(QUEUE) == [first, run_id]


def test_a_failed_transaction_leaves_no_run(make_client, fresh_redis):
    client = make_client()
    first = client.submit(request())
    # A queue key of the wrong type makes the LPUSH inside the transaction fail, after the
    # record's own commands were applied: the submit must take those back.
    fresh_redis.delete(DEFAULT_LIST)
    fresh_redis.set(DEFAULT_LIST, "not a list")
    with pytest.raises(SubmitFailed, match="WRONGTYPE"):
        client.submit(request())
    assert fresh_redis.keys("comfyq:run:*") == [keys.run(first)]
    assert fresh_redis.zrange(keys.QUEUED_RUNS, 0, -1) == [first]


def test_a_broker_that_cannot_make_the_message_fails_the_submit(make_client, fresh_redis):
    client = make_client()
    fresh_redis.set(QUEUE, "not a list")  # declaring the queue, before its first message, fails
    with pytest.raises(SubmitFailed, match="could not enqueue"):
        client.submit(request())
    assert fresh_redis.keys("comfyq:run:*") == []


def test_another_broker_publishes_after_the_record(fresh_redis_url, database_pool, tmp_path):
    with database_pool.lend() as broker_url:
        from comfyq import Client
        from comfyq.webhooks.settings import WebhookSettings

        settings = Settings(redis_url=fresh_redis_url, broker_url=broker_url,
                            gpu_types=["A100"], default_gpu="A100", data_dir=tmp_path)
        client = Client(settings=settings, webhook_settings=WebhookSettings())
        assert not client._publishes_with_records
        run_id = client.submit(request())
        broker = redis.Redis.from_url(broker_url, decode_responses=True)
        assert RedisTransportView(broker).waiting_run_ids(QUEUE) == [run_id]
        records = redis.Redis.from_url(fresh_redis_url, decode_responses=True)
        assert sum(records.llen(name) for name in QUEUE_LISTS) == 0
        assert records.hget(keys.run(run_id), "status") == "queued"


def test_submit_many_answers_each_request_in_order(make_client, fresh_redis):
    client = make_client()
    outcomes = client.submit_many([
        request(),
        request(workflow_api_json={"1": {"class_type": "SaveImage", "inputs": {
            "images": ["9", 0], "filename_prefix": "x"}}}),
        request(gpu="H100"),
        json.dumps(request(inputs={"seed": 3})),
        b"{not json",
    ])

    assert [outcome.run_id is not None for outcome in outcomes] == [
        True, False, False, True, False]
    assert isinstance(outcomes[1].error, InvalidRunRequest)
    assert "workflow_api_json.1.inputs.images" in str(outcomes[1].error)
    assert isinstance(outcomes[2].error, UnknownGpuType)
    assert isinstance(outcomes[4].error, InvalidRunRequest)
    queued = [outcomes[0].run_id, outcomes[3].run_id]
    assert RedisTransportView(fresh_redis).waiting_run_ids(QUEUE) == queued
    assert [client.get_run(run_id).status.value for run_id in queued] == ["queued", "queued"]
    assert client.get_run(queued[1]).workflow_inputs == {"seed": 3}


def test_submit_many_counts_every_run_in_the_metrics(make_client, fresh_redis):
    client = make_client()
    client.submit_many([request()] * 3)
    assert fresh_redis.hget(keys.RUN_METRICS, "submitted|A100") == "3"
    assert fresh_redis.zcard(keys.QUEUED_RUNS) == 3


def test_submit_many_of_nothing_does_nothing(make_client, fresh_redis):
    assert make_client().submit_many([]) == []
    assert fresh_redis.dbsize() == 0
