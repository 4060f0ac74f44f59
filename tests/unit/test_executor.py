"""The in-process executor runs graphs as ComfyUI does: outputs and ancestors only, lazy inputs,
list mapping, a bounded cross-run cache that never shares output files, cancellation.

The node classes here are small and count their calls, so each test sees exactly what ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyq.execution.executor import GraphError, NodeExecutionError, execute_graph
from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.node_cache import NodeResultCache, approximate_size
from comfyq.run_context import ProgressBar, RunCancelled, RunContext, current_context, running

CALLS: Counter[str] = Counter()


def called(name: str) -> None:
    CALLS[name] += 1


class Number:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        called(f"Number:{value}")
        return (value,)


class Add:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a: int, b: int) -> tuple[int]:
        called("Add")
        return (a + b,)


class Record:
    """An output node that shows its value in its ui."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: Any) -> dict:
        called("Record")
        return {"ui": {"values": [value]}, "result": ()}


class SaveNumber:
    """An output node that writes its value into the run's own output folder."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: int) -> dict:
        called("SaveNumber")
        context = current_context()
        path = context.output_dir / f"value_{value}.txt"
        path.write_text(str(value))
        return {"ui": {"files": [{"filename": path.name, "subfolder": context.subfolder}]}}


class Boom:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"optional": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int = 0) -> tuple[int]:
        called("Boom")
        raise RuntimeError("this branch must not run")


class Switch:
    """ComfyUI's lazy switch: only the chosen input is evaluated."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"select": ("BOOLEAN", {}),
                             "on_true": ("*", {"lazy": True}),
                             "on_false": ("*", {"lazy": True})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "run"

    def check_lazy_status(self, select: bool, on_true: Any = None,
                          on_false: Any = None) -> list[str]:
        called("Switch.check")
        wanted = "on_true" if select else "on_false"
        return [wanted] if (on_true if select else on_false) is None else []

    def run(self, select: bool, on_true: Any = None, on_false: Any = None) -> tuple[Any]:
        called("Switch")
        return (on_true if select else on_false,)


class MakeList:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"start": ("INT", {}), "count": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, start: int, count: int) -> tuple[list[int]]:
        called("MakeList")
        return (list(range(start, start + count)),)


class SumList:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"values": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    def run(self, values: list[int]) -> tuple[int]:
        called("SumList")
        return (sum(values),)


class Volatile:
    """Says NaN from IS_CHANGED: ComfyUI's way to run every time."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    @classmethod
    def IS_CHANGED(cls, value: int) -> float:
        return float("nan")

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        called("Volatile")
        return (value,)


class Versioned:
    """IS_CHANGED answers a version that the test changes between runs."""

    version = "1"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    @classmethod
    def IS_CHANGED(cls, value: int) -> str:
        return cls.version

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        called("Versioned")
        return (value,)


class Inspect:
    """Shows exactly what keyword arguments it was called with."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("*", {})},
                "hidden": {"prompt": "PROMPT", "node": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, **arguments: Any) -> dict:
        return {"ui": {"arguments": [arguments]}}


