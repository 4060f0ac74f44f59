"""Bringing a finished prompt's output files from ComfyUI into comfyq's output store.

Each ``{"filename", "subfolder", "type"}`` record of the history's ``outputs`` is downloaded with
``/view`` into the run's own folder (``context.output_dir`` for ``output`` files, the run's temp
folder otherwise) and rewritten to point there: its ``subfolder`` becomes the run id (plus any
sub-folder the user's prefix asked for), as comfyq's in-process nodes write it, so the runner
finds the file and records a ComfyDeploy output for it. Other ui entries (text, numbers) are
kept as they are.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from comfyq.comfyui.client import (
    ComfyUIClient,
    ComfyUIRequestError,
    ComfyUIUnavailable,
    output_over_limit,
)
from comfyq.comfyui.prepare import run_folder
from comfyq.run_context import RunContext


def is_file_record(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("filename"), str) and "type" in item


def local_subfolder(server_subfolder: str, run_id: str) -> str:
    """Where a server sub-folder goes under the run: ``comfyq/<run>/x`` -> ``<run>/x``."""
    own = run_folder(run_id)
    if server_subfolder == own or server_subfolder.startswith(own + "/"):
        rest = server_subfolder[len(own):].strip("/")
    else:
        rest = server_subfolder.strip("/")
    return "/".join(part for part in (run_id, rest) if part)


def _safe_relative(subfolder: str, filename: str) -> PurePosixPath:
    path = PurePosixPath(subfolder, filename)
    if path.is_absolute() or ".." in path.parts or "/" in filename or "\\" in filename:
        raise ComfyUIRequestError(f"output file {subfolder}/{filename} would leave the run folder")
    return path


class OutputFetcher:
    """Downloads one run's output files.

    :param client: the server's client.
    :param context: the run (its output and temp folders).
    :param max_bytes: the largest file accepted.
    """

    def __init__(self, client: ComfyUIClient, context: RunContext, max_bytes: int,
                 server_output_dir: Path | None = None) -> None:
        self.client = client
        self.context = context
        self.max_bytes = max_bytes
        self.server_output_dir = server_output_dir
        self._downloaded: dict[tuple[str, str, str], dict[str, Any]] = {}

    def fetch(self, outputs: Mapping[str, Mapping[str, Any]], node_ids: Iterable[str]
              ) -> dict[str, dict[str, Any]]:
        """The ui dicts of ``node_ids`` (those in ``outputs``), their files downloaded.

        Files already downloaded by this fetcher (:meth:`prefetch`) are not fetched again.
        """
        wanted = set(node_ids)
        return {node_id: self._localize_ui(ui) for node_id, ui in outputs.items()
                if node_id in wanted and isinstance(ui, Mapping)}

    def prefetch(self, outputs: Mapping[str, Mapping[str, Any]], node_ids: Iterable[str]) -> None:
        """Download what ``outputs`` names ahead of :meth:`fetch`; a failure here is left for
        :meth:`fetch` to meet (and report) again."""
        try:
            self.fetch(outputs, node_ids)
        except (ComfyUIRequestError, ComfyUIUnavailable, OSError):
            pass

    def _localize_ui(self, ui: Mapping[str, Any]) -> dict[str, Any]:
        return {kind: [self._localize(item) for item in items] if isinstance(items, list)
                else items for kind, items in ui.items()}

    def _localize(self, item: Any) -> Any:
        if not is_file_record(item):
            return item
        key = (item["filename"], str(item.get("subfolder") or ""), str(item["type"]))
        if key not in self._downloaded:
            self._downloaded[key] = self._download(item)
        return {**item, "subfolder": self._downloaded[key]["subfolder"]}

    def _download(self, item: dict[str, Any]) -> dict[str, Any]:
        run_id = self.context.run_id
        subfolder = local_subfolder(str(item.get("subfolder") or ""), run_id)
        relative = _safe_relative(subfolder, item["filename"])
        root = self.context.output_dir if item["type"] == "output" else self.context.temp_dir
        # Both roots already end in the run id, the first part of ``relative``.
        destination = Path(root, *relative.parts[1:])
        if not self._take_from_server_folder(item, destination):
            self.client.download(item, destination, self.max_bytes)
        return {**item, "subfolder": subfolder}

    def _take_from_server_folder(self, item: dict[str, Any], destination: Path) -> bool:
        """Link (else copy) an output file from the server's own folder on this host; False
        when there is no such folder, or the file is not in it."""
        if self.server_output_dir is None or item["type"] != "output":
            return False
        source = self.server_output_dir.joinpath(
            *_safe_relative(str(item.get("subfolder") or ""), item["filename"]).parts)
        try:
            if not source.is_file():
                return False
            if source.stat().st_size > self.max_bytes:
                raise output_over_limit(item["filename"], self.max_bytes)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, destination)
            except OSError:  # another filesystem, or a file system without hard links
                shutil.copyfile(source, destination)
        except FileNotFoundError:
            return False
        return True
