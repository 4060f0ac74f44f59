"""Deployment runs over HTTP with ComfyDeploy's own Python SDK (``comfydeploy`` 0.6.x): create
and list deployments, run them with ``run.deployment.queue``, ``sync`` and ``stream``.

As a production client of ComfyDeploy does: the deployment is made once (here by comfyq's
registry, as ``comfyq deployments create`` makes it, then promoted with the SDK), and every run
names only its ``deployment_id``. The server is ``comfyq api`` in its own process, against the
session's fleet; every call is the SDK's, except where a raw body is what is being tested.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from comfyq import RunStatus
from tests.e2e.sdk_streams import stream_updates
from tests.e2e.test_api import (  # noqa: F401 (api: the module's API server fixture)
    TOKENS,
    api,
    run_count,
)
from tests.helpers import invert_graph

comfydeploy = pytest.importorskip("comfydeploy", reason="pip install 'comfydeploy>=0.6,<0.7'")
from comfydeploy.models import errors as sdk_errors


@pytest.fixture
def sdk(api):  # noqa: F811 (the fixture imported above)
    with comfydeploy.ComfyDeploy(bearer=TOKENS[0], server_url=f"{api.root}/api") as client:
        yield client


@pytest.fixture
def workflow_id() -> str:
    """A workflow of the test's own: the session's deployments are shared by every test."""
    return f"deployed-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def staging(client, workflow_id):
    """The workflow deployed to staging, as ``comfyq deployments create`` deploys it."""
    return client.deployments.deploy(workflow_id, invert_graph(prefix="staged"),
                                      environment="staging")


def promote(sdk, deployment, environment: str = "production"):
    """Deploy ``deployment``'s workflow version to ``environment`` with the SDK."""
    return sdk.deployments.create(request={
        "workflow_id": deployment.workflow_id, "environment": environment,
        "workflow_version_id": deployment.workflow_version_id, "machine_id": ""}
    ).deployment_model


def test_a_deployment_created_with_the_sdk_runs_by_its_id(sdk, client, api, staging):  # noqa: F811
    production = promote(sdk, staging)
    assert production.id != staging.id and production.environment.value == "production"
    assert production.workflow_version_id == staging.workflow_version_id
    assert production.workflow.name == staging.workflow_id

    queued = sdk.run.deployment.queue(request={
        "deployment_id": production.id, "inputs": {"width": 6}, "gpu": "A100"})
    run_id = queued.create_run_response.run_id
    assert client.wait(run_id, 60).status == RunStatus.SUCCESS

    run = sdk.run.get(run_id=run_id).workflow_run_model
    assert run.status == "success" and run.gpu == "A100"
    assert run.workflow_id == staging.workflow_id and run.workflow_inputs == {"width": 6}
    assert run.workflow_version_id == staging.workflow_version_id
    assert run.outputs[0].data["images"][0].filename == "staged_00001_.png"
    record = api.call("GET", f"/run/{run_id}").json()
    assert record["deployment_id"] == production.id and record["deployment_version"] == 1


def test_deploying_again_is_a_new_version_that_runs_under_the_same_id(sdk, client, workflow_id):
    first = client.deployments.deploy(workflow_id, invert_graph(prefix="first"))
    second = client.deployments.deploy(workflow_id, invert_graph(prefix="second"))
    assert second.id == first.id and second.version == 2

    answer = sdk.run.deployment.sync(request={"deployment_id": first.id})
    [output] = answer.response_sync_deployment_run_run_deployment_sync_post
    assert output.data["images"][0].filename == "second_00001_.png"
    run = client.get_run(output.run_id)
    assert run.deployment_version == 2 and run.workflow_version_id == second.workflow_version_id


def test_the_sdk_lists_deployments_with_the_inputs_they_take(sdk, staging):
    production = promote(sdk, staging)
    listed = sdk.deployments.list().response_get_deployments_deployments_get
    ours = {d.id: d for d in listed if d.workflow_id == staging.workflow_id}
    assert set(ours) == {staging.id, production.id}
    assert {item.input_id: item.type for item in ours[staging.id].input_types} == {
        "width": "integer", "prefix": "string"}

    in_staging = sdk.deployments.list(environment="staging")
    staged = in_staging.response_get_deployments_deployments_get
    assert staging.id in [d.id for d in staged] and production.id not in [d.id for d in staged]
    assert {d.environment.value for d in staged} == {"staging"}


