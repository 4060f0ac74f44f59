"""Submit-time validation of an API-format graph against a node catalog, as ComfyUI does it.

:func:`check_prompt` follows ComfyUI 0.3.64's ``validate_prompt``: the same rules, error types,
messages, details and ``extra_info`` (the checks of one node's inputs are in
:mod:`comfyq.catalog.input_checks`), so a client that understands ComfyUI's answer understands
ours. Its verdict, :class:`PromptCheck`, says what ComfyUI would answer: HTTP 400 with ``error``
and ``node_errors`` when no output can run, else 200 with the bad outputs' ``node_errors`` while
the good outputs run. As in ComfyUI, the top-level ``details`` lists only the output nodes' own
problems (empty when every problem lies upstream of them), and a link to a node or output that
does not exist is reported as the exception its lookup raises (``exception_during_inner_validation``
on the node holding the link, with the input of the node that links to it, or
``exception_during_validation`` on an output holding it).

:func:`validate_prompt` is comfyq's submit check and is stricter: it refuses the graph when ANY
output is invalid (ComfyUI silently drops bad outputs when some are good). Beyond ComfyUI:

* a dependency cycle anywhere in the graph is found and named (``dependency_cycle``), where
  ComfyUI recurses until Python's recursion limit;
* every output's ancestors are checked, so problems behind a mismatched link are reported too,
  and ``dependent_outputs`` lists exactly the output nodes that depend on the node (ComfyUI also
  lists outputs checked after it that failed for other reasons);
* combos of the newer ``["COMBO", {"options": [...]}]`` form are checked like list combos.

What a catalog cannot tell is left to the worker: combos that take uploads (``image_upload``
and the like) or fetch their choices remotely accept any value, because ComfyUI checks those with
the class's own ``VALIDATE_INPUTS`` (the file must exist on the machine that runs the graph), and
``VALIDATE_INPUTS`` itself is not run here (a server with the classes passes it as
``node_checks``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from comfyq import graph as graph_structure
from comfyq.catalog.input_checks import LinkLookupFailed, input_error, input_errors
from comfyq.catalog.input_specs import ClassSpec, CompiledCatalog, InputSpec, compile_catalog
from comfyq.errors import ComfyqError

#: ``(node_id, node) -> errors``: a server's own per-node checks, run after the input checks.
NodeChecks = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]


class PromptValidationError(ComfyqError, ValueError):
    """The graph was refused; ``body`` is ComfyUI's HTTP 400 answer, ``str()`` a summary.

    ``body`` is ``{"error": {"type", "message", "details", "extra_info"}, "node_errors":
    {node_id: {"errors": [...], "dependent_outputs": [...], "class_type": ...}}}``.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        super().__init__(_summary(body))

    @property
    def error_type(self) -> str:
        """The top-level error type, such as ``prompt_outputs_failed_validation``."""
        return self.body["error"]["type"]

    @property
    def node_errors(self) -> dict[str, dict[str, Any]]:
        return self.body["node_errors"]


@dataclass(frozen=True, slots=True)
class PromptCheck:
    """The verdict on one prompt, as ComfyUI's ``validate_prompt`` returns it.

    :param error: the top-level error: the prompt is malformed (``invalid_prompt``), has no
        output node (``prompt_no_outputs``) or has an invalid output
        (``prompt_outputs_failed_validation``); None when every output can run.
    :param node_errors: the nodes with problems, ComfyUI's ``node_errors``.
    :param good_outputs: the output nodes that can run, in prompt order. ComfyUI refuses the
        prompt (HTTP 400) only when there is none, and runs just these otherwise.
    """

    error: dict[str, Any] | None
    node_errors: dict[str, dict[str, Any]]
    good_outputs: list[str]

    @property
    def body(self) -> dict[str, Any]:
        """ComfyUI's HTTP 400 body for this verdict (meaningful when :attr:`error` is set)."""
        return {"error": self.error, "node_errors": self.node_errors}


