"""Deployments: created, versioned, listed and run by id; every bad request named by field.

The registry and ``Client.submit_deployment`` against a database of each test's own, and the
``comfyq deployments`` command as a user runs it. The HTTP API and ComfyDeploy's SDK over it are
in ``tests/e2e/test_api_deployments.py``.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from comfyq import Client, InvalidRunRequest
from comfyq.errors import DeploymentNotFound
from comfyq.settings import Settings
from comfyq.webhooks.settings import WebhookSettings
from tests.helpers import comfyq_keys, invert_graph
from tests.ops_helpers import comfyq_command

MACHINES = {"studio-1": "A100"}


@pytest.fixture
def client(fresh_redis_url, tmp_path):
    settings = Settings(redis_url=fresh_redis_url, gpu_types=["A100", "T4"], default_gpu="T4",
                        machines=MACHINES, data_dir=tmp_path)
    return Client(settings=settings, webhook_settings=WebhookSettings(
        webhook_allow_loopback=False, webhook_allow_private=False))


@pytest.fixture
def deployments(client):
    return client.deployments


def problems_of(call, *args, **kwargs) -> dict[str, str]:
    with pytest.raises(InvalidRunRequest) as caught:
        call(*args, **kwargs)
    return {problem.path: problem.message for problem in caught.value.problems}


# --- deploying and versions ---------------------------------------------------------------------


def test_the_first_deployment_of_a_workflow_to_an_environment_is_version_1(deployments):
    deployed = deployments.deploy("invert", invert_graph(), environment="staging")
    assert deployed.version == 1 and deployed.environment == "staging"
    assert deployed.workflow_id == "invert" and deployed.machine_id == ""
    assert deployed.created_at == deployed.updated_at
    assert deployments.get(deployed.id) == deployed
    assert deployments.workflows.get("invert", deployed.workflow_version_id) == invert_graph()


def test_deploying_again_adds_a_version_under_the_same_id(deployments):
    first = deployments.deploy("invert", invert_graph(prefix="one"), environment="production")
    second = deployments.deploy("invert", invert_graph(prefix="two"), environment="production",
                                machine_id="studio-1")
    assert second.id == first.id and second.version == 2
    assert second.workflow_version_id != first.workflow_version_id
    assert second.machine_id == "studio-1" and second.created_at == first.created_at
    assert deployments.get(first.id) == second
    assert deployments.get(first.id, version=1) == first
    assert deployments.get(first.id, version=3) is None
    assert deployments.get(first.id, version=0) is None
    graph = deployments.resolve(first.id).graph
    assert graph["11"]["inputs"]["default_value"] == "two"


def test_the_same_graph_is_one_workflow_version(deployments):
    first = deployments.deploy("invert", invert_graph(), environment="staging")
    again = deployments.deploy("invert", invert_graph(), environment="staging")
    assert again.version == 2 and again.workflow_version_id == first.workflow_version_id


def test_each_environment_has_its_own_deployment_and_list_filters_by_it(deployments):
    staging = deployments.deploy("invert", invert_graph(), environment="staging")
    production = deployments.create({"workflow_id": "invert", "environment": "production",
                                     "workflow_version_id": staging.workflow_version_id,
                                     "machine_id": ""})
    other = deployments.deploy("other", invert_graph(prefix="other"), environment="staging")
    assert production.id != staging.id and production.version == 1
    assert production.workflow_version_id == staging.workflow_version_id
    assert [d.id for d in deployments.list()] == [staging.id, production.id, other.id]
    assert [d.id for d in deployments.list("staging")] == [staging.id, other.id]
    assert deployments.list("private-share") == []


def test_a_deployment_can_keep_the_id_its_clients_already_call(deployments):
    kept = "15e79589-12c9-453c-a41a-348fdd7de957"
    deployed = deployments.deploy("invert", invert_graph(), deployment_id=kept)
    assert deployed.id == kept
    assert deployments.deploy("invert", invert_graph(prefix="v2"), deployment_id=kept).version == 2
    assert problems_of(deployments.deploy, "invert", invert_graph(), deployment_id="other-id") == {
        "deployment_id": f"'invert' is deployed to production as '{kept}'; leave deployment_id "
                         "out to add a version to it"}
    assert problems_of(deployments.deploy, "another", invert_graph(), deployment_id=kept) == {
        "deployment_id": f"'{kept}' already deploys another workflow or environment"}
    # Neither refusal kept the graph it came with.
    assert deployments.workflows.latest("another") is None
    assert deployments.get(kept).version == 2


def test_deploy_without_a_graph_deploys_the_one_kept_last(client, deployments):
    client.deploy_workflow("invert", invert_graph(prefix="kept"))
    deployed = deployments.deploy("invert", environment="staging")
    assert deployments.resolve(deployed.id).graph == invert_graph(prefix="kept")
    assert problems_of(deployments.deploy, "never-kept") == {
        "workflow_id": "no graph is kept under workflow 'never-kept'; give one"}


# --- refused requests ---------------------------------------------------------------------------


def test_create_names_every_problem_and_changes_nothing(client, deployments, fresh_redis):
    deployments.deploy("invert", invert_graph(), environment="staging")
    before = {key: fresh_redis.dump(key) for key in comfyq_keys(fresh_redis)}
    assert problems_of(deployments.create, {
        "workflow_id": "invert", "workflow_version_id": "0000", "machine_id": "studio-9",
        "environment": "prod", "region": "eu"}) == {
        "workflow_version_id": "workflow 'invert' has no version '0000' (comfyq deployments "
                               "create invert GRAPH.json keeps one)",
        "machine_id": "unknown machine 'studio-9' (known machines: studio-1; set "
                      "COMFYQ_MACHINES)",
        "environment": "Input should be 'staging', 'production', 'public-share' or "
                       "'private-share' (got 'prod')",
        "region": "unknown field; DeploymentCreate has no such field"}
    assert problems_of(deployments.create, {}) == {
        "workflow_id": "Field required", "workflow_version_id": "Field required",
        "environment": "Field required"}
    assert {key: fresh_redis.dump(key) for key in comfyq_keys(fresh_redis)} == before


def test_deploy_names_graph_and_field_problems_together_and_keeps_nothing(client, deployments,
                                                                          fresh_redis):
    client.deploy_workflow("invert", invert_graph(prefix="kept"))
    before = {key: fresh_redis.dump(key) for key in comfyq_keys(fresh_redis)}
    broken = invert_graph()
    broken["2"]["inputs"]["image"] = ["99", 0]
    with pytest.raises(InvalidRunRequest) as caught:
        deployments.deploy("invert", broken, environment="qa", machine_id="studio-9")
    assert str(caught.value).startswith("invalid deployment (3 problems)")
    assert {problem.path for problem in caught.value.problems} == {
        "workflow_api_json.2.inputs.image", "environment", "machine_id"}
    assert {key: fresh_redis.dump(key) for key in comfyq_keys(fresh_redis)} == before


# --- running ------------------------------------------------------------------------------------


def test_a_deployment_run_runs_its_current_version_and_is_recorded_with_it(client, deployments,
                                                                           fresh_redis):
    deployments.deploy("invert", invert_graph(prefix="one"), environment="production")
    current = deployments.deploy("invert", invert_graph(prefix="two"), environment="production",
                                 machine_id="studio-1")
    run_id = client.submit_deployment({"deployment_id": current.id, "inputs": {"width": 4}})
    run = client.get_run(run_id)
    assert run.deployment_id == current.id and run.deployment_version == 2
    assert run.workflow_version_id == current.workflow_version_id
    assert run.workflow_id == "invert" and run.workflow_inputs == {"width": 4}
    assert run.workflow_api["11"]["inputs"]["default_value"] == "two"
    # The deployment's machine chose the GPU: studio-1 is an A100.
    assert run.machine_id == "studio-1" and run.gpu == "A100"
    assert client.broker.queue_depth("A100") == 1


def test_a_deployment_run_may_ask_for_its_own_gpu(client, deployments):
    deployed = deployments.deploy("invert", invert_graph(), machine_id="studio-1")
    run_id = client.submit_deployment({"deployment_id": deployed.id, "gpu": "T4"})
    assert client.get_run(run_id).gpu == "T4"


def test_a_deployment_run_may_carry_a_priority(client, deployments):
    deployed = deployments.deploy("invert", invert_graph(), machine_id="studio-1")
    plain = client.submit_deployment({"deployment_id": deployed.id})
    urgent = client.submit_deployment({"deployment_id": deployed.id, "priority": 9})
    assert client.broker.waiting_run_ids("A100") == [urgent, plain]


def test_a_bad_deployment_run_request_names_every_problem(client, fresh_redis):
    assert problems_of(client.submit_deployment, {
        "inputs": "width=4", "webhook": "ftp://example.com/hook", "gpu": "RTX-9000",
        "webhook_intermediate_status": "yes", "workflow_api_json": {}}) == {
        "deployment_id": "Field required",
        "inputs": "Input should be a valid dictionary (got 'width=4')",
        "webhook": "must be an http(s) URL, e.g. https://example.com/hook",
        "gpu": "Input should be 'T4', 'L4', 'A10G', 'L40S', 'A100', 'A100-80GB' or 'H100' "
               "(got 'RTX-9000')",
        "webhook_intermediate_status": "Input should be a valid boolean (got 'yes')",
        "workflow_api_json": "unknown field; DeploymentRunRequest has no such field"}
    assert comfyq_keys(fresh_redis) == []


def test_a_deployment_run_refuses_values_no_request_may_hold(client, fresh_redis):
    # Checked before the deployment is even looked up, as for workflow runs.
    assert problems_of(client.submit_deployment,
                       '{"deployment_id": "d", "inputs": {"seed": NaN}}') == {
        "inputs.seed": "nan is not a JSON number (NaN and Infinity are not JSON)"}
    assert comfyq_keys(fresh_redis) == []


def test_an_unknown_deployment_is_a_refused_request_naming_deployment_id(client, fresh_redis):
    with pytest.raises(DeploymentNotFound) as caught:
        client.submit_deployment('{"deployment_id": "no-such-deployment"}')
    assert isinstance(caught.value, InvalidRunRequest)
    [problem] = caught.value.problems
    assert problem.path == "deployment_id" and "'no-such-deployment'" in problem.message
    assert comfyq_keys(fresh_redis) == []


def test_a_deployment_runs_inputs_are_checked_against_its_graph(client, deployments):
    deployed = deployments.deploy("invert", invert_graph())
    with pytest.raises(ValueError, match=r"inputs\.width"):
        client.submit_deployment({"deployment_id": deployed.id, "inputs": {"width": "wide"}})


# --- what a deployment says of itself -----------------------------------------------------------


def test_input_types_describe_each_external_input(deployments):
    graph = {
        **invert_graph(),
        "20": {"class_type": "ComfyUIDeployExternalNumberSlider",
               "inputs": {"input_id": "strength", "default_value": 0.4, "min_value": 0,
                          "max_value": 1, "display_name": "Strength"}},
        "21": {"class_type": "ComfyUIDeployExternalEnum",
               "inputs": {"input_id": "style", "default_value": "flat",
                          "options": '["flat", "glossy"]'}},
        "22": {"class_type": "ComfyUIDeployExternalText",
               "inputs": {"input_id": "linked", "default_value": ["11", 0]}},
    }
    deployed = deployments.deploy("described", graph)
    described = {item.input_id: item for item in deployed.input_types}
    assert set(described) == {"width", "prefix", "strength", "style", "linked"}
    assert (described["width"].type, described["width"].default_value) == ("integer", 8)
    assert described["prefix"].type == "string"
    strength = described["strength"]
    assert (strength.type, strength.min_value, strength.max_value) == ("float", 0, 1)
    assert strength.display_name == "Strength"
    assert described["style"].enum_options == ["flat", "glossy"]
    assert described["linked"].default_value is None


def test_comfydeploys_sdk_parses_every_deployment(deployments):
    components = pytest.importorskip("comfydeploy.models.components")
    deployments.deploy("invert", invert_graph(), environment="staging", machine_id="studio-1")
    deployments.deploy("invert", invert_graph(prefix="p"), environment="production")
    for deployment in deployments.list():
        parsed = components.DeploymentModel.model_validate_json(deployment.model_dump_json())
        assert parsed.id == deployment.id and parsed.environment.value == deployment.environment
        assert parsed.workflow.name == "invert" and parsed.user_id == ""
        assert [item.input_id for item in parsed.input_types] == ["width", "prefix"]


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def env(fresh_redis_url, tmp_path) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("COMFYQ_")}
    return {**inherited, "COMFYQ_REDIS_URL": fresh_redis_url, "COMFYQ_GPU_TYPES": "A100,T4",
            "COMFYQ_DEFAULT_GPU": "T4", "COMFYQ_MACHINES": "studio-1=A100",
            "COMFYQ_DATA_DIR": str(tmp_path)}


def comfyq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*comfyq_command(), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_deployments_create_list_and_show(env, tmp_path):
    graph_file = tmp_path / "invert.json"
    graph_file.write_text(json.dumps(invert_graph()))
    created = comfyq(env, "deployments", "create", "invert", str(graph_file),
                     "--environment", "staging", "--machine-id", "studio-1", "--json")
    assert created.returncode == 0, created.stderr
    deployment = json.loads(created.stdout)
    assert deployment["environment"] == "staging" and deployment["version"] == 1

    again = comfyq(env, "deployments", "create", "invert", str(graph_file), "--environment",
                   "staging")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        f"deployed workflow invert to staging as {deployment['id']}, version 2 (workflow "
        f"version {deployment['workflow_version_id']})")

    listed = comfyq(env, "deployments", "list", "--environment", "staging", "--json")
    [current] = json.loads(listed.stdout)
    assert current["id"] == deployment["id"] and current["version"] == 2
    assert current["machine_id"] == ""
    assert comfyq(env, "deployments", "list", "--environment", "production").stdout == (
        "no deployments in production\n")

    shown = comfyq(env, "deployments", "show", deployment["id"], "--version", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{deployment['id']}  staging       invert  v1  ")
    assert "machine studio-1" in lines[0]
    assert lines[1:] == ["  input width: integer (ComfyUIDeployExternalNumberInt), default 8",
                         "  input prefix: string (ComfyUIDeployExternalText), default 'invert'"]


def test_workflows_deploy_keeps_the_graph_deployments_create_deploys(env, tmp_path):
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"workflow_id": "x", "workflow_api_json": invert_graph()}))
    kept = comfyq(env, "workflows", "deploy", "invert", str(request_file))
    assert kept.returncode == 0, kept.stderr
    created = comfyq(env, "deployments", "create", "invert", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["environment"] == "production"


def test_a_refused_deployment_is_one_line_per_command_and_exit_1(env, tmp_path):
    graph_file = tmp_path / "invert.json"
    graph_file.write_text(json.dumps(invert_graph()))
    refused = comfyq(env, "deployments", "create", "invert", str(graph_file), "--machine-id",
                     "studio-9")
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("comfyq: error: invalid deployment (1 problem): - machine_id: "
                           "unknown machine 'studio-9'")
    missing = comfyq(env, "deployments", "show", "no-such-deployment")
    assert missing.returncode == 1
    assert missing.stderr == ("comfyq: error: no deployment 'no-such-deployment' (comfyq "
                              "deployments list shows them)\n")
    unreadable = comfyq(env, "deployments", "create", "invert", str(tmp_path / "absent.json"))
    assert unreadable.returncode == 2 and "No such file or directory" in unreadable.stderr
