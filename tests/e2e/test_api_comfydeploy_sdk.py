"""ComfyDeploy's own Python SDK (``comfydeploy`` 0.6.x on PyPI), pointed at comfyq, works unchanged.

Only the server URL differs from a ComfyDeploy deployment: the SDK builds its URLs as
``server_url + "/run/..."``, and its default servers end in ``/api``, which is comfyq's default
path prefix. Nothing here speaks HTTP itself; every call is the SDK's.

One quirk of the SDK itself (0.5.0 to 0.6.3): its generated ``WorkflowAPIJSON`` model is an
empty object, so a request given as a dict reaches the server with ``"workflow_api_json": {}``.
A graph travels when the request is a model built with ``WorkflowRunRequest.model_construct``
(pydantic then serializes the dict as it is, with a warning); and a plain dict request with an
empty graph runs the graph deployed under its ``workflow_id`` (``comfyq workflows deploy``), as
ComfyDeploy's own server does. All three ways are shown here.
"""

from __future__ import annotations

import pytest

from comfyq import RunStatus
from tests.e2e.sdk_streams import stream_updates
from tests.e2e.test_api import TOKENS, api  # noqa: F401 (the module's API server fixture)
from tests.helpers import invert_graph, request
from tests.ops_helpers import GatedImageServer, held_graph

comfydeploy = pytest.importorskip("comfydeploy", reason="pip install 'comfydeploy>=0.6,<0.7'")
from comfydeploy.models import components
from comfydeploy.models import errors as sdk_errors

# model_construct leaves workflow_api_json a dict where the SDK's model expects its empty object.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")


def sdk_request(graph=None, **fields) -> components.WorkflowRunRequest:
    """A request the SDK sends with its graph (see the module docstring)."""
    return components.WorkflowRunRequest.model_construct(**request(graph, **fields))


@pytest.fixture
def sdk(api):  # noqa: F811 (the fixture imported above)
    with comfydeploy.ComfyDeploy(bearer=TOKENS[1], server_url=f"{api.root}/api") as client:
        yield client


def test_workflow_queue_then_get(sdk, client):
    queued = sdk.run.workflow.queue(request=sdk_request(
        invert_graph(), inputs={"width": 9, "prefix": "sdk"}, gpu="A100"))
    run_id = queued.create_run_response.run_id
    assert client.wait(run_id, 60).status == RunStatus.SUCCESS

    run = sdk.run.get(run_id=run_id).workflow_run_model
    assert run.id == run_id and run.status == "success" and run.progress == 1.0
    assert run.workflow_id == "test-workflow" and run.gpu == "A100"
    assert run.workflow_inputs == {"width": 9, "prefix": "sdk"}
    assert run.machine_id is None and run.webhook is None
    [output] = run.outputs
    [image] = output.data["images"]
    assert image.filename == "sdk_00001_.png" and image.url.startswith("file://")
    assert output.node_id == "3"


def test_cancel_through_the_sdk(sdk, client):
    with GatedImageServer() as gate:
        busy = sdk.run.workflow.queue(request=sdk_request(
            held_graph(), gpu="T4", inputs={"picture": gate.url()})).create_run_response.run_id
        assert gate.requested.wait(30)
        queued = sdk.run.workflow.queue(request=sdk_request(gpu="T4")).create_run_response.run_id
        answer = sdk.run.cancel_run_run_run_id_cancel_post(
            run_id=queued, cancel_function_body={"function_id": "unused-by-comfyq"})
        gate.open()
        assert client.wait(busy, 60).status == RunStatus.SUCCESS
    assert answer.any["cancelled"] is True
    assert sdk.run.get(run_id=queued).workflow_run_model.status == "cancelled"


def test_stream_through_the_sdk_ends_with_the_final_status(sdk):
    answer = sdk.run.workflow.stream(request=sdk_request(inputs={"prefix": "sdkstream"}))
    updates = stream_updates(answer)
    assert updates[0].event == "run_created"
    assert updates[-1].event == "status" and updates[-1].data["status"] == "success"
    outputs = updates[-1].data["outputs"]
    assert outputs[0]["data"]["images"][0]["filename"] == "sdkstream_00001_.png"


def test_a_dict_request_loses_its_graph_in_the_sdk_and_is_refused_clearly(sdk):
    with pytest.raises(sdk_errors.HTTPValidationError) as invalid:
        sdk.run.workflow.queue(request=request(invert_graph()))
    [problem] = invalid.value.data.detail
    assert problem.loc == ["body", "workflow_api_json"]
    assert "at least one node" in problem.msg


def test_a_plain_dict_request_runs_the_workflow_deployed_under_its_id(sdk, client):
    # How ComfyDeploy's users call it: the workflow is deployed, requests name it by id.
    client.deploy_workflow("sdk-deployed", invert_graph(prefix="deployed"))
    queued = sdk.run.workflow.queue(request={"workflow_id": "sdk-deployed",
                                             "workflow_api_json": {}, "gpu": "A100",
                                             "inputs": {"width": 5}})
    run_id = queued.create_run_response.run_id
    run = client.wait(run_id, 60)
    assert run.status == RunStatus.SUCCESS
    assert run.outputs[0].data["images"][0]["filename"] == "deployed_00001_.png"


def test_sdk_errors_carry_comfyqs_answers(sdk):
    with pytest.raises(sdk_errors.HTTPValidationError) as invalid:
        sdk.run.workflow.queue(request=sdk_request(gpu="H100"))
    [problem] = invalid.value.data.detail
    assert problem.loc == ["body", "gpu"] and "not served" in problem.msg
    with pytest.raises(sdk_errors.SDKError) as missing:
        sdk.run.get(run_id="no-such-run")
    assert missing.value.status_code == 404


def test_wrong_token_is_refused(api):  # noqa: F811
    stranger = comfydeploy.ComfyDeploy(bearer="not-a-token", server_url=f"{api.root}/api")
    with stranger, pytest.raises(sdk_errors.SDKError) as refused:
        stranger.run.get(run_id="anything")
    assert refused.value.status_code == 401
