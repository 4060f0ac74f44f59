"""Hostile requests are refused at submit, naming the field, and leave nothing in Redis: no run
record, no index entry, no queued message. No worker has published a catalog here, so the graph
gets the structural checks only (``COMFYQ_UNKNOWN_CATALOG=structural``), which must refuse every
malformed link on their own."""

from __future__ import annotations

import json

import pytest

from comfyq import Client, InvalidRunRequest
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.helpers import comfyq_keys, invert_graph, request


@pytest.fixture
def client(fresh_redis_url, tmp_path):
    settings = Settings(redis_url=fresh_redis_url, gpu_types=["T4"], default_gpu="T4",
                        data_dir=tmp_path, unknown_catalog="structural")
    return Client(settings=settings, webhook_settings=WebhookSettings())


def refusal(client: Client, body) -> dict[str, str]:
    """field -> kind of each problem the submit was refused for."""
    with pytest.raises(InvalidRunRequest) as refused:
        client.submit(body)
    return {problem.path: problem.kind for problem in refused.value.problems}


def with_link(link) -> dict:
    graph = invert_graph()
    graph["2"]["inputs"]["image"] = link
    return request(graph)


def deep_text(depth: int) -> bytes:
    return ('{"workflow_id": "w", "workflow_api_json": {}, "workflow": {"a": '
            + "[" * depth + "]" * depth + "}}").encode()


HOSTILE = {
    "lone surrogate": (json.dumps(request(inputs={"prefix": "\ud800"})),
                       {"inputs.prefix": "string_not_unicode"}),
    "raw surrogate bytes": (json.dumps(request(inputs={"prefix": "X"})).replace(
        '"X"', '"\ud800"').encode("utf-8", "surrogatepass"),
        {"inputs.prefix": "string_not_unicode"}),
    "NaN": (json.dumps(request(inputs={"width": 8})).replace('"width": 8', '"width": NaN'),
            {"inputs.width": "number_not_finite"}),
    "Infinity in a node": (json.dumps(request()).replace('"height": 8', '"height": Infinity'),
                           {"workflow_api_json.1.inputs.height": "number_not_finite"}),
    "far too deep": (deep_text(100_000), {"request": "json_too_deep"}),
    "moderately deep": (deep_text(900), {"workflow.a" + ".0" * 62: "json_too_deep"}),
    "one-item link": (with_link(["1"]),
                      {"workflow_api_json.2.inputs.image": "prompt_outputs_failed_validation"}),
    "string index": (with_link(["1", "0"]),
                     {"workflow_api_json.2.inputs.image": "prompt_outputs_failed_validation"}),
    "three-item link": (with_link(["1", 0, 1]),
                        {"workflow_api_json.2.inputs.image": "prompt_outputs_failed_validation"}),
    "no nodes": (request({}), {"workflow_api_json": "prompt_no_outputs"}),
    "webhook read two ways": (request(webhook="http://93.184.215.14\\@127.0.0.1/hook"),
                              {"webhook": "value_error"}),
    "webhook carrying loopback": (request(webhook="http://[64:ff9b::7f00:1]/hook"),
                                  {"webhook": "value_error"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_requests_are_refused_with_their_field_and_nothing_is_kept(client, fresh_redis,
                                                                            name):
    body, expected = HOSTILE[name]
    assert refusal(client, body) == expected
    assert comfyq_keys(fresh_redis) == []

