"""Reading the transcripts recorded from a real ComfyUI 0.3.64 (tests/data/comfyui_transcripts)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from tests.paths import TRANSCRIPTS


@cache
def _load(file: str) -> dict[str, Any]:
    return json.loads((TRANSCRIPTS / f"{file}.json").read_text())


def recorded_case(file: str, name: str) -> dict[str, Any]:
    """One case of a transcript file (``file`` without ``.json``); a copy, free to change."""
    case = next(case for case in _load(file)["cases"] if case["name"] == name)
    return json.loads(json.dumps(case))


def recorded_calls(file: str, name: str, method: str, path: str) -> list[dict[str, Any]]:
    """The HTTP exchanges of a case with that method and path, in the order they were made."""
    return [call for call in recorded_case(file, name)["http"]
            if call["method"] == method and call["path"] == path]


def recorded_frames(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON websocket frames of a case, in the order they arrived."""
    return [entry["text"] for entry in case["ws_frames"] if "text" in entry]


def recorded_history(case: dict[str, Any], prompt_id: str) -> dict[str, Any]:
    """The last non-empty ``GET /history/<prompt_id>`` entry of a case."""
    answers = [call["body"][prompt_id] for call in case["http"]
               if call["path"] == f"/history/{prompt_id}" and call.get("body")]
    return answers[-1]


#: The ``POST /prompt`` exchanges of validation_error.json: eight refused graphs, one with no
#: ``prompt`` key, and one graph accepted with a bad output in ``node_errors``.
VALIDATION_POSTS = recorded_calls("validation_error", "validation_error", "POST", "/prompt")


def validation_post_name(call: dict[str, Any]) -> str:
    """``width0``, ``missing``, ... (the recorder's prompt ids start with the case's name)."""
    return call["request_json"].get("prompt_id", "no_prompt").split("-")[0]


def stack_texts_set_aside(body: Any) -> Any:
    """``body`` with each ``traceback`` checked for its shape and replaced by a marker.

    A traceback lists the answering server's own source files and lines, which no other
    program shares; everything else in an answer can be compared as it is.
    """
    if isinstance(body, dict):
        if "traceback" in body:
            lines = body["traceback"]
            assert isinstance(lines, list) and lines, lines
            assert all(isinstance(line, str) and line.startswith("  File ") for line in lines)
            body = {**body, "traceback": "<a Python traceback>"}
        return {key: stack_texts_set_aside(value) for key, value in body.items()}
    if isinstance(body, list):
        return [stack_texts_set_aside(item) for item in body]
    return body
