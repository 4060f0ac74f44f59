"""The FastAPI application: run endpoints under the configured prefix, probes, run pages under
``/ui`` (:mod:`comfyq.web`), Prometheus metrics at ``/metrics``, auth, limits.

Requests pass, outermost first: default answer headers (:mod:`comfyq.api.headers`), bearer-token
check (401), body size limit (413), then FastAPI's routing, with comfyq's errors answered as
:mod:`comfyq.api.errors` describes. ``/docs`` is :mod:`comfyq.api.docs_page`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from comfyq.api import deployments, files, health, routes
from comfyq.api.auth import BearerAuthMiddleware
from comfyq.api.body_limit import BodyLimitMiddleware
from comfyq.api.docs_page import docs_page
from comfyq.api.errors import install_error_handlers
from comfyq.api.headers import DefaultHeadersMiddleware
from comfyq.api.openapi import install_openapi
from comfyq.errors import ComfyqError
from comfyq.metrics import metrics_asgi_app, metrics_registry
from comfyq.producer.client import Client
from comfyq.redis.connection import async_redis_client
from comfyq.runs.follow import RunFollower
from comfyq.settings import Settings, get_settings
from comfyq.web import public_paths as ui_public_paths
from comfyq.web import router as ui_router

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
#: Prometheus metrics of the deployment; they need the token like every run endpoint.
METRICS_PATH = "/metrics"
DESCRIPTION = """comfyq's HTTP API: ComfyDeploy's run endpoints, served by your own GPU fleet.

A client written for ComfyDeploy (its SDKs included) works unchanged once its server URL points
here. Every run endpoint needs `Authorization: Bearer <token>` (tokens: `COMFYQ_API_TOKENS`).
"""


def _version() -> str:
    try:
        return importlib.metadata.version("comfyq")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    """The API application.

    :param settings: comfyq settings; the environment's by default.
    :param client: the comfyq client that submits and cancels; one built from ``settings``
        by default.
    :raises ComfyqError: no API token is configured (the API would refuse every request).
    """
    settings = settings or get_settings()
    if not settings.api_tokens:
        raise ComfyqError("no API token configured: set COMFYQ_API_TOKENS (comma-separated "
                          "bearer tokens the HTTP API accepts)")
    client = client or Client(settings)
    context = routes.ApiContext(settings, client)
    metrics = metrics_registry(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # redis.asyncio clients belong to one event loop: made here, on the server's loop.
        async_redis = async_redis_client(settings.redis_url)
        context.follower = RunFollower(async_redis)
        # A first collection makes the metrics' counters count from the API's start.
        await run_in_threadpool(lambda: list(metrics.collect()))
        try:
            yield
        finally:
            await async_redis.aclose()

    app = FastAPI(title="comfyq", version=_version(), description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=OPENAPI_PATH)
    app.state.comfyq = context
    app.include_router(routes.router, prefix=settings.api_path_prefix)
    app.include_router(deployments.router, prefix=settings.api_path_prefix)
    app.include_router(files.router, prefix=settings.api_path_prefix)
    app.include_router(health.router)
    app.include_router(ui_router)
    app.add_route(METRICS_PATH, metrics_asgi_app(metrics), include_in_schema=False)
    app.add_api_route(DOCS_PATH, lambda: docs_page(app.title), include_in_schema=False)
    install_error_handlers(app)
    install_openapi(app, settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=settings.api_tokens, public_paths={
        health.HEALTH_PATH, health.READY_PATH, DOCS_PATH, OPENAPI_PATH, *ui_public_paths()})
    app.add_middleware(DefaultHeadersMiddleware)
    return app
