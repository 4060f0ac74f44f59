"""A worker's run record says which nodes executed and which came from its cache, and a graph
the node classes' own ``VALIDATE_INPUTS`` refuses fails before any node runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from comfyq.execution.blocking import ExecutionBlocker
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.runner import RunRunner, WorkerIdentity
from comfyq.models import RunStatus
from comfyq.runs.hooks import RunHooks
from comfyq.runs.store import RunStore
from comfyq.settings import Settings


class Number:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"min": 0, "max": 10})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, value: int) -> bool | str:
        return True if value != 7 else "7 is not allowed"

    def run(self, value: int) -> tuple[int]:
        return (value,)


class Show:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: int) -> dict:
        return {"ui": {"text": [str(value)]}}


class Gate:
    """Blocks its value with a message when told to."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {}), "closed": ("BOOLEAN", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int, closed: bool) -> tuple:
        return (ExecutionBlocker("the gate is closed") if closed else value,)


GRAPH = {"1": {"class_type": "Number", "inputs": {"value": 3}},
         "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}


def execute(runner: RunRunner, store: RunStore, run_id: str, graph: dict) -> dict[str, Any]:
    store.create(run_id, RunStatus.QUEUED, {"workflow_api": graph, "workflow_inputs": {},
                                            "gpu": "T4", "attempts": 0})
    runner.run(run_id)
    return store.get(run_id)


def test_the_record_names_executed_and_cached_nodes(fresh_redis: redis.Redis,
                                                    tmp_path: Path) -> None:
    store = RunStore(fresh_redis)
    backend = InProcessBackend({"Number": Number, "Show": Show, "Gate": Gate},
                               apply_inputs=lambda g, _: g)
    runner = RunRunner(store, Settings(data_dir=tmp_path), backend, WorkerIdentity("w1"),
                       RunHooks())

    first = execute(runner, store, "run-1", GRAPH)
    assert first["status"] == "success"
    assert first["executed_nodes"] == ["1", "2"]
    assert first["cached_nodes"] == []

    second = execute(runner, store, "run-2", GRAPH)
    assert second["status"] == "success"
    assert second["cached_nodes"] == ["1"]
    assert second["executed_nodes"] == ["2"], "output nodes always run again"

    refused_graph = {**GRAPH, "1": {"class_type": "Number", "inputs": {"value": 7}}}
    refused = execute(runner, store, "run-3", refused_graph)
    assert refused["status"] == "failed"
    assert refused["executed_nodes"] == []
    assert refused["error"]["exception_type"] == "PromptValidationError"
    assert "7 is not allowed" in refused["error"]["exception_message"]
    assert refused["error"]["node_errors"]["1"]["errors"][0]["type"] == \
        "custom_validation_failed"

    gated_graph = {**GRAPH, "3": {"class_type": "Gate", "inputs": {"value": ["1", 0],
                                                                  "closed": True}},
                   "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    gated = execute(runner, store, "run-4", gated_graph)
    assert gated["status"] == "success"
    assert [output["node_id"] for output in gated["outputs"]] == ["2"]
    assert gated["blocked_nodes"] == [{
        "node_id": "4", "node_type": "Show", "exception_type": "ExecutionBlocked",
        "exception_message": "Execution Blocked: the gate is closed"}]