def test_a_deployment_streams_through_the_sdk_to_its_final_status(sdk, staging):
    answer = sdk.run.deployment.stream(request={"deployment_id": staging.id,
                                                "inputs": {"prefix": "deploystream"}})
    updates = stream_updates(answer)
    assert updates[0].event == "run_created"
    assert updates[-1].event == "status" and updates[-1].data["status"] == "success"
    outputs = updates[-1].data["outputs"]
    assert outputs[0]["data"]["images"][0]["filename"] == "deploystream_00001_.png"


@pytest.mark.parametrize("kind", ["queue", "sync", "stream"])
def test_an_unknown_deployment_is_404_naming_deployment_id(sdk, redis_client, kind):
    before = run_count(redis_client)
    run = getattr(sdk.run.deployment, kind)
    with pytest.raises(sdk_errors.SDKError) as missing:
        run(request={"deployment_id": "no-such-deployment"})
    assert missing.value.status_code == 404
    assert missing.value.body == ('{"detail":"deployment_id: no deployment with id '
                                  '\'no-such-deployment\' (comfyq deployments list shows them)"}')
    assert run_count(redis_client) == before


def test_a_bad_deployment_run_lists_every_problem_by_field(api, redis_client):  # noqa: F811
    before = run_count(redis_client)
    answer = api.call("POST", "/run/deployment/queue", json={
        "deployment_id": 42, "gpu": "RTX-9000", "webhook": "ftp://example.com/hook",
        "inputs": ["width"], "workflow_api_json": {}})
    assert answer.status_code == 422
    assert {tuple(p["loc"]) for p in answer.json()["detail"]} == {
        ("body", "deployment_id"), ("body", "gpu"), ("body", "webhook"), ("body", "inputs"),
        ("body", "workflow_api_json")}
    assert answer.json()["message"].startswith("invalid run request (5 problems)")
    assert run_count(redis_client) == before


def test_a_bad_deployment_create_lists_every_problem_through_the_sdk(sdk, staging):
    with pytest.raises(sdk_errors.HTTPValidationError) as invalid:
        sdk.deployments.create(request={
            "workflow_id": staging.workflow_id, "workflow_version_id": "0000",
            "machine_id": "studio-9", "environment": "prod"})
    problems = {tuple(p.loc): p.msg for p in invalid.value.data.detail}
    assert set(problems) == {("body", "workflow_version_id"), ("body", "machine_id"),
                             ("body", "environment")}
    assert "has no version '0000'" in problems[("body", "workflow_version_id")]
    assert "unknown machine 'studio-9'" in problems[("body", "machine_id")]


def test_deployment_runs_are_idempotent_by_key_like_workflow_runs(api, staging):  # noqa: F811
    headers = {"Idempotency-Key": f"deploy-{uuid.uuid4()}"}
    body = {"deployment_id": staging.id}
    first = api.call("POST", "/run/deployment/queue", json=body, headers=headers)
    again = api.call("POST", "/run/deployment/queue", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["run_id"] == again.json()["run_id"]


def test_openapi_describes_the_deployment_endpoints(api):  # noqa: F811
    document = requests.get(f"{api.root}/openapi.json", timeout=10).json()
    paths = document["paths"]
    assert {"/api/run/deployment/queue", "/api/run/deployment/sync", "/api/run/deployment/stream",
            "/api/deployments", "/api/deployment"} <= set(paths)
    queue = paths["/api/run/deployment/queue"]["post"]
    assert queue["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeploymentRunRequest"}
    assert "404" in queue["responses"]
    schemas = document["components"]["schemas"]
    assert set(schemas["DeploymentRunRequest"]["properties"]) == {
        "deployment_id", "inputs", "webhook", "webhook_intermediate_status", "gpu", "priority"}
    assert {"workflow_id", "workflow_version_id", "machine_id", "environment"} <= set(
        schemas["DeploymentCreate"]["properties"])