class Steps:
    """Reports progress within itself."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        bar = ProgressBar(4)
        for _ in range(4):
            bar.update(1)
        return (value,)


CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    Number, Add, Record, SaveNumber, Boom, Switch, MakeList, SumList, Volatile, Versioned,
    Inspect, Steps)}


@pytest.fixture(autouse=True)
def fresh_calls() -> Iterator[None]:
    CALLS.clear()
    Versioned.version = "1"
    yield


def make_context(tmp_path: Path, run_id: str = "run-1", **fields: Any) -> RunContext:
    return RunContext(run_id=run_id, output_dir=tmp_path / "out" / run_id,
                      temp_dir=tmp_path / "temp" / run_id, **fields)


def run_graph(graph: dict, tmp_path: Path, run_id: str = "run-1",
              cache: NodeResultCache | None = None, **context_fields: Any) -> dict:
    context = make_context(tmp_path, run_id, **context_fields)
    with running(context):
        return execute_graph(graph, CLASSES, context, cache=cache)


def node(class_type: str, **inputs: Any) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def recorded(outputs: dict, node_id: str) -> list:
    return outputs[node_id]["values"]


# ------------------------------------------------------------------ what runs


def test_only_output_nodes_and_their_ancestors_run(tmp_path: Path) -> None:
    graph = {
        "1": node("Number", value=2),
        "2": node("Number", value=3),
        "3": node("Add", a=["1", 0], b=["2", 0]),
        "4": node("Boom", value=["3", 0]),  # feeds no output: never runs
        "5": node("Record", value=["3", 0]),
    }
    outputs = run_graph(graph, tmp_path)
    assert outputs == {"5": {"values": [5]}}
    assert CALLS == Counter({"Number:2": 1, "Number:3": 1, "Add": 1, "Record": 1})


def test_graph_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="no output node"):
        run_graph({"1": node("Number", value=1)}, tmp_path)
    with pytest.raises(GraphError, match="Mystery"):
        run_graph({"1": node("Mystery"), "2": node("Record", value=1)}, tmp_path)
    with pytest.raises(GraphError, match="links to node '9'"):
        run_graph({"2": node("Record", value=["9", 0])}, tmp_path)
    cyclic = {"1": node("Add", a=["2", 0], b=1), "2": node("Add", a=["1", 0], b=1),
              "3": node("Record", value=["2", 0])}
    with pytest.raises(GraphError, match="cycle"):
        run_graph(cyclic, tmp_path)
    assert not CALLS


def test_a_failing_node_stops_the_run_with_its_id_class_and_traceback(tmp_path: Path) -> None:
    graph = {"1": node("Boom"), "2": node("Record", value=["1", 0])}
    with pytest.raises(NodeExecutionError) as raised:
        run_graph(graph, tmp_path)
    error = raised.value.as_dict()
    assert error["node_id"] == "1" and error["node_type"] == "Boom"
    assert error["exception_type"] == "RuntimeError"
    assert error["exception_message"] == "this branch must not run"
    assert "raise RuntimeError" in error["traceback"]
    assert "Record" not in CALLS


def test_a_link_to_an_output_the_source_lacks_is_a_clear_node_error(tmp_path: Path) -> None:
    graph = {"1": node("Number", value=1), "2": node("Record", value=["1", 3])}
    with pytest.raises(NodeExecutionError, match="reads output 3 of node 1 .Number.") as raised:
        run_graph(graph, tmp_path)
    assert raised.value.node_id == "2"


# ------------------------------------------------------------------ lazy inputs


def lazy_switch_graph(select: bool) -> dict:
    return {
        "1": node("Number", value=1),
        "2": node("Add", a=["1", 0], b=10),
        "3": node("Number", value=99),
        "4": node("Boom", value=["3", 0]),
        "5": node("Switch", select=select, on_true=["2", 0], on_false=["4", 0]),
        "6": node("Record", value=["5", 0]),
    }


def test_the_branch_a_lazy_switch_does_not_choose_never_runs(tmp_path: Path) -> None:
    outputs = run_graph(lazy_switch_graph(True), tmp_path)
    assert recorded(outputs, "6") == [11]
    assert CALLS["Boom"] == 0 and CALLS["Number:99"] == 0  # nor anything behind it
    assert CALLS["Switch.check"] == 2 and CALLS["Switch"] == 1  # asked, then ran


def test_the_chosen_lazy_branch_runs(tmp_path: Path) -> None:
    with pytest.raises(NodeExecutionError) as raised:
        run_graph(lazy_switch_graph(False), tmp_path)
    assert raised.value.node_id == "4"
    assert CALLS["Add"] == 0 and CALLS["Number:99"] == 1


def test_progress_totals_grow_when_a_lazy_input_is_asked_for(tmp_path: Path) -> None:
    started: list[tuple[str, int, int]] = []
    context = make_context(tmp_path)
    with running(context):
        execute_graph(lazy_switch_graph(True), CLASSES, context,
                      lambda node_id, _, index, total: started.append((node_id, index, total)))
    assert started == [("5", 0, 2), ("1", 0, 4), ("2", 1, 4), ("5", 2, 4), ("6", 3, 4)]


# ------------------------------------------------------------------ lists


def test_an_output_list_maps_the_next_node_over_its_items(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", start=1, count=3), "2": node("Add", a=["1", 0], b=10),
             "3": node("Record", value=["2", 0])}
    outputs = run_graph(graph, tmp_path)
    assert recorded(outputs, "3") == [11, 12, 13]
    assert CALLS["Add"] == 3 and CALLS["Record"] == 3


def test_shorter_lists_repeat_their_last_item(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", start=1, count=3), "2": node("MakeList", start=10, count=2),
             "3": node("Add", a=["1", 0], b=["2", 0]), "4": node("Record", value=["3", 0])}
    assert recorded(run_graph(graph, tmp_path), "4") == [11, 13, 14]


def test_input_is_list_takes_the_whole_list_in_one_call(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", start=1, count=4), "2": node("SumList", values=["1", 0]),
             "3": node("Record", value=["2", 0])}
    assert recorded(run_graph(graph, tmp_path), "3") == [10]
    assert CALLS["SumList"] == 1


def test_an_empty_list_maps_over_nothing(tmp_path: Path) -> None:
    graph = {"1": node("MakeList", start=1, count=0), "2": node("Add", a=["1", 0], b=1),
             "3": node("Record", value=["2", 0])}
    assert run_graph(graph, tmp_path) == {}
    assert CALLS["Add"] == 0 and CALLS["Record"] == 0


# ------------------------------------------------------------------ inputs as ComfyUI passes them


def test_nodes_get_declared_literals_links_unwrapped_values_and_hidden_inputs(
        tmp_path: Path) -> None:
    graph = {"7": node("Inspect", value={"__value__": [1, 2]}, undeclared="dropped")}
    [arguments] = run_graph(graph, tmp_path)["7"]["arguments"]
    assert arguments == {"value": [1, 2], "prompt": graph, "node": "7"}


# ------------------------------------------------------------------ the cache across runs


def seeded_graph(seed: int) -> dict:
    """A slow branch that ignores the seed and a branch that uses it, joined into an output."""
    return {
        "1": node("Number", value=5),
        "2": node("Add", a=["1", 0], b=100),      # does not depend on the seed
        "3": node("Number", value=seed),
        "4": node("Add", a=["2", 0], b=["3", 0]),
        "5": node("Record", value=["4", 0]),
    }


def test_a_new_seed_reruns_only_what_depends_on_it(tmp_path: Path) -> None:
    cache = NodeResultCache()
    assert recorded(run_graph(seeded_graph(1), tmp_path, "a", cache), "5") == [106]
    assert CALLS == Counter({"Number:5": 1, "Add": 2, "Number:1": 1, "Record": 1})
    CALLS.clear()
    assert recorded(run_graph(seeded_graph(2), tmp_path, "b", cache), "5") == [107]
    assert CALLS == Counter({"Number:2": 1, "Add": 1, "Record": 1})
    CALLS.clear()
    run_graph(seeded_graph(2), tmp_path, "c", cache)
    assert CALLS == Counter({"Record": 1})  # the output node always runs again


def test_without_a_cache_everything_runs_every_time(tmp_path: Path) -> None:
    run_graph(seeded_graph(1), tmp_path, "a")
    run_graph(seeded_graph(1), tmp_path, "b")
    assert CALLS["Add"] == 4


def test_each_run_writes_its_own_output_files(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("Number", value=4), "2": node("SaveNumber", value=["1", 0])}
    first = run_graph(graph, tmp_path, "first", cache)
    second = run_graph(graph, tmp_path, "second", cache)
    assert first["2"]["files"][0]["subfolder"] == "first"
    assert second["2"]["files"][0]["subfolder"] == "second"
    for run_id in ("first", "second"):
        assert (tmp_path / "out" / run_id / "value_4.txt").read_text() == "4"
    assert CALLS == Counter({"Number:4": 1, "SaveNumber": 2})


def test_is_changed_nan_is_never_cached_nor_is_anything_downstream(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("Volatile", value=3), "2": node("Add", a=["1", 0], b=1),
             "3": node("Record", value=["2", 0])}
    run_graph(graph, tmp_path, "a", cache)
    run_graph(graph, tmp_path, "b", cache)
    assert CALLS["Volatile"] == 2 and CALLS["Add"] == 2


def test_a_new_is_changed_answer_reruns_the_node(tmp_path: Path) -> None:
    cache = NodeResultCache()
    graph = {"1": node("Versioned", value=3), "2": node("Record", value=["1", 0])}
    run_graph(graph, tmp_path, "a", cache)
    run_graph(graph, tmp_path, "b", cache)
    Versioned.version = "2"
    run_graph(graph, tmp_path, "c", cache)
    assert CALLS["Versioned"] == 2


def test_the_in_process_backend_keeps_its_cache_between_runs(tmp_path: Path) -> None:
    backend = InProcessBackend(CLASSES, apply_inputs=lambda graph, inputs: graph)
    for run_id, seed in (("a", 1), ("b", 2)):
        backend.execute(seeded_graph(seed), None, make_context(tmp_path, run_id),
                        lambda *_: None)
    assert CALLS["Number:5"] == 1 and CALLS["Add"] == 3
    assert len(backend.cache) == 6  # every non-output node of both runs


def test_the_cache_evicts_the_least_recently_used_beyond_its_entry_bound() -> None:
    cache = NodeResultCache(max_entries=2)
    cache.put("a", [[1]])
    cache.put("b", [[2]])
    assert cache.get("a") == [[1]]  # now b is the least recently used
    cache.put("c", [[3]])
    assert "b" not in cache and cache.get("a") == [[1]] and cache.get("c") == [[3]]


def test_the_cache_is_bounded_by_the_size_of_arrays() -> None:
    image = np.zeros((1, 10, 10, 3), dtype=np.float32)  # 1200 bytes
    assert 1200 <= approximate_size([[image]]) < 1600
    cache = NodeResultCache(max_bytes=3000)
    cache.put("a", [[image]])
    cache.put("b", [[image.copy()]])
    cache.put("c", [[image.copy()]])
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.bytes_used <= 3000
    cache.put("huge", [[np.zeros(10_000, dtype=np.float32)]])
    assert "huge" not in cache and len(cache) == 2


# ------------------------------------------------------------------ cancellation and progress


def test_cancellation_is_checked_between_nodes(tmp_path: Path) -> None:
    cancelled = {"now": False}

    def check() -> None:
        if cancelled["now"]:
            raise RunCancelled("run-1")

    class CancelAfter(Number):
        def run(self, value: int) -> tuple[int]:
            cancelled["now"] = True
            return (value,)

    graph = {"1": node("CancelAfter", value=1), "2": node("Add", a=["1", 0], b=1),
             "3": node("Record", value=["2", 0])}
    context = make_context(tmp_path, check_cancelled=check)
    with running(context), pytest.raises(RunCancelled):
        execute_graph(graph, {**CLASSES, "CancelAfter": CancelAfter}, context)
    assert CALLS["Add"] == 0


def test_progress_within_a_node_is_reported_with_its_node(tmp_path: Path) -> None:
    reports: list[tuple[float, float, str | None]] = []
    graph = {"1": node("Steps", value=1), "2": node("Record", value=["1", 0])}
    run_graph(graph, tmp_path,
              report_progress=lambda value, maximum, node_id: reports.append(
                  (value, maximum, node_id)))
    assert reports == [(1, 4, "1"), (2, 4, "1"), (3, 4, "1"), (4, 4, "1")]
