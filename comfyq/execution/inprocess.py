"""The in-process backend: applies the request's inputs, checks the graph as ComfyUI checks it
at submit time (the catalog's checks and the classes' own ``VALIDATE_INPUTS``), then runs it in
this process."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from comfyq.catalog.input_specs import CompiledCatalog, compile_catalog
from comfyq.catalog.object_info import build_catalog
from comfyq.catalog.validation import PromptValidationError, check_prompt
from comfyq.execution.executor import execute_graph
from comfyq.execution.input_validation import class_checks
from comfyq.execution.node_cache import NodeResultCache
from comfyq.run_context import RunContext, running


class InProcessBackend:
    """Executes graphs with a registry of ComfyUI-convention node classes.

    :param node_classes: class_type -> node class (built-ins plus custom node packs).
    :param apply_inputs: ``(graph, inputs) -> graph`` putting a request's ``inputs`` into the
        graph's external input nodes; ComfyDeploy's rules by default.
    :param tensor_library: ``auto``, ``torch`` or ``numpy`` (:mod:`comfyq.execution.tensors`).
    """

    def __init__(self, node_classes: Mapping[str, type],
                 apply_inputs: Callable[[dict, dict], dict] | None = None,
                 cache: NodeResultCache | None = None, tensor_library: str = "auto") -> None:
        self.node_classes = node_classes
        self.cache = NodeResultCache() if cache is None else cache
        self.tensor_library = tensor_library
        if apply_inputs is None:
            from comfyq.inputs import apply_inputs
        self.apply_inputs = apply_inputs

    @functools.cached_property
    def catalog(self) -> CompiledCatalog:
        return compile_catalog(build_catalog(self.node_classes))

    def check(self, graph: Mapping[str, Any]) -> None:
        """Refuse ``graph`` as ComfyUI's submit would, with the classes' ``VALIDATE_INPUTS``.

        :raises PromptValidationError: with ComfyUI's 400 body; no node has run.
        """
        verdict = check_prompt(graph, self.catalog, class_checks(self.node_classes, graph))
        if verdict.error is not None:
            raise PromptValidationError(verdict.body)

    def execute(self, graph: dict[str, Any], inputs: Mapping[str, Any] | None,
                context: RunContext,
                on_node_started: Callable[[str, str, int, int], None]) -> dict[str, dict]:
        prepared = self.apply_inputs(graph, dict(inputs or {}))
        self.check(prepared)
        with running(context):
            return execute_graph(prepared, self.node_classes, context, on_node_started,
                                 cache=self.cache, tensor_library=self.tensor_library)