def check_prompt(prompt: Mapping[str, Any], catalog: Mapping[str, Any] | CompiledCatalog,
                 node_checks: NodeChecks | None = None) -> PromptCheck:
    """ComfyUI's verdict on ``prompt`` for ``catalog`` (an ``/object_info`` catalog or a
    :class:`CompiledCatalog`); ``node_checks`` adds a server's own checks of each node.

    The prompt is not modified (ComfyUI writes converted values back; the executor converts
    for itself).
    """
    return _PromptChecker(prompt, compile_catalog(catalog).classes, node_checks).run()


def validate_prompt(prompt: Mapping[str, Any],
                    catalog: Mapping[str, Any] | CompiledCatalog) -> None:
    """Refuse ``prompt`` with :class:`PromptValidationError` unless every output can run."""
    verdict = check_prompt(prompt, catalog)
    if verdict.error is not None:
        raise PromptValidationError(verdict.body)


def _prompt_error(error_type: str, message: str, details: str) -> dict[str, Any]:
    return {"type": error_type, "message": message, "details": details, "extra_info": {}}


class _PromptChecker:
    """The state of checking one prompt."""

    def __init__(self, prompt: Mapping[str, Any], classes: Mapping[str, ClassSpec],
                 node_checks: NodeChecks | None) -> None:
        self.prompt = prompt
        self.classes = classes
        self.node_checks = node_checks
        self.node_classes: dict[str, ClassSpec] = {}

    def run(self) -> PromptCheck:
        malformed = self._index_nodes()
        if malformed is not None:
            return PromptCheck(malformed, {}, [])
        outputs = [node_id for node_id, spec in self.node_classes.items() if spec.output_node]
        if not outputs:
            return PromptCheck(_prompt_error("prompt_no_outputs", "Prompt has no outputs", ""),
                               {}, [])
        problems = self._problems(outputs)
        if not problems:
            return PromptCheck(None, {}, outputs)
        downstream = graph_structure.descendants_of_each(self.prompt, problems)
        failed = set().union(*downstream.values())
        node_errors = {
            node_id: {
                "errors": errors,
                "dependent_outputs": [output for output in outputs
                                      if output in downstream[node_id]],
                "class_type": self.prompt[node_id]["class_type"],
            }
            for node_id, errors in problems.items()}
        # ComfyUI lists the failed outputs' own problems only; upstream ones are in node_errors.
        details = "\n".join(f"{error['message']}: {error['details']}"
                            for node_id in outputs if node_id in failed
                            for error in problems.get(node_id, ()))
        error = _prompt_error("prompt_outputs_failed_validation",
                              "Prompt outputs failed validation", details)
        return PromptCheck(error, node_errors,
                           [node_id for node_id in outputs if node_id not in failed])

    def _index_nodes(self) -> dict[str, Any] | None:
        """Find every node's class; the top-level error of a malformed prompt, else None."""
        if not isinstance(self.prompt, Mapping):
            return _prompt_error(
                "invalid_prompt", "The prompt must be an object mapping node ids to nodes.",
                f"got {type(self.prompt).__name__}")
        for node_id, node in self.prompt.items():
            if not isinstance(node, Mapping) or "class_type" not in node:
                return _prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'")
            class_type = node["class_type"]
            spec = self.classes.get(class_type) if isinstance(class_type, str) else None
            if spec is None:
                return _prompt_error(
                    "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'")
            if not isinstance(node.get("inputs", {}), Mapping):
                return _prompt_error(
                    "invalid_prompt", "Cannot execute because a node's inputs are not an object.",
                    f"Node ID '#{node_id}'")
            self.node_classes[node_id] = spec
        return None

    def _problems(self, outputs: list[str]) -> dict[str, list[dict[str, Any]]]:
        """node id -> its problems, in prompt order, for the outputs and their ancestors."""
        checked = graph_structure.ancestors_and_self(self.prompt, outputs)
        problems: dict[str, list[dict[str, Any]]] = {}
        for node_id, spec in self.node_classes.items():
            if node_id not in checked:
                continue
            node = self.prompt[node_id]
            try:
                errors = input_errors(spec, node.get("inputs", {}), self.node_classes)
            except LinkLookupFailed as failure:
                errors = [self._lookup_error(node_id, failure, checked)]
            else:
                if self.node_checks is not None:
                    errors += self.node_checks(node_id, node)
            if errors:
                problems[node_id] = errors
        cycle = graph_structure.find_cycle(self.prompt)
        if cycle:
            self._add_cycle_errors(problems, cycle)
            problems = {node_id: problems[node_id] for node_id in self.prompt
                        if node_id in problems}
        return problems

    def _lookup_error(self, node_id: str, failure: LinkLookupFailed,
                      checked: set[str]) -> dict[str, Any]:
        """ComfyUI reports a failed lookup on the node that raised it, with the input of the
        node whose check led there (the first such in prompt order), if any."""
        for reader_id in self.prompt:
            if reader_id not in checked:
                continue
            inputs = self.prompt[reader_id].get("inputs", {})
            for spec in self.node_classes[reader_id].inputs:
                link = graph_structure.as_link(inputs.get(spec.name))
                if link is not None and link.source == node_id:
                    return failure.inner_error(spec, inputs[spec.name])
        return failure.outer_error()

    def _add_cycle_errors(self, problems: dict[str, list[dict]], found: list[str]) -> None:
        # find_cycle lists each node before the node it reads from; show the way data flows.
        flow = list(reversed(found))
        readable = " -> ".join(flow)
        for position, node_id in enumerate(flow[1:], start=1):
            input_name, link = self._input_reading_from(node_id, flow[position - 1])
            spec = self._input_spec(node_id, input_name)
            extra: dict[str, Any] = {
                "input_name": input_name,
                "input_config": spec.input_config() if spec is not None else None,
                "received_value": link, "cycle": flow}
            problems.setdefault(node_id, []).append(input_error(
                "dependency_cycle", "Node is part of a dependency cycle",
                f"{input_name}: {readable}", extra))

    def _input_spec(self, node_id: str, input_name: str) -> InputSpec | None:
        return next((spec for spec in self.node_classes[node_id].inputs
                     if spec.name == input_name), None)

    def _input_reading_from(self, node_id: str, source_id: str) -> tuple[str, list]:
        for name, value in self.prompt[node_id].get("inputs", {}).items():
            link = graph_structure.as_link(value)
            if link is not None and link.source == source_id:
                return name, list(value)
        raise AssertionError(f"node {node_id} has no link from {source_id}")


