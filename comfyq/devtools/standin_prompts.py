"""How the stand-in ComfyUI answers ``POST /prompt``: ComfyUI 0.3.64's rules and wording.

The verdict is :func:`comfyq.catalog.validation.check_prompt`, the check that follows ComfyUI's
``validate_prompt`` (its answers for the prompts a real ComfyUI refused are compared with the
recorded ones, ``tests/unit/test_catalog_validation.py``), plus what only a server holding the
node classes can check: each class's own ``VALIDATE_INPUTS`` (LoadImage's "is the file there").
As in ComfyUI, a prompt is refused (400) only when no output can run; otherwise the good outputs
are queued and the bad ones come back in ``node_errors`` (200).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyq.catalog.validation import check_prompt
from comfyq.devtools.standin_queue import PromptQueue, QueuedPrompt
from comfyq.execution.input_validation import class_checks


@dataclass(frozen=True)
class PromptAnswer:
    """The HTTP answer to one ``POST /prompt``: ``status`` and JSON ``body``."""

    status: int
    body: dict[str, Any]


def _refusal(error_type: str, message: str, details: str) -> PromptAnswer:
    return PromptAnswer(400, {"error": {"type": error_type, "message": message,
                                        "details": details, "extra_info": {}},
                              "node_errors": {}})


def answer_prompt(request: Any, catalog: Mapping[str, Any], node_classes: Mapping[str, type],
                  queue: PromptQueue) -> PromptAnswer:
    """Validate the request body of ``POST /prompt`` and queue what can run.

    As in ComfyUI, every request that is a JSON object takes a number from the queue's counter,
    refused ones too; ``number`` in the request sets it, ``front`` makes it negative.
    """
    if not isinstance(request, dict):
        return _refusal("invalid_prompt", "Invalid JSON body", "")
    number = queue.next_number()
    if "number" in request:
        number = request["number"]
    elif request.get("front"):
        number = -number
    if "prompt" not in request:
        return _refusal("no_prompt", "No prompt provided", "No prompt provided")
    prompt = request["prompt"]
    verdict = check_prompt(prompt, catalog, class_checks(node_classes, prompt))
    if not verdict.good_outputs:
        return PromptAnswer(400, verdict.body)
    prompt_id = str(request.get("prompt_id") or uuid.uuid4())
    extra_data = dict(request.get("extra_data") or {})
    if "client_id" in request:
        extra_data["client_id"] = request["client_id"]
    queue.put(QueuedPrompt(number, prompt_id, prompt, extra_data, verdict.good_outputs))
    return PromptAnswer(200, {"prompt_id": prompt_id, "number": number,
                              "node_errors": verdict.node_errors})
