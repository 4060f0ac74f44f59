"""JSON documents the commands read: a file, or standard input for ``-``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from comfyq.cli.errors import UsageError


def read_json(path: str) -> Any:
    """The JSON document in ``path`` (``-``: standard input); a UsageError says what is wrong."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not valid JSON ({error})") from None


def read_request(path: str) -> dict:
    """A run request file; a bare API graph (as ComfyUI's "Save (API)" writes it) becomes a
    request named after the file."""
    document = read_json(path)
    if isinstance(document, dict) and "workflow_api_json" not in document:
        document = {"workflow_id": Path(path).stem, "workflow_api_json": document}
    return document


def read_graph(path: str) -> Any:
    """The API graph of a file: a bare graph, or a run request's ``workflow_api_json``."""
    document = read_json(path)
    if isinstance(document, dict) and "workflow_api_json" in document:
        return document["workflow_api_json"]
    return document