# --- the readable summary -----------------------------------------------------------------------

def _summary(body: Mapping[str, Any]) -> str:
    error = body["error"]
    node_errors = body.get("node_errors") or {}
    if not node_errors:
        details = f" ({error['details']})" if error.get("details") else ""
        return f"{error['message']}{details}"
    parts = [_describe(node_id, entry["class_type"], item)
             for node_id, entry in node_errors.items() for item in entry["errors"]]
    count = len(parts)
    return (f"{error['message']} ({count} problem{'s' * (count != 1)}): "
            + "; ".join(parts) + ".")


def _describe(node_id: str, class_type: str, error: Mapping[str, Any]) -> str:
    extra_info = error.get("extra_info", {})
    # An inner node's error names the input of the node that links to it, not one of its own.
    input_name = (None if error.get("type") == "exception_during_inner_validation"
                  else extra_info.get("input_name"))
    where = f"node {node_id} ({class_type})"
    if input_name is not None:
        where += f" input '{input_name}'"
    details = _without_input_prefix(str(error.get("details", "")), input_name)
    if "exception_type" in extra_info:
        details = f"{extra_info['exception_type']}: {details}"
    return f"{where}: {error['message']}" + (f" [{details}]" if details else "")


def _without_input_prefix(details: str, input_name: str | None) -> str:
    if input_name is None:
        return details
    if details == input_name:
        return ""
    for separator in (": ", ", "):
        if details.startswith(input_name + separator):
            return details[len(input_name) + len(separator):]
    return details


__all__ = (
    "ClassSpec", "CompiledCatalog", "InputSpec", "NodeChecks", "PromptCheck",
    "PromptValidationError", "check_prompt", "compile_catalog", "validate_prompt")
