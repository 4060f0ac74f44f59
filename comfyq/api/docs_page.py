"""``GET /docs``: Swagger UI for the OpenAPI document, loaded so a CDN cannot change what runs.

The page loads one pinned Swagger UI release, each file with its Subresource Integrity hash (the
browser refuses a file whose bytes differ), under a Content-Security-Policy that allows only those
two files, the page's own start-up script (by its hash) and requests to this server.
"""

from __future__ import annotations

import base64
import hashlib
import html

from fastapi.responses import HTMLResponse

SWAGGER_UI_VERSION = "5.34.1"
_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
#: The files and the sha384 of each, as published in the swagger-ui-dist package on npm.
SCRIPT_URL = f"{_CDN}/swagger-ui-bundle.js"
SCRIPT_INTEGRITY = "sha384-XFYN47VzPiDY6qPtxYKg0nqUeW/upo20xf1j2SUE7gT/i35FJB4cuS/71Iegzk8Z"
STYLE_URL = f"{_CDN}/swagger-ui.css"
STYLE_INTEGRITY = "sha384-4c3vsE5f+trhFyHrFrLM1fFGUn531NIaC7dcqEWIJdoRQJ5CkJbSuSCwXLpaS1KF"

#: Relative, so the page works behind a proxy that serves the API under a path of its own.
_START = ("SwaggerUIBundle({url: 'openapi.json', dom_id: '#swagger-ui', layout: 'BaseLayout', "
          "deepLinking: true, presets: [SwaggerUIBundle.presets.apis]});")


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


# Swagger UI sets style attributes as it renders, and its stylesheet inlines SVG icons as data:.
DOCS_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_script_hash(_START)} {SCRIPT_URL}; "
    f"style-src {STYLE_URL} 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DOCS_HEADERS = {"content-security-policy": DOCS_SECURITY_POLICY, "cache-control": "no-cache",
                "referrer-policy": "no-referrer", "x-content-type-options": "nosniff"}


def docs_page(title: str) -> HTMLResponse:
    """The page, titled ``title``."""
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - API documentation</title>
<link rel="stylesheet" href="{STYLE_URL}" integrity="{STYLE_INTEGRITY}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SCRIPT_URL}" integrity="{SCRIPT_INTEGRITY}" crossorigin="anonymous"></script>
<script>{_START}</script>
</body>
</html>
"""
    return HTMLResponse(page, headers=DOCS_HEADERS)
