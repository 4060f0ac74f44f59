"""Bad run requests are refused with every problem named, and leave nothing behind."""

from __future__ import annotations

import pytest

from comfyq import Client, InvalidRunRequest, UnknownGpuType, WorkflowRunRequest
from comfyq.redis import keys
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.helpers import comfyq_keys, invert_graph, request


@pytest.fixture
def redis_client(fresh_redis):
    """A database of its own: no worker consumes these queues, so tests can look into them."""
    return fresh_redis


@pytest.fixture
def client(fresh_redis_url, tmp_path):
    settings = Settings(redis_url=fresh_redis_url, gpu_types=["A100", "T4"], default_gpu="T4",
                        machines={"studio-1": "A100"}, data_dir=tmp_path)
    return Client(settings=settings, webhook_settings=WebhookSettings(
        webhook_allow_loopback=False, webhook_allow_private=False))


def problems_of(client: Client, body) -> dict[str, str]:
    with pytest.raises(InvalidRunRequest) as caught:
        client.submit(body)
    return {problem.path: problem.message for problem in caught.value.problems}


WRONG_TYPES = {
    "workflow_id": 42,
    "workflow_api_json": ["not", "a", "graph"],
    "inputs": "prompt=cat",
    "webhook": 17,
    "webhook_intermediate_status": "yes",
    "gpu": "RTX-9000",
    "workflow": "ui graph",
    "machine_id": 7,
}


@pytest.mark.parametrize("field", sorted(WRONG_TYPES))
def test_each_field_with_a_wrong_type_is_named(client, redis_client, field):
    body = request(**{field: WRONG_TYPES[field]})
    problems = problems_of(client, body)
    assert list(problems) == [field], problems
    assert comfyq_keys(redis_client) == []


def test_every_problem_is_listed_at_once(client, redis_client):
    body = {"workflow_id": 1, "workflow_api_json": {"1": {"inputs": {}}}, "gpu": "X",
            "surprise": True}
    problems = problems_of(client, body)
    assert set(problems) == {"workflow_id", "workflow_api_json.1.class_type", "gpu", "surprise"}
    assert "unknown field" in problems["surprise"]
    assert "'T4'" in problems["gpu"] and "RTX" not in problems["gpu"]
    assert comfyq_keys(redis_client) == []


def test_input_value_outside_the_union(client):
    problems = problems_of(client, request(inputs={"seed": {"nested": 1}}))
    assert problems == {"inputs.seed": "must be a string or integer or number or boolean or list "
                                        "(got {'nested': 1})"}


def test_missing_required_fields(client):
    problems = problems_of(client, {"inputs": {}})
    assert problems == {"workflow_id": "Field required", "workflow_api_json": "Field required"}


def test_dangling_link_names_node_and_input(client, redis_client):
    graph = invert_graph()
    graph["2"]["inputs"]["image"] = ["99", 0]
    problems = problems_of(client, request(graph))
    assert problems == {
        "workflow_api_json.2.inputs.image": "links to node '99', which is not in the graph"}
    assert comfyq_keys(redis_client) == []


def test_cycle_is_named(client, redis_client):
    graph = invert_graph()
    graph["1"]["inputs"]["width"] = ["2", 0]
    problems = problems_of(client, request(graph))
    assert problems == {"workflow_api_json": "the graph has a cycle: 1 -> 2 -> 1"}
    assert comfyq_keys(redis_client) == []


def test_empty_graph(client):
    assert problems_of(client, request({})) == {
        "workflow_api_json": "must contain at least one node (or deploy a graph under this "
                             "workflow_id: comfyq workflows deploy)"}


def test_empty_graph_runs_the_workflow_deployed_under_its_id(client, redis_client):
    client.deploy_workflow("invert-v1", invert_graph(prefix="deployed"))
    run_id = client.submit({"workflow_id": "invert-v1", "workflow_api_json": {}, "gpu": "A100"})
    assert client.get_run(run_id).workflow_api["3"]["class_type"] == "SaveImage"
    assert client.broker.waiting_run_ids("A100") == [run_id]


