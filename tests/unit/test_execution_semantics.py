"""ComfyUI's execution semantics beyond plain graphs, in comfyq's in-process engine: node
expansion, ``VALIDATE_INPUTS``, ``ExecutionBlocker``, concurrent async nodes, and the record of
which nodes executed and which came from the cache.

The node classes here are small, written as custom node packs write them; none needs torch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyq.catalog.object_info import build_catalog
from comfyq.catalog.validation import PromptValidationError, check_prompt, validate_prompt
from comfyq.execution.blocking import ExecutionBlocker
from comfyq.execution.executor import NodeExecutionError, execute_graph
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.node_cache import NodeResultCache
from comfyq.run_context import RunContext, running

CALLS: Counter[str] = Counter()


class Number:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 100})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        CALLS[f"Number:{value}"] += 1
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a: int, b: int) -> tuple[int]:
        CALLS["Add"] += 1
        return (a + b,)


class Record:
    """An output node showing the values it received."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    def run(self, value: list) -> dict:
        return {"ui": {"values": [item for item in value]}}


class RecordEach(Record):
    """An output node called once per list item."""

    INPUT_IS_LIST = False

    def run(self, value: Any) -> dict:
        return {"ui": {"values": [value]}}


class MakeList:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"first": ("INT", {})}, "optional": {"second": ("INT", {}),
                                                                 "third": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, first: int, **others: int) -> tuple[list[int]]:
        return ([first, *others.values()],)


class SumTo:
    """Expands into a chain of Add nodes summing 1..count (a loop written as expansion)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"count": ("INT", {"default": 1, "min": 1, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, count: int, unique_id: str) -> dict:
        graph = {f"{unique_id}.n1": {"class_type": "Number", "inputs": {"value": 1}}}
        previous = f"{unique_id}.n1"
        for step in range(2, count + 1):
            graph[f"{unique_id}.n{step}"] = {"class_type": "Number", "inputs": {"value": step}}
            graph[f"{unique_id}.add{step}"] = {"class_type": "Add", "inputs": {
                "a": [previous, 0], "b": [f"{unique_id}.n{step}", 0]}}
            previous = f"{unique_id}.add{step}"
        return {"result": ([previous, 0],), "expand": graph}


class MixedExpansion:
    """Expands for some list items and answers directly for others (ComfyUI allows both)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT", "INT")
    FUNCTION = "run"

    def run(self, value: int, unique_id: str) -> Any:
        if value < 2:
            return (value * 10, -1)
        node_id = f"{unique_id}.{value}"
        return {"result": ([node_id, 0], -1),
                "expand": {node_id: {"class_type": "Number", "inputs": {"value": value * 10}}}}


class BrokenExpansion:
    """Expands into a node that fails, or into a duplicate id, or into a cycle."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"how": ("STRING", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, how: str) -> dict:
        if how == "failing":
            graph = {"inner": {"class_type": "Fails", "inputs": {}}}
            return {"result": (["inner", 0],), "expand": graph}
        if how == "duplicate":
            return {"result": (["1", 0],),
                    "expand": {"1": {"class_type": "Number", "inputs": {"value": 1}}}}
        graph = {"x": {"class_type": "Add", "inputs": {"a": ["y", 0], "b": 1}},
                 "y": {"class_type": "Add", "inputs": {"a": ["x", 0], "b": 1}}}
        return {"result": (["y", 0],), "expand": graph}


class Fails:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self) -> tuple[int]:
        raise RuntimeError("inner node failed")


class Blocker:
    """Passes its value, or blocks it (silently, or with a message)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {}), "block": ("INT", {}),
                             "message": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int, block: int, message: str) -> tuple[Any]:
        if value == block:
            return (ExecutionBlocker(message or None),)
        return (value,)


class Double:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        CALLS["Double"] += 1
        return (value * 2,)


class Sleep:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {}), "seconds": ("FLOAT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value: int, seconds: float) -> tuple[int]:
        await asyncio.sleep(seconds)
        CALLS["Sleep"] += 1
        return (value,)


class AsyncFails:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value: int) -> tuple[int]:
        await asyncio.sleep(0.05)
        raise ValueError("async node failed")


