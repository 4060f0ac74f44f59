"""Graphs are checked at submit against the catalog real workers published, with ComfyUI's answer.

A refused graph leaves nothing behind: no run record, no message in any queue. Each error type
on every built-in is covered by the validation unit tests; here the whole path is: a real
``comfyq worker`` publishes, a client submits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from comfyq.catalog.reading import published_catalog
from comfyq.catalog.validation import PromptValidationError
from comfyq.inputs import ExternalInputError
from comfyq.producer.graph_check import CatalogUnavailable
from comfyq.redis import keys
from tests.helpers import invert_graph, request
from tests.ops_helpers import wait_until


@pytest.fixture(scope="module")
def published(fleet, redis_url) -> None:
    """Wait until the session fleet's workers have published their catalogs."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    wait_until(lambda: all(published_catalog(client, gpu) for gpu in ("A100", "T4")),
               timeout=30, describe=lambda: "the fleet published no catalog")
    client.close()


def footprint(client: redis.Redis) -> dict[str, Any]:
    """What a submit would leave in Redis: run records, the runs index and queued messages."""
    return {"runs": sorted(client.scan_iter(match="comfyq:run:*")),
            "index": client.zcard(keys.RUNS_INDEX),
            "queued": {gpu: client.llen(f"comfyq.gpu.{gpu}") for gpu in ("A100", "T4")}}


def refused(client, redis_client, graph: dict, **fields: Any) -> dict:
    """Submit ``graph``, expect a refusal, check nothing was kept; returns ComfyUI's body."""
    before = footprint(redis_client)
    with pytest.raises(PromptValidationError) as raised:
        client.submit(request(graph, **fields))
    assert footprint(redis_client) == before
    return raised.value.body


def test_an_unknown_class_is_refused_as_comfyui_refuses_it(published, client, redis_client):
    graph = invert_graph()
    graph["2"]["class_type"] = "ImageInvertX"
    body = refused(client, redis_client, graph, gpu="A100")
    assert body == {
        "error": {"type": "invalid_prompt",
                  "message": "Cannot execute because node ImageInvertX does not exist.",
                  "details": "Node ID '#2'", "extra_info": {}},
        "node_errors": {}}


def test_a_value_out_of_range_is_refused_with_the_node_and_its_outputs(published, client,
                                                                       redis_client):
    graph = invert_graph()
    graph["1"]["inputs"]["height"] = 0
    body = refused(client, redis_client, graph)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"] == {"1": {
        "errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                    "details": "height",
                    "extra_info": {"input_name": "height",
                                   "input_config": ["INT", {"default": 512, "min": 1,
                                                            "max": 16384, "step": 1}],
                                   "received_value": 0}}],
        "dependent_outputs": ["3"], "class_type": "EmptyImage"}}


def test_a_combo_value_not_in_the_list_is_refused(published, client, redis_client):
    graph = invert_graph()
    graph["4"] = {"class_type": "ImageScale", "inputs": {
        "image": ["2", 0], "upscale_method": "super-resolution", "width": 16, "height": 16,
        "crop": "disabled"}}
    graph["3"]["inputs"]["images"] = ["4", 0]
    body = refused(client, redis_client, graph, gpu="T4")
    [error] = body["node_errors"]["4"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == ("upscale_method: 'super-resolution' not in "
                                "['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']")
    assert body["node_errors"]["4"]["class_type"] == "ImageScale"


def test_request_inputs_are_applied_before_the_graph_is_checked(published, client,
                                                                redis_client):
    graph = invert_graph()
    graph["1"]["inputs"]["height"] = ["12", 0]
    graph["12"] = {"class_type": "ComfyUIDeployExternalNumberSlider",  # a FLOAT, not an INT
                   "inputs": {"input_id": "height", "default_value": 0.5}}
    body = refused(client, redis_client, graph, inputs={"height": 0.25})
    assert body["node_errors"]["1"]["errors"][0]["type"] == "return_type_mismatch"
    before = footprint(redis_client)
    with pytest.raises(ExternalInputError, match="inputs.width"):
        client.submit(request(invert_graph(), inputs={"width": "wide"}))
    assert footprint(redis_client) == before


def test_a_valid_graph_is_accepted_and_runs(published, client):
    run_id = client.submit(request(invert_graph(), inputs={"width": 4}, gpu="A100"))
    assert client.wait(run_id, 60).status.value == "success"


# ------------------------------------------------------------------ no catalog published yet


@pytest.fixture
def empty_deployment(fresh_redis_url, tmp_path) -> Iterator[Any]:
    """Clients of a Redis database where no worker ever published a catalog."""
    from comfyq import Client
    from comfyq.settings import Settings

    url = fresh_redis_url
    store = redis.Redis.from_url(url, decode_responses=True)

    def make_client(unknown_catalog: str) -> Client:
        return Client(settings=Settings(redis_url=url, gpu_types=["A100", "T4"],
                                        default_gpu="T4", data_dir=tmp_path,
                                        unknown_catalog=unknown_catalog))

    yield make_client, store
    store.close()


def test_without_a_catalog_structural_accepts_a_graph_no_worker_could_check(empty_deployment):
    make_client, store = empty_deployment
    graph = invert_graph()
    graph["2"]["class_type"] = "NodeNobodyHas"
    client = make_client("structural")
    run_id = client.submit(request(graph))
    assert store.exists(keys.run(run_id)) and client.broker.waiting_run_ids("T4") == [run_id]


def test_without_a_catalog_refuse_refuses_and_keeps_nothing(empty_deployment):
    make_client, store = empty_deployment
    with pytest.raises(CatalogUnavailable) as raised:
        make_client("refuse").submit(request())
    assert raised.value.body["error"]["type"] == "catalog_unavailable"
    assert "GPU type T4" in raised.value.body["error"]["message"]
    assert store.keys("*") == []


def test_the_setting_accepts_only_its_two_values():
    from pydantic import ValidationError

    from comfyq.settings import Settings

    with pytest.raises(ValidationError, match="unknown_catalog"):
        Settings(unknown_catalog="ignore")


def test_an_unreachable_redis_fails_the_submit_clearly(tmp_path):
    from comfyq import Client, SubmitFailed
    from comfyq.settings import Settings

    settings = Settings(redis_url="redis://127.0.0.1:1/0", gpu_types=["T4"], default_gpu="T4",
                        data_dir=tmp_path)
    client = Client(settings=settings, redis_client=redis.Redis(port=1, decode_responses=True))
    with pytest.raises(SubmitFailed, match="could not read the node catalog of GPU type T4"):
        client.submit(request())
