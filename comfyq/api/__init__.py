"""comfyq's HTTP API: ComfyDeploy's run endpoints, so ComfyDeploy clients work unchanged.

Needs the ``api`` extra (``pip install 'comfyq[api]'``: FastAPI and uvicorn). Serve it with
``comfyq api``, or mount :func:`create_app` in any ASGI server::

    uvicorn --factory comfyq.api:create_app
"""

from comfyq.api.app import create_app

__all__ = ["create_app"]
