"""Outputs left on the worker's own disk (``COMFYQ_STORAGE=local``)."""

from __future__ import annotations

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
