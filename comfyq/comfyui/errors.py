"""How a run that failed on a ComfyUI server is reported, with ComfyUI's own details.

Each error is a :class:`~comfyq.execution.executor.NodeExecutionError`, so the runner records it
as it records an in-process node failure (``node_id``, ``node_type``, ``exception_type``,
``exception_message``, ``traceback``) and the final webhook carries it; :meth:`as_dict` adds what
only ComfyUI knows (a validation failure's ``node_errors``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from comfyq.catalog.validation import PromptValidationError
from comfyq.execution.executor import NodeExecutionError


class ComfyUIRunError(NodeExecutionError):
    """A run failed on the ComfyUI server.

    :param node_id: the node concerned ("" when none is).
    :param class_type: its class.
    :param exception_type: ComfyUI's exception type, or comfyq's name for the failure.
    :param message: what went wrong.
    :param traceback: the server-side traceback, when there is one.
    :param details: more fields for the run record's ``error``.
    """

    def __init__(self, node_id: str, class_type: str, exception_type: str, message: str,
                 traceback: str = "", details: Mapping[str, Any] | None = None) -> None:
        Exception.__init__(self, f"node {node_id or '-'} ({class_type or '-'}) failed: "
                                 f"{exception_type}: {message}")
        self.node_id = node_id
        self.class_type = class_type
        self.exception_type = exception_type
        self.exception_message = message
        self.traceback = traceback
        self.details = dict(details or {})

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), **self.details}


def validation_error(body: Mapping[str, Any], prompt: Mapping[str, Any]) -> ComfyUIRunError:
    """From a ``POST /prompt`` answer that refused the prompt (400, or 200 with node_errors)."""
    node_errors = dict(body.get("node_errors") or {})
    error = dict(body.get("error") or {
        "type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
        "details": "", "extra_info": {}})
    summary = str(PromptValidationError({"error": error, "node_errors": node_errors}))
    node_id = next(iter(node_errors), None) or _node_in_details(str(error.get("details", "")))
    class_type = (node_errors.get(node_id, {}).get("class_type")
                  or _class_of(prompt, node_id)) if node_id else ""
    return ComfyUIRunError(node_id or "", class_type or "", str(error.get("type")), summary,
                           details={"error": error, "node_errors": node_errors})


def _node_in_details(details: str) -> str | None:
    """ComfyUI names the node of a prompt-level error as ``Node ID '#<id>'``."""
    match = re.search(r"#([^']+)'", details)
    return match.group(1) if match else None


def _class_of(prompt: Mapping[str, Any], node_id: str) -> str:
    node = prompt.get(node_id)
    return str(node.get("class_type", "")) if isinstance(node, Mapping) else ""


def execution_error(data: Mapping[str, Any]) -> ComfyUIRunError:
    """From an ``execution_error`` event (or the same message in the history)."""
    traceback = data.get("traceback") or []
    return ComfyUIRunError(
        str(data.get("node_id") or ""), str(data.get("node_type") or ""),
        str(data.get("exception_type") or "Exception"),
        str(data.get("exception_message") or "").rstrip("\n"),
        "".join(traceback) if isinstance(traceback, list) else str(traceback),
        details={"executed": list(data.get("executed") or [])})


def interrupted_elsewhere(data: Mapping[str, Any]) -> ComfyUIRunError:
    """The prompt was interrupted on the server by someone other than comfyq."""
    return ComfyUIRunError(
        str(data.get("node_id") or ""), str(data.get("node_type") or ""), "ComfyUIInterrupted",
        "the prompt was interrupted on the ComfyUI server (not by comfyq)")


def server_lost(url: str, reason: str, node_id: str = "", class_type: str = "") -> ComfyUIRunError:
    """The server died, restarted or stopped answering mid-run."""
    return ComfyUIRunError(node_id, class_type, "ComfyUIServerLost", f"ComfyUI at {url}: {reason}")
