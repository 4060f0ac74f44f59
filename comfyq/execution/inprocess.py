"""The in-process backend: applies the request's inputs, then runs the graph in this process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from comfyq.execution.executor import execute_graph
from comfyq.execution.node_cache import NodeResultCache
from comfyq.run_context import RunContext, running


class InProcessBackend:
    """Executes graphs with a registry of ComfyUI-convention node classes.

    :param node_classes: class_type -> node class (built-ins plus custom node packs).
    :param apply_inputs: ``(graph, inputs) -> graph`` putting a request's ``inputs`` into the
        graph's external input nodes; ComfyDeploy's rules by default.
    """

    def __init__(self, node_classes: Mapping[str, type],
                 apply_inputs: Callable[[dict, dict], dict] | None = None,
                 cache: NodeResultCache | None = None) -> None:
        self.node_classes = node_classes
        self.cache = NodeResultCache() if cache is None else cache
        if apply_inputs is None:
            from comfyq.inputs import apply_inputs
        self.apply_inputs = apply_inputs

    def execute(self, graph: dict[str, Any], inputs: Mapping[str, Any] | None,
                context: RunContext,
                on_node_started: Callable[[str, str, int, int], None]) -> dict[str, dict]:
        prepared = self.apply_inputs(graph, dict(inputs or {}))
        with running(context):
            return execute_graph(prepared, self.node_classes, context, on_node_started,
                                 cache=self.cache)
