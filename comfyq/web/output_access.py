"""Which files a run's page may serve, and where they are: only under ``outputs/<run_id>/``.

A run's output records name each file by ``filename``, ``subfolder`` and ``type`` (ComfyUI's
convention; the subfolder starts with the run id). The page asks for a file by its position in
the run's outputs, never by a path, and the path that record maps to is served only when it
resolves (symlinks followed) inside that run's own outputs folder, which must not be a link
itself: a record that names ``../`` or an absolute path, or a link pointing elsewhere, is
refused, and so is a record whose names no path can hold (a NUL, a name too long).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from comfyq.errors import ComfyqError
from comfyq.models import WorkflowRunOutputModel, is_run_id
from comfyq.runs.outputs import file_records, is_file_record

#: File suffixes shown as thumbnails (raster formats browsers decode; SVG can carry script).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


class OutputNotServed(ComfyqError):
    """The output file cannot be served; the message says why."""


class OutputRefused(OutputNotServed):
    """The output record names a path outside the run's outputs folder."""


class OutputMissing(OutputNotServed):
    """The output is not a kept file on this host."""


@dataclass(frozen=True)
class OutputItem:
    """One file named by a run's outputs, numbered in node then list order."""

    index: int
    node_id: str | None
    kind: str
    filename: str
    subfolder: str
    type: str
    #: Where ``COMFYQ_OUTPUT_URL_BASE`` publishes the file, or its presigned URL in object
    #: storage; empty for ``file://`` outputs.
    public_url: str = ""
    #: ``s3://bucket/key`` of a file kept in object storage (``COMFYQ_STORAGE=s3``).
    object_url: str = ""

    @property
    def is_image(self) -> bool:
        return PurePosixPath(self.filename).suffix.lower() in IMAGE_SUFFIXES

    @property
    def is_kept(self) -> bool:
        """Outputs are kept with the run; ``temp`` files (previews) are not."""
        return self.type == "output"


def output_items(outputs: Iterable[WorkflowRunOutputModel]) -> list[OutputItem]:
    """Every file the outputs name, numbered from 0."""
    return [_output_item(index, node_id, kind, item)
            for index, (node_id, kind, item) in enumerate(file_records(outputs))]


def _output_item(index: int, node_id: str | None, kind: str, item: dict[str, Any]) -> OutputItem:
    url = str(item.get("url") or "")
    return OutputItem(index, node_id, kind, str(item["filename"]), str(item.get("subfolder") or ""),
                      str(item.get("type") or "output"),
                      url if url.startswith(("https://", "http://")) else "",
                      str(item.get("object_url") or ""))


def output_values(outputs: Iterable[WorkflowRunOutputModel]) -> list[tuple[str | None, str, Any]]:
    """``(node_id, kind, value)`` of what the outputs hold besides files (texts, numbers...)."""
    values = []
    for output in outputs:
        for kind, items in output.data.items():
            entries = items if isinstance(items, list) else [items]
            values += [(output.node_id, kind, entry) for entry in entries
                       if not is_file_record(entry)]
    return values


def output_path(output_root: Path, run_id: str, item: OutputItem) -> Path:
    """The file of ``item`` on this host, inside ``output_root/<run_id>``.

    :param output_root: the outputs folder (``COMFYQ_DATA_DIR/outputs``).
    :raises OutputRefused: the record points outside the run's folder, or that folder is itself
        a link (it could point anywhere).
    :raises OutputMissing: the item is not a kept output, or its file is not on this host.
    """
    if not is_run_id(run_id):
        raise OutputRefused(f"run id {run_id[:80]!r} cannot name a folder")
    if not item.is_kept:
        raise OutputMissing(f"{item.filename}: a {item.type!r} file, not kept with the run")
    try:
        root = output_root.resolve()
        run_root = root / run_id
        if run_root.resolve() != run_root:
            raise OutputRefused(f"{item.filename}: the run's outputs folder is a link")
        path = (root / item.subfolder / item.filename).resolve()
        if not path.is_relative_to(run_root) or path == run_root:
            raise OutputRefused(f"{item.filename}: its record points outside the run's outputs "
                                "folder")
        if not path.is_file():
            raise OutputMissing(f"{item.filename}: not on this host (the API serves files from "
                                "its own COMFYQ_DATA_DIR/outputs)")
    except (OSError, ValueError) as error:  # a NUL in a name, a name too long, a link loop...
        raise OutputRefused(f"{item.filename!r}: its record names no file that can be served "
                            f"({type(error).__name__})") from None
    return path