class AtMost:
    """Validates its own ``value`` (beyond the declared max) and the type of ``other``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"min": 0, "max": 10}),
                             "limit": ("INT", {"default": 50})},
                "optional": {"other": ("FLOAT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types: dict, value: int, limit: int) -> bool | str:
        if value > limit:
            return f"{value} is over the limit of {limit}"
        if input_types.get("other") not in (None, "INT", "FLOAT"):
            return f"other cannot be a {input_types['other']}"
        return True

    def run(self, value: int, limit: int, other: Any = None) -> tuple[int]:
        return (value,)


class AsyncValidated:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    async def VALIDATE_INPUTS(cls, value: int) -> bool | str:
        await asyncio.sleep(0)
        return True if value % 2 == 0 else "odd values are refused"

    def run(self, value: int) -> tuple[int]:
        return (value,)


class Text:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"text": ("STRING", {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, text: str) -> tuple[str]:
        return (text,)


CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    Number, Add, Record, RecordEach, MakeList, SumTo, MixedExpansion, BrokenExpansion, Fails, Blocker, Double,
    Sleep, AsyncFails, AtMost, AsyncValidated, Text)}


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


def node(class_type: str, **inputs: Any) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def new_context(tmp_path: Path, run_id: str = "run") -> RunContext:
    return RunContext(run_id=run_id, output_dir=tmp_path / "out" / run_id,
                      temp_dir=tmp_path / "temp" / run_id)


def run(graph: dict, tmp_path: Path, cache: NodeResultCache | None = None,
        run_id: str = "run") -> tuple[dict, RunContext]:
    context = new_context(tmp_path, run_id)
    with running(context):
        outputs = execute_graph(graph, CLASSES, context, cache=cache, tensor_library="numpy")
    return outputs, context


# -------------------------------------------------------------------------------- expansion


def test_an_expansion_runs_in_place_of_its_node(tmp_path: Path) -> None:
    outputs, context = run({"1": node("SumTo", count=4), "2": node("Record", value=["1", 0])},
                           tmp_path)
    assert outputs["2"]["values"] == [1 + 2 + 3 + 4]
    assert CALLS["Add"] == 3
    assert context.executed_nodes[0] == "1"
    assert {"1.add2", "1.add3", "1.add4", "1.n4", "2"} <= set(context.executed_nodes)


def test_expanding_and_direct_answers_mix_over_list_items(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", first=1, second=2, third=3),
             "2": node("MixedExpansion", value=["1", 0]),
             "3": node("Record", value=["2", 0]), "4": node("Record", value=["2", 1])}
    outputs, _ = run(graph, tmp_path)
    assert outputs["3"]["values"] == [10, 20, 30]
    assert outputs["4"]["values"] == [-1, -1, -1]


def test_an_error_inside_an_expansion_is_reported_on_the_expanding_node(tmp_path: Path) -> None:
    graph = {"7": node("BrokenExpansion", how="failing"), "8": node("Record", value=["7", 0])}
    with pytest.raises(NodeExecutionError) as failed:
        run(graph, tmp_path)
    assert failed.value.node_id == "7"
    assert failed.value.class_type == "BrokenExpansion"
    assert "inner node failed" in failed.value.exception_message


def test_an_expansion_reusing_a_node_id_fails_on_the_expanding_node(tmp_path: Path) -> None:
    graph = {"1": node("Number", value=1), "2": node("BrokenExpansion", how="duplicate"),
             "3": node("Record", value=["2", 0])}
    with pytest.raises(NodeExecutionError) as failed:
        run(graph, tmp_path)
    assert failed.value.node_id == "2"
    assert "duplicate node 1" in failed.value.exception_message


def test_an_expansion_with_a_cycle_fails_on_the_expanding_node(tmp_path: Path) -> None:
    graph = {"5": node("BrokenExpansion", how="cycle"), "6": node("Record", value=["5", 0])}
    with pytest.raises(NodeExecutionError) as failed:
        run(graph, tmp_path)
    assert failed.value.node_id == "5"
    assert failed.value.exception_message == "Dependency cycle detected"


def test_an_expansion_is_cached_like_any_node(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("SumTo", count=3), "2": node("Record", value=["1", 0])}
    run(graph, tmp_path, cache, "first")
    CALLS.clear()
    outputs, context = run(graph, tmp_path, cache, "second")
    assert outputs["2"]["values"] == [6]
    assert CALLS["Add"] == 0
    assert context.cached_nodes == ["1"]
    assert context.executed_nodes == ["2"]


# --------------------------------------------------------------------------- ExecutionBlocker


def test_a_blocker_stops_only_the_list_items_it_reaches(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", first=1, second=2, third=3),
             "2": node("Blocker", value=["1", 0], block=2, message=""),
             "3": node("Double", value=["2", 0]), "4": node("RecordEach", value=["3", 0]),
             "5": node("Record", value=["3", 0])}
    outputs, context = run(graph, tmp_path)
    assert outputs["4"]["values"] == [2, 6]
    assert CALLS["Double"] == 2, "the blocked item never reached Double"
    assert "5" not in outputs, "a node taking whole lists is blocked by any blocked item"
    assert context.blocked_nodes == []


def test_a_blocker_with_a_message_is_reported_once_and_the_run_goes_on(tmp_path: Path) -> None:
    graph = {"1": node("Number", value=3),
             "2": node("Blocker", value=["1", 0], block=3, message="no threes"),
             "3": node("Double", value=["2", 0]), "4": node("Double", value=["3", 0]),
             "5": node("Record", value=["4", 0]), "6": node("Record", value=["1", 0])}
    outputs, context = run(graph, tmp_path)
    assert CALLS["Double"] == 0
    assert outputs["6"]["values"] == [3]
    assert context.blocked_nodes == [{
        "node_id": "3", "node_type": "Double", "exception_type": "ExecutionBlocked",
        "exception_message": "Execution Blocked: no threes"}]


def test_comfyuis_own_blocker_class_is_recognised_by_its_shape(tmp_path: Path) -> None:
    class ExecutionBlocker:  # what `from comfy_execution.graph import ExecutionBlocker` gives
        def __init__(self, message: str | None) -> None:
            self.message = message

    class ComfyUIBlocker:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self) -> Any:
            return ExecutionBlocker(None)

    context = new_context(tmp_path)
    classes = {**CLASSES, "ComfyUIBlocker": ComfyUIBlocker}
    with running(context):
        execute_graph({"1": node("ComfyUIBlocker"), "2": node("Double", value=["1", 0]),
                       "3": node("Record", value=["2", 0])}, classes, context)
    assert CALLS["Double"] == 0


# ----------------------------------------------------------------------------- async nodes


def test_independent_async_nodes_run_concurrently(tmp_path: Path) -> None:
    graph = {"1": node("Number", value=1)}
    for index, seconds in enumerate((0.3, 0.4, 0.5), start=2):
        graph[str(index)] = node("Sleep", value=["1", 0], seconds=seconds)
        graph[f"r{index}"] = node("Record", value=[str(index), 0])
    started = time.monotonic()
    _, context = run(graph, tmp_path)
    elapsed = time.monotonic() - started
    assert CALLS["Sleep"] == 3
    assert elapsed < 0.9, f"three sleeps of 0.3-0.5 s took {elapsed:.2f} s: not concurrent"
    assert {"2", "3", "4"} <= set(context.executed_nodes)


def test_an_async_nodes_error_is_reported_on_it(tmp_path: Path) -> None:
    graph = {"1": node("Number", value=1), "2": node("AsyncFails", value=["1", 0]),
             "3": node("Sleep", value=["1", 0], seconds=2.0),
             "4": node("Record", value=["2", 0]), "5": node("Record", value=["3", 0])}
    started = time.monotonic()
    with pytest.raises(NodeExecutionError) as failed:
        run(graph, tmp_path)
    assert failed.value.node_id == "2"
    assert "async node failed" in failed.value.exception_message
    assert time.monotonic() - started < 1.5, "the run waited for the other async node"


def test_execute_graph_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def inside() -> dict:
        context = new_context(tmp_path)
        with running(context):
            return execute_graph({"1": node("Number", value=4), "2": node("Record", value=["1", 0])},
                                 CLASSES, context)

    assert asyncio.run(inside())["2"]["values"] == [4]


# ---------------------------------------------------------------- what ran, what was cached


def test_the_context_records_what_executed_and_what_came_from_the_cache(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("Number", value=1), "2": node("Number", value=2),
             "3": node("Add", a=["1", 0], b=["2", 0]), "4": node("Record", value=["3", 0])}
    _, first = run(graph, tmp_path, cache, "first")
    assert first.executed_nodes == ["1", "2", "3", "4"]
    assert first.cached_nodes == []
    graph["2"]["inputs"]["value"] = 5
    outputs, second = run(graph, tmp_path, cache, "second")
    assert outputs["4"]["values"] == [6]
    assert second.cached_nodes == ["1"]
    assert second.executed_nodes == ["2", "3", "4"]


def test_cached_nodes_are_reported_before_any_node_runs(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("Number", value=1), "2": node("Record", value=["1", 0])}
    run(graph, tmp_path, cache, "first")
    seen: list[tuple[str, Any]] = []
    context = new_context(tmp_path, "second")
    context.report_cached = lambda ids: seen.append(("cached", list(ids)))
    with running(context):
        execute_graph(graph, CLASSES, context, lambda node_id, *_: seen.append(("ran", node_id)),
                      cache=cache)
    assert seen == [("cached", ["1"]), ("ran", "2")]


# ------------------------------------------------------------------------- VALIDATE_INPUTS


def check(graph: dict) -> None:
    InProcessBackend(CLASSES, apply_inputs=lambda graph, _: graph).check(graph)


def test_validate_inputs_replaces_the_declared_limits_of_the_inputs_it_names() -> None:
    catalog = build_catalog(CLASSES)
    graph = {"1": node("AtMost", value=40, limit=50), "2": node("Record", value=["1", 0])}
    validate_prompt(graph, catalog)  # max 10 is not checked: VALIDATE_INPUTS names value
    check(graph)
    graph["1"]["inputs"]["value"] = 60
    with pytest.raises(PromptValidationError) as refused:
        check(graph)
    errors = refused.value.node_errors["1"]["errors"]
    assert {error["type"] for error in errors} == {"custom_validation_failed"}
    assert "value - 60 is over the limit of 50" in [error["details"] for error in errors]


def test_validate_inputs_gets_literals_converted_and_links_as_none() -> None:
    seen: list[dict] = []

    class Spy:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"number": ("FLOAT", {}), "linked": ("INT", {})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def VALIDATE_INPUTS(cls, **kwargs: Any) -> bool:
            seen.append(kwargs)
            return True

    classes = {**CLASSES, "Spy": Spy}
    InProcessBackend(classes).check({"1": node("Number", value=1),
                                     "2": node("Spy", number=5, linked=["1", 0])})
    assert seen == [{"number": 5.0, "linked": None}]
    assert type(seen[0]["number"]) is float


def test_input_types_lets_a_class_judge_its_links_types_itself() -> None:
    graph = {"1": node("Text", text="a"), "2": node("AtMost", value=1, limit=5, other=["1", 0]),
             "3": node("Record", value=["2", 0])}
    verdict = check_prompt(graph, build_catalog(CLASSES))
    assert verdict.error is None, "a class asking for input_types checks its links' types"
    with pytest.raises(PromptValidationError) as refused:
        check(graph)
    assert refused.value.node_errors["2"]["errors"][0]["details"].endswith(
        "other cannot be a STRING")


def test_an_async_validate_inputs_is_awaited() -> None:
    check({"1": node("AsyncValidated", value=2), "2": node("Record", value=["1", 0])})
    with pytest.raises(PromptValidationError, match="odd values are refused"):
        check({"1": node("AsyncValidated", value=3), "2": node("Record", value=["1", 0])})


def test_a_refused_graph_runs_no_node(tmp_path: Path) -> None:
    backend = InProcessBackend(CLASSES, apply_inputs=lambda graph, _: graph)
    graph = {"1": node("Number", value=1), "2": node("AsyncValidated", value=["1", 0]),
             "3": node("AtMost", value=99, limit=5), "4": node("Record", value=["3", 0])}
    with pytest.raises(PromptValidationError):
        backend.execute(graph, None, new_context(tmp_path), lambda *_: None)
    assert CALLS["Number:1"] == 0


def test_values_between_nodes_are_numpy_without_torch(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Look:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"image": ("IMAGE", {})}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        def run(self, image: Any) -> dict:
            seen.append(image)
            return {}

    from comfyq.nodes import NODE_CLASS_MAPPINGS

    classes = {**NODE_CLASS_MAPPINGS, "Look": Look}
    context = new_context(tmp_path)
    with running(context):
        execute_graph({"1": node("EmptyImage", width=4, height=2, batch_size=1, color=0),
                       "2": node("Look", image=["1", 0])}, classes, context,
                      tensor_library="numpy")
    assert isinstance(seen[0], np.ndarray) and seen[0].shape == (1, 2, 4, 3)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_values_between_nodes_are_torch_tensors_with_torch(tmp_path: Path) -> None:
    import torch

    seen: list[Any] = []

    class Look:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"image": ("IMAGE", {}), "mask": ("MASK", {})}}

        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "run"

        def run(self, image: Any, mask: Any) -> tuple:
            seen.extend([image, mask])
            return (image * (1 - mask[..., None]),)

    from comfyq.nodes import NODE_CLASS_MAPPINGS

    classes = {**NODE_CLASS_MAPPINGS, "Look": Look}
    graph = {"1": node("EmptyImage", width=4, height=2, batch_size=1, color=0xFF0000),
             "2": node("SolidMask", value=0.25, width=4, height=2),
             "3": node("Look", image=["1", 0], mask=["2", 0]),
             "4": node("ImageInvert", image=["3", 0]),
             "5": node("Look", image=["4", 0], mask=["2", 0]),
             "6": node("PreviewImage", images=["5", 0])}
    context = new_context(tmp_path)
    with running(context):
        execute_graph(graph, classes, context, tensor_library="torch")
    assert all(isinstance(value, torch.Tensor) and value.dtype == torch.float32
               and value.device.type == "cpu" for value in seen)
    assert seen[0].shape == (1, 2, 4, 3) and seen[1].shape == (1, 2, 4)
    assert isinstance(seen[2], torch.Tensor), "a built-in's output reaches the next node as torch"
    assert torch.allclose(seen[2][0, 0, 0], torch.tensor([0.25, 1.0, 1.0]))


def test_dynprompt_shows_the_growing_graph_to_nodes_that_ask(tmp_path: Path) -> None:
    seen: list[tuple] = []

    class Inspect:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT", {})},
                    "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID",
                               "prompt": "PROMPT"}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value: int, dynprompt: Any, unique_id: str, prompt: dict) -> tuple[int]:
            seen.append((unique_id, dynprompt.get_real_node_id(unique_id),
                         dynprompt.get_node(unique_id)["class_type"],
                         dynprompt.has_node("1"), sorted(prompt)))
            return (value,)

    class ExpandToInspect:
        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {"value": ("INT", {})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value: int) -> dict:
            return {"result": (["inner", 0],),
                    "expand": {"inner": node("Inspect", value=value)}}

    classes = {**CLASSES, "Inspect": Inspect, "ExpandToInspect": ExpandToInspect}
    context = new_context(tmp_path)
    with running(context):
        outputs = execute_graph({"1": node("Number", value=9),
                                 "2": node("ExpandToInspect", value=["1", 0]),
                                 "3": node("Record", value=["2", 0])}, classes, context)
    assert outputs["3"]["values"] == [9]
    assert seen == [("inner", "2", "Inspect", True, ["1", "2", "3"])]


def test_comfyuis_graph_builder_gets_comfyuis_id_prefix_per_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    prefixes: list[tuple] = []

    class GraphBuilder:  # what comfy_execution.graph_utils.GraphBuilder records
        @classmethod
        def set_default_prefix(cls, root: str, call_index: int, graph_index: int = 0) -> None:
            prefixes.append((root, call_index, graph_index))

    module = types.ModuleType("comfy_execution.graph_utils")
    module.GraphBuilder = GraphBuilder
    monkeypatch.setitem(__import__("sys").modules, "comfy_execution.graph_utils", module)
    outputs, _ = run({"1": node("MakeList", first=2, second=3),
                      "2": node("MixedExpansion", value=["1", 0]),
                      "3": node("Record", value=["2", 0])}, tmp_path)
    assert outputs["3"]["values"] == [20, 30]
    # As in ComfyUI, before every call of every node: (node id, call index, 0).
    assert [prefix for prefix in prefixes if prefix[0] == "2"] == [("2", 0, 0), ("2", 1, 0)]
    assert ("1", 0, 0) in prefixes
