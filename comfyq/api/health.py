"""Liveness and readiness probes, served without a token at the root of the server.

``/health`` answers while the process serves requests. ``/ready`` answers 200 only when Redis
answers and at least one worker is online (its presence key alive), else 503 with the reason:
a load balancer then sends runs only to an API that can queue them and have them executed.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from comfyq.api.schemas import HealthBody, ReadyBody
from comfyq.worker_presence import online_workers

#: Paths of the probes (public: see comfyq.api.auth).
HEALTH_PATH = "/health"
READY_PATH = "/ready"
#: No token is needed for these, which the OpenAPI document says per operation.
PUBLIC = {"security": []}

router = APIRouter(tags=["health"])


@router.get(HEALTH_PATH, response_model=HealthBody, openapi_extra=PUBLIC, summary="Liveness")
async def health() -> HealthBody:
    return HealthBody()


@router.get(READY_PATH, response_model=ReadyBody, openapi_extra=PUBLIC,
            responses={503: {"model": ReadyBody, "description": "Not ready, and why."}},
            summary="Readiness: Redis reachable and a worker online")
async def ready(request: Request) -> JSONResponse:
    client = request.app.state.comfyq.client
    try:
        workers = len(await run_in_threadpool(online_workers, client.redis))
    except redis.RedisError as error:
        body = ReadyBody(status="not ready", redis=False, workers=0,
                         detail=f"Redis is unreachable: {error}")
    else:
        body = ReadyBody(status="ready" if workers else "not ready", redis=True, workers=workers,
                         detail=None if workers else "no worker is online")
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ready" else 503)
