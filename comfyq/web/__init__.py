"""Run pages: recent runs and one run's outputs, inputs, error and webhook deliveries, in a browser.

Served by ``comfyq api`` under ``/ui/`` (see :mod:`comfyq.web.routes` for the routes and how the
API token reaches them). Server-rendered HTML from Jinja2 templates with a small script, no
build step; needs the ``api`` extra.
"""

from comfyq.web.routes import UI_PREFIX, public_paths, router

__all__ = ["UI_PREFIX", "public_paths", "router"]
