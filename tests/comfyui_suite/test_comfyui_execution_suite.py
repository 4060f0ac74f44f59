"""ComfyUI 0.3.64's own execution tests, run against comfyq's in-process engine.

The tests are ComfyUI's (``tests/execution/test_execution.py`` and ``test_async_nodes.py``),
imported unchanged from a ComfyUI checkout named by ``COMFYQ_TEST_COMFYUI_CHECKOUT``, with the
checkout's testing node pack loaded as a comfyq custom node pack. Only their client is swapped:
:class:`ComfyqClient` answers the calls ComfyUI's ``ComfyClient`` makes, translating formats
and nothing else. Submitting runs comfyq's submit-time check and then its in-process backend
(the catalog check, ``VALIDATE_INPUTS``, then the executor), as a comfyq worker runs a graph; a
refusal becomes the HTTP 400 ComfyUI answers, a node's failure the ``execution_error`` message,
and the nodes comfyq records as executed and as cached become ComfyUI's ``executing`` and
``execution_cached`` messages.

comfyq's two deliberate differences replace the two tests they contradict, each asserting what
comfyq does instead (``TestExecution.test_full_cache``: output nodes always run again;
``TestExecution.test_missing_node_error``: a graph with one invalid output is refused whole). The
tests of endpoints comfyq does not have skip, saying why: ``/history`` listing offsets (7) and
partial execution targets (6).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import urllib.error
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CHECKOUT_VARIABLE = "COMFYQ_TEST_COMFYUI_CHECKOUT"
_checkout = os.environ.get(CHECKOUT_VARIABLE)
if not _checkout:
    pytest.skip(f"{CHECKOUT_VARIABLE} names no ComfyUI checkout (ComfyUI 0.3.64, commit "
                "637221995f7424a561bd825de3e61ea117dfe1e3), so ComfyUI's execution tests are not "
                "there to run", allow_module_level=True)
CHECKOUT = Path(_checkout).resolve()
SUITE_DIR = CHECKOUT / "tests" / "execution"
if not (SUITE_DIR / "test_execution.py").is_file():
    pytest.skip(f"{CHECKOUT_VARIABLE}={CHECKOUT} has no tests/execution/test_execution.py",
                allow_module_level=True)
pytest.importorskip("torch", reason="ComfyUI's execution tests and their node pack need torch "
                                    "(pip install -e '.[torch]')")
pytest.importorskip("websocket", reason="ComfyUI's test module imports websocket-client")

from comfyq.catalog.object_info import build_catalog
from comfyq.catalog.validation import PromptValidationError, validate_prompt
from comfyq.execution.executor import GraphError, NodeExecutionError
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.registry import NodeRegistry, load_packs
from comfyq.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyq.run_context import RunContext


def _load_suite_module(alias: str, path: Path) -> ModuleType:
    """Import one of ComfyUI's test modules from the checkout, under ``alias`` (comfyq has a
    ``tests`` package of its own, so ComfyUI's cannot be imported by its name)."""
    spec = importlib.util.spec_from_file_location(alias, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def _import_comfyui() -> None:
    """Put the checkout on the path, as its node pack imports ComfyUI's modules
    (``comfy_execution``, ``comfy.utils``), on the CPU as ComfyUI's tests start it."""
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    from comfy.cli_args import args

    args.cpu = True


_import_comfyui()
comfyui_execution = _load_suite_module("comfyui_tests_execution", SUITE_DIR / "test_execution.py")
# test_async_nodes imports its client from ``tests.execution.test_execution``.
sys.modules.setdefault("tests.execution", ModuleType("tests.execution"))
sys.modules["tests.execution.test_execution"] = comfyui_execution
comfyui_async = _load_suite_module("comfyui_tests_async_nodes", SUITE_DIR / "test_async_nodes.py")


def _testing_pack_registry() -> NodeRegistry:
    """comfyq's built-in nodes plus ComfyUI's testing pack, loaded as a custom node pack."""
    registry = NodeRegistry(dict(NODE_CLASS_MAPPINGS), dict(NODE_DISPLAY_NAME_MAPPINGS))
    load_packs([SUITE_DIR / "testing_nodes"], registry)
    assert not registry.failed_packs, registry.failed_packs
    return registry


class ComfyqClient:
    """What ComfyUI's ``ComfyClient`` does, done by comfyq's submit check and in-process backend.

    One instance is one worker: its node cache lives across the runs of a test class.
    """

    def __init__(self, registry: NodeRegistry, root: Path) -> None:
        self.classes = registry.classes
        self.catalog = build_catalog(registry.classes, registry.display_names)
        self.backend = InProcessBackend(registry.classes, apply_inputs=lambda graph, _: graph)
        self.root = root
        self.test_name = ""

    def set_test_name(self, name: str) -> None:
        self.test_name = name

    def run(self, graph: Any, partial_execution_targets: list[str] | None = None) -> Any:
        if partial_execution_targets is not None:
            pytest.skip("comfyq runs every output of a graph: it has no partial execution "
                        "targets (ComfyUI's partial_execution_targets)")
        prompt = graph.finalize()
        for node in graph.nodes.values():
            if node.class_type == "SaveImage":
                node.inputs["filename_prefix"] = self.test_name
        prompt = graph.finalize()
        prompt_id = str(uuid.uuid4())
        self._submit_check(prompt)
        record = self._execute(prompt, prompt_id)
        result = comfyui_execution.RunResult(prompt_id)
        result.runs = dict.fromkeys(record["executed_nodes"], True)
        result.cached = dict.fromkeys(record["cached_nodes"], True)
        for node_id, ui in record["outputs"].items():
            result.outputs[node_id] = dict(ui, image_objects=[
                self._image(item) for item in ui.get("images", [])])
        return result

    def _submit_check(self, prompt: dict) -> None:
        try:
            validate_prompt(prompt, self.catalog)
        except PromptValidationError as refused:
            raise _http_400(refused.body) from refused

    def _execute(self, prompt: dict, prompt_id: str) -> dict[str, Any]:
        context = RunContext(run_id=prompt_id, output_dir=self.root / "output" / prompt_id,
                             temp_dir=self.root / "temp" / prompt_id)
        executed: list[str] = []
        try:
            outputs = self.backend.execute(
                prompt, None, context, lambda node_id, *_: executed.append(node_id))
        except PromptValidationError as refused:  # VALIDATE_INPUTS, before any node runs
            raise _http_400(refused.body) from refused
        # ComfyUI's client raises a bare Exception carrying the execution_error message.
        except NodeExecutionError as failed:
            raise Exception(dict(failed.as_dict(), prompt_id=prompt_id)) from failed  # noqa: TRY002
        except GraphError as failed:
            raise Exception({"prompt_id": prompt_id, "node_id": None,  # noqa: TRY002
                             "exception_type": "GraphError",
                             "exception_message": str(failed)}) from failed
        return {"executed_nodes": executed, "cached_nodes": list(context.cached_nodes),
                "outputs": outputs}

    def _image(self, item: dict[str, str]) -> Any:
        from PIL import Image

        path = self.root / item.get("type", "output") / item["subfolder"] / item["filename"]
        with Image.open(path) as image:
            image.load()
            return image

    def get_history(self, prompt_id: str) -> dict:
        pytest.skip("comfyq has no /history endpoint; a run's outputs are in its record")

    def get_all_history(self, max_items: int | None = None, offset: int | None = None) -> dict:
        pytest.skip("comfyq has no /history listing with offsets; runs are listed by "
                    "deployment (GET /runs), not as ComfyUI's prompt history")


def _http_400(body: dict) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("comfyq:submit", 400, "Bad Request", None,
                                  io.BytesIO(json.dumps(body, default=str).encode()))


# --- the fixtures ComfyUI's conftest gives, and its server and client swapped for comfyq --------

@pytest.fixture(scope="session")
def args_pytest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {"output_dir": str(tmp_path_factory.mktemp("comfyui-suite")), "listen": "127.0.0.1",
            "port": 0}


@pytest.fixture(scope="session")
def skip_timing_checks() -> bool:
    return os.environ.get("COMFYQ_TEST_SKIP_TIMING_CHECKS", "") not in ("", "0")


class _OnComfyq:
    @pytest.fixture(scope="class", autouse=True)
    def _server(self) -> None:
        """No server: the client executes in this process."""

    @pytest.fixture(scope="class", autouse=True)
    def shared_client(self, _server: None, tmp_path_factory: pytest.TempPathFactory
                      ) -> ComfyqClient:
        return ComfyqClient(_testing_pack_registry(), tmp_path_factory.mktemp("comfyq-worker"))


class TestExecution(_OnComfyq, comfyui_execution.TestExecution):
    """ComfyUI's ``TestExecution``, on comfyq, with comfyq's two deliberate differences."""

    def test_full_cache(self, client: ComfyqClient, builder: Any) -> None:
        """ComfyUI's test with comfyq's answer for output nodes: they always run again, so each
        run writes its own files; every other node comes from the cache."""
        g = builder
        input1 = g.node("StubImage", content="BLACK", height=512, width=512, batch_size=1)
        input2 = g.node("StubImage", content="NOISE", height=512, width=512, batch_size=1)
        mask = g.node("StubMask", value=0.5, height=512, width=512, batch_size=1)
        lazy_mix = g.node("TestLazyMixImages", image1=input1.out(0), image2=input2.out(0),
                          mask=mask.out(0))
        save = g.node("SaveImage", images=lazy_mix.out(0))

        first = client.run(g)
        second = client.run(g)
        for node in (input1, input2, mask, lazy_mix):
            assert not second.did_run(node), f"node {node.id} ran, but should have been cached"
            assert second.was_cached(node)
        assert second.did_run(save), "an output node runs again in each run (comfyq)"
        assert first.get_output(save)["images"] != second.get_output(save)["images"]

    def test_missing_node_error(self, client: ComfyqClient, builder: Any) -> None:
        """ComfyUI runs the valid outputs of a graph and drops an invalid one; comfyq refuses
        the whole graph (a run does all its outputs or none), then runs the repaired one."""
        g = builder
        input1 = g.node("StubImage", content="BLACK", height=512, width=512, batch_size=1)
        g.node("StubImage", id="removeme", content="WHITE", height=512, width=512, batch_size=1)
        input2 = g.lookup_node("removeme")
        input3 = g.node("StubImage", content="WHITE", height=512, width=512, batch_size=1)
        mask = g.node("StubMask", value=0.5, height=512, width=512, batch_size=1)
        mix1 = g.node("TestLazyMixImages", image1=input1.out(0), image2=input2.out(0),
                      mask=mask.out(0))
        mix2 = g.node("TestLazyMixImages", image1=input1.out(0), image2=input3.out(0),
                      mask=mask.out(0))
        g.node("SaveImage", images=mix1.out(0))
        valid_output = g.node("SaveImage", images=mix2.out(0))
        g.remove_node("removeme")

        with pytest.raises(urllib.error.HTTPError) as refused:
            client.run(g)
        assert refused.value.code == 400
        body = json.loads(refused.value.read())
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert mix1.id in body["node_errors"]

        g.node("StubImage", id="removeme", content="WHITE", height=512, width=512, batch_size=1)
        repaired = client.run(g)
        assert len(repaired.get_images(valid_output)) == 1


class TestAsyncNodes(_OnComfyq, comfyui_async.TestAsyncNodes):
    """ComfyUI's ``TestAsyncNodes``, on comfyq."""
