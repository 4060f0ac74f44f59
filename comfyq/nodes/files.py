"""Where output nodes write: ComfyUI's ``<prefix>_00001_.png`` names inside the run's own folder.

``filename_prefix`` may name a sub-folder (``"portraits/face"``) but never leave the run's
folder: ``..`` parts and absolute paths are refused. Counters continue after the highest one
already in the folder, as ComfyUI's do, and a file is created exclusively, so two nodes (or two
processes) never overwrite each other's files.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfyq.nodes.resample import to_uint8
from comfyq.run_context import current_context

_SEPARATORS = re.compile(r"[\\/]+")


class UnsafeFilenamePrefix(ValueError):
    """A ``filename_prefix`` would write outside the run's folder or names no file."""


@dataclass(frozen=True)
class SaveTarget:
    """Where the files of one output node go.

    :param folder: the directory files are written to (exists).
    :param filename: the file name stem before ``_<counter>_``.
    :param subfolder: ``folder`` relative to the run's output root, as ComfyUI records report it.
    """

    folder: Path
    filename: str
    subfolder: str


def _expand_variables(prefix: str, width: int, height: int) -> str:
    """ComfyUI's server-side prefix variables: %width%, %height%, %year% ... %second%."""
    now = time.localtime()
    values = {
        "width": str(width), "height": str(height), "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}",
    }
    for name, value in values.items():
        prefix = prefix.replace(f"%{name}%", value)
    return prefix


def split_prefix(filename_prefix: str) -> tuple[list[str], str]:
    """``(sub-folder parts, file name)`` of a prefix; refuses anything leaving the folder."""
    if not isinstance(filename_prefix, str):
        raise UnsafeFilenamePrefix(
            f"filename_prefix: expected a string, got {type(filename_prefix).__name__}")
    if "\x00" in filename_prefix:
        raise UnsafeFilenamePrefix("filename_prefix: must not contain a NUL character")
    if filename_prefix.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", filename_prefix):
        raise UnsafeFilenamePrefix(
            f"filename_prefix {filename_prefix!r}: absolute paths are not allowed; "
            f"give a name, optionally under a relative sub-folder such as 'renders/cat'")
    parts = [part for part in _SEPARATORS.split(filename_prefix) if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeFilenamePrefix(
            f"filename_prefix {filename_prefix!r}: '..' is not allowed; files stay inside "
            f"the run's own folder")
    if not parts:
        raise UnsafeFilenamePrefix(
            f"filename_prefix {filename_prefix!r}: must name a file, e.g. 'ComfyUI'")
    return parts[:-1], parts[-1]


def save_target(root: Path, root_subfolder: str, filename_prefix: str, width: int = 0,
                height: int = 0) -> SaveTarget:
    """Resolve ``filename_prefix`` under ``root`` (the run's output or temp folder)."""
    if "%" in filename_prefix:
        filename_prefix = _expand_variables(filename_prefix, width, height)
    sub_parts, filename = split_prefix(filename_prefix)
    folder = root.joinpath(*sub_parts)
    # Only sub-folders can lead elsewhere (through a symbolic link); the run's folder is its own.
    if sub_parts and not folder.resolve().is_relative_to(root.resolve()):
        raise UnsafeFilenamePrefix(
            f"filename_prefix {filename_prefix!r}: resolves outside the run's folder")
    folder.mkdir(parents=True, exist_ok=True)
    subfolder = "/".join(part for part in (root_subfolder, *sub_parts) if part)
    return SaveTarget(folder=folder, filename=filename, subfolder=subfolder)


def next_counter(folder: Path, filename: str) -> int:
    """One more than the highest ``<filename>_<counter>_`` in ``folder`` (1 when none)."""
    # String tests, not a regular expression: previews' prefixes are random, so a pattern
    # compiled per call would never come from re's cache.
    prefix = filename.lower() + "_"
    highest = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name.lower()
            if name.startswith(prefix):
                digits, separator, _ = name[len(prefix):].partition("_")
                if separator and digits.isdecimal():
                    highest = max(highest, int(digits))
    return highest + 1


def write_new_file(target: SaveTarget, counter: int, extension: str, data: bytes,
                   batch_number: int = 0) -> tuple[str, int]:
    """Write ``data`` as ``<filename>_<counter:05>_.<extension>``, moving past existing files.

    :returns: ``(file name, counter used)``; the next file should use ``counter + 1``.
    """
    stem = target.filename.replace("%batch_num%", str(batch_number))
    while True:
        name = f"{stem}_{counter:05}_.{extension}"
        try:
            with open(target.folder / name, "xb") as file:
                file.write(data)
            return name, counter
        except FileExistsError:
            counter += 1


def image_to_pil(image: np.ndarray) -> Image.Image:
    """One ``[H, W, C]`` IMAGE as a Pillow image, quantised as ComfyUI quantises (truncation)."""
    pixels = to_uint8(image)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(np.ascontiguousarray(pixels))


def png_metadata(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> PngInfo:
    """ComfyUI's PNG text chunks: the prompt and each extra_pnginfo entry, as JSON."""
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", _prompt_json(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata


#: The last prompt written into a PNG and its JSON: every image of a run carries the same
#: prompt (a graph of hundreds of nodes is most of a small preview's cost), so it is encoded once.
#: Keyed by the run too, so a graph object reused, changed, by a later run is encoded afresh.
_last_prompt: tuple[Any, str | None, str] | None = None


def _prompt_json(prompt: Any) -> str:
    global _last_prompt
    run_id = _current_run_id()
    last = _last_prompt
    if last is not None and last[0] is prompt and last[1] == run_id:
        return last[2]
    text = json.dumps(prompt)
    _last_prompt = (prompt, run_id, text)
    return text


def _current_run_id() -> str | None:
    try:
        return current_context().run_id
    except RuntimeError:
        return None


def encode_image(picture: Image.Image, file_type: str, *, quality: int = 80,
                 compress_level: int = 4, metadata: PngInfo | None = None) -> bytes:
    """``picture`` encoded as png, jpg or webp."""
    buffer = io.BytesIO()
    if file_type == "png":
        picture.save(buffer, format="PNG", pnginfo=metadata, compress_level=compress_level)
    elif file_type == "jpg":
        if picture.mode not in ("RGB", "L"):
            picture = picture.convert("RGB")
        picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    elif file_type == "webp":
        picture.save(buffer, format="WEBP", quality=quality)
    else:
        raise ValueError(f"file_type must be one of png, jpg, webp; got {file_type!r}")
    return buffer.getvalue()

