"""A ComfyUI-backed worker's node catalog: its server's ``/object_info``.

Published through :mod:`comfyq.catalog.registry` like an in-process worker's catalog, so
submit-time validation checks graphs against the custom nodes and model files really installed
on the server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from comfyq.comfyui.client import ComfyUIClient, ComfyUIRequestError, ComfyUIUnavailable

logger = logging.getLogger(__name__)


def server_catalog_source(url: str, timeout: float, wait_seconds: float):
    """A ``CatalogSource`` reading ``url``'s ``/object_info``, waiting for the server a while.

    ComfyUI exposes no list of custom node packs that failed to import, so none are reported.
    """

    def source() -> tuple[dict[str, Any], dict[str, str]]:
        client = ComfyUIClient(url, timeout)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return client.object_info(), {}
            except (ComfyUIUnavailable, ComfyUIRequestError) as error:
                if time.monotonic() >= deadline:
                    raise
                logger.info("waiting for ComfyUI's catalog: %s", error)
                time.sleep(1.0)

    return source
