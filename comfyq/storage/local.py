"""Outputs left on the worker's own disk (``COMFYQ_STORAGE=local``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from comfyq.settings import Settings
from comfyq.storage.stored import RunFiles


class LocalStorage:
    """Files stay where the worker wrote them, under ``COMFYQ_DATA_DIR/outputs``; their URL is
    ``file://`` (this host only) or under ``COMFYQ_OUTPUT_URL_BASE`` when that folder is served.

    Retention of local folders (outputs, temp files, uploads) goes by their age: the reaper
    sweeps them, so :meth:`delete_runs` and :meth:`delete_uploads_before` have nothing to do.
    """

    def __init__(self, settings: Settings) -> None:
        self.url_base = settings.output_url_base
        self.is_public = bool(self.url_base)

    def keep(self, run: RunFiles, path: Path, name: str) -> str:
        if not self.url_base:
            return path.as_uri()
        return f"{self.url_base.rstrip('/')}/{quote(name)}"

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        return 0

    def delete_uploads_before(self, cutoff: float) -> int:
        return 0


def local_folders(settings: Settings) -> list[Path]:
    """The folders of this host's data folder that fill up with one subfolder per run, upload
    or fetched input: outputs, temp files, uploads and the input cache."""
    data = settings.data_dir.resolve()
    return [settings.output_dir, data / "temp", data / "uploads", data / "input-cache"]


def sweep_local_folders(settings: Settings, cutoff: float) -> int:
    """Delete the subfolders of :func:`local_folders` last changed before ``cutoff`` (a Unix
    time); how many. Each host sweeps its own: the maintenance host in its retention pass, every
    ``comfyq worker`` host for itself."""
    swept = 0
    for root in local_folders(settings):
        for folder in _older_than(root, cutoff):
            shutil.rmtree(folder, ignore_errors=True)
            swept += 1
    return swept


def _older_than(root: Path, cutoff: float) -> list[Path]:
    if not root.is_dir():
        return []
    return [entry for entry in root.iterdir() if entry.is_dir() and entry.stat().st_mtime < cutoff]
