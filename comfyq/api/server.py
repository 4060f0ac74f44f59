"""Serve the API with uvicorn (``comfyq api``)."""

from __future__ import annotations

import uvicorn

from comfyq.api.app import create_app
from comfyq.settings import Settings, get_settings


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None,
          access_log: bool = False, log_level: str = "info") -> None:
    """Run the API until interrupted (SIGINT/SIGTERM stop it after in-flight requests)."""
    app = create_app(settings or get_settings())
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level=log_level)