def test_a_broken_graph_cannot_be_deployed(client, redis_client):
    graph = invert_graph()
    graph["2"]["inputs"]["image"] = ["99", 0]
    with pytest.raises(InvalidRunRequest, match="links to node '99'"):
        client.deploy_workflow("broken", graph)
    assert redis_client.get(keys.workflow("broken")) is None


def test_a_model_gets_the_same_graph_checks(client):
    graph = invert_graph()
    graph["1"]["inputs"]["width"] = ["2", 0]
    problems = problems_of(client, WorkflowRunRequest(workflow_id="w", workflow_api_json=graph))
    assert problems == {"workflow_api_json": "the graph has a cycle: 1 -> 2 -> 1"}


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "http://",
                                 "javascript:alert(1)", "https://exa mple.com"])
def test_webhook_must_be_http(client, redis_client, url):
    problems = problems_of(client, request(webhook=url))
    assert problems == {"webhook": "must be an http(s) URL, e.g. https://example.com/hook"}
    assert comfyq_keys(redis_client) == []


def test_gpu_type_not_served_here_is_refused(client, redis_client):
    with pytest.raises(UnknownGpuType, match=r"gpu: GPU type 'H100' is not served"):
        client.submit(request(gpu="H100"))
    assert comfyq_keys(redis_client) == []


def test_unknown_machine_is_refused(client, redis_client):
    with pytest.raises(UnknownGpuType, match=r"machine_id: unknown machine 'nowhere'"):
        client.submit(request(machine_id="nowhere"))
    assert comfyq_keys(redis_client) == []


def test_json_text_and_model_are_accepted(client, redis_client):
    model = WorkflowRunRequest.model_validate(request())
    run_a = client.submit(model)
    run_b = client.submit(model.model_dump_json())
    assert client.get_run(run_a).status.value == "queued"
    assert client.get_run(run_b).workflow_api == model.workflow_api_json


def test_bad_json_text(client):
    problems = problems_of(client, '{"workflow_id": ')
    assert list(problems) == ["request"] and "Invalid JSON" in problems["request"]


@pytest.mark.parametrize(("fields", "gpu_type"), [
    ({"gpu": "A100"}, "A100"),
    ({"machine_id": "studio-1"}, "A100"),
    ({}, "T4"),
    ({"gpu": "T4", "machine_id": "studio-1"}, "T4"),
])
def test_run_goes_to_the_queue_of_its_gpu(client, fields, gpu_type):
    run_id = client.submit(request(**fields))
    assert client.broker.waiting_run_ids(gpu_type) == [run_id]
    other = ({"A100", "T4"} - {gpu_type}).pop()
    assert client.broker.queue_depth(other) == 0
    assert client.get_run(run_id).gpu == gpu_type


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:9000/hook"])
def test_webhook_to_a_private_address_is_refused_at_submit(client, redis_client, url):
    problems = problems_of(client, request(webhook=url))
    assert list(problems) == ["webhook"], problems
    assert comfyq_keys(redis_client) == []


@pytest.mark.parametrize("priority", [10, -1, "high", 1.5, True])
def test_a_priority_outside_0_to_9_is_refused_naming_the_field(client, priority):
    problems = problems_of(client, request(priority=priority))
    assert list(problems) == ["priority"], problems
    assert client.broker.queue_depth("T4") == 0


def test_a_waiting_run_of_a_higher_priority_is_taken_first(client):
    low = [client.submit(request()) for _ in range(2)]
    middle = client.submit(request(priority=5))
    high = client.submit(request(priority=9))
    # The order a worker would take them in: by priority, then in submission order.
    assert client.broker.waiting_run_ids("T4") == [high, middle, *low]
    assert client.store.get_fields(high, ("priority",))["priority"] == 9
    assert client.store.get_fields(low[0], ("priority",))["priority"] == 0
