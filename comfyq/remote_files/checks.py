"""What a fetched input must look like, by kind."""

from __future__ import annotations

import json
import struct
from pathlib import Path

#: Largest safetensors header accepted (the format itself caps it at 100 MB).
MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024
KINDS = ("file", "image", "lora", "checkpoint")


def content_problem(path: Path, kind: str) -> str | None:
    """Why the file at ``path`` is not a valid ``kind``, or None when it is."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if kind == "image":
        return _image_problem(path)
    if kind in ("lora", "checkpoint"):
        return _safetensors_problem(path)
    return None


def _image_problem(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"not an image ({error})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    with path.open("rb") as source:
        prefix = source.read(8)
        if len(prefix) < 8:
            return "not a safetensors file (shorter than its header length)"
        (length,) = struct.unpack("<Q", prefix)
        if not 2 <= length <= MAX_SAFETENSORS_HEADER_BYTES:
            return ("not a safetensors file (a pickled .ckpt or .pt can run code when loaded; "
                    "convert it to .safetensors)")
        header = source.read(length)
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(parsed, dict):
        return "not a safetensors file (its header is not a JSON object)"
    return None
