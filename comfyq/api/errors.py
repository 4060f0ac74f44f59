"""comfyq's errors as HTTP answers: each status code with a body that names the problem.

* :class:`~comfyq.errors.InvalidRunRequest` -> 422 listing every problem with its field path;
* :class:`~comfyq.errors.UnknownGpuType` -> 422 on the field that asked for that GPU;
* ``comfyq.inputs.ExternalInputError`` (an input that does not fit its node) -> 422
  on ``inputs.<name>``;
* ``comfyq.catalog.validation.PromptValidationError`` -> 400 with ComfyUI's ``node_errors`` body;
* :class:`~comfyq.errors.RunNotFound` and :class:`~comfyq.errors.DeploymentNotFound` -> 404;
* :class:`~comfyq.errors.SubmitFailed` and an unreachable Redis -> 503.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from comfyq.catalog.validation import PromptValidationError
from comfyq.errors import (
    DeploymentNotFound,
    FieldProblem,
    InvalidRunRequest,
    RunNotFound,
    SubmitFailed,
    UnknownGpuType,
)
from comfyq.inputs import ExternalInputError

logger = logging.getLogger(__name__)

#: Request fields an UnknownGpuType may name; anything else is the server's default GPU.
GPU_FIELDS = ("gpu", "machine_id")


def problem_dict(problem: FieldProblem, kind: str | None = None) -> dict:
    """One problem in FastAPI's ``{"loc", "msg", "type"}`` shape, plus the dotted ``field``.

    ``type`` is ``kind`` if given, else the problem's own: ComfyUI's error type for a problem
    of the graph (``invalid_prompt``, ``prompt_no_outputs``, ...), ``value_error`` for most.
    """
    path = [] if problem.path in ("", "request") else problem.path.split(".")
    return {"loc": ["body", *path], "msg": problem.message, "type": kind or problem.kind,
            "field": problem.path or "request"}


def validation_response(problems: list[FieldProblem], kind: str | None = None,
                        summary: InvalidRunRequest | None = None) -> JSONResponse:
    summary = summary or InvalidRunRequest(problems)
    return JSONResponse(status_code=422, content={
        "detail": [problem_dict(problem, kind) for problem in problems],
        "message": " ".join(str(summary).split()),
    })


def _invalid_request(_: Request, error: InvalidRunRequest) -> JSONResponse:
    return validation_response(error.problems, summary=error)


def _unknown_gpu(_: Request, error: UnknownGpuType) -> JSONResponse:
    if error.field not in GPU_FIELDS:
        # The server's own default GPU is not served: not the caller's fault.
        logger.error("a run without gpu was refused: %s", error)
        return JSONResponse(status_code=503, content={"detail": str(error)})
    return validation_response([FieldProblem(error.field, error.problem)], kind="unknown_gpu_type")


def _not_found(_: Request, error: RunNotFound) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(error)})


def _unknown_deployment(_: Request, error: DeploymentNotFound) -> JSONResponse:
    [problem] = error.problems
    return JSONResponse(status_code=404, content={"detail": str(problem)})


def _unavailable(_: Request, error: Exception) -> JSONResponse:
    logger.warning("answered 503: %s", error)
    return JSONResponse(status_code=503, content={"detail": f"comfyq is unavailable: {error}"})


def _prompt_invalid(_: Request, error: PromptValidationError) -> JSONResponse:
    return JSONResponse(status_code=400, content=error.body)


def _input_misfit(_: Request, error: ExternalInputError) -> JSONResponse:
    return validation_response([FieldProblem(error.field, error.problem)], kind="input_misfit")


#: Each error comfyq answers, and how (the most specific class first).
ERROR_ANSWERS = (
    (DeploymentNotFound, _unknown_deployment),
    (InvalidRunRequest, _invalid_request),
    (UnknownGpuType, _unknown_gpu),
    (RunNotFound, _not_found),
    (SubmitFailed, _unavailable),
    (redis.ConnectionError, _unavailable),
    (redis.TimeoutError, _unavailable),
    (PromptValidationError, _prompt_invalid),
    (ExternalInputError, _input_misfit),
)


def error_answer(request: Request | None, error: Exception) -> JSONResponse:
    """The answer to ``error`` (one of :data:`ERROR_ANSWERS`'), as its handler gives it."""
    for kind, answer in ERROR_ANSWERS:
        if isinstance(error, kind):
            return answer(request, error)
    raise error


def install_error_handlers(app: FastAPI) -> None:
    """Answer comfyq's errors with their status codes and bodies (see the module docstring)."""
    for kind, answer in ERROR_ANSWERS:
        app.add_exception_handler(kind, answer)
