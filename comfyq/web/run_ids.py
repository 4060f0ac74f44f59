"""The ``run_id`` path parameter of every route that names a run, the API's and the pages'.

An id that could not be a run's (another key's name such as ``comfyq:workers``, ``../x``, a NUL,
10 KB of text) is answered 404 like an unknown run, before anything is read with it. The OpenAPI
document states the shape, so clients and fuzzers know it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from comfyq.errors import RunNotFound
from comfyq.models import RUN_ID_MAX_LENGTH, RUN_ID_PATTERN, is_run_id


def checked_run_id(run_id: Annotated[str, Path(
        description="A run's id, as the submit answered it.",
        # Stated in the document only: FastAPI would answer 422, and an unknown id is a 404.
        json_schema_extra={"pattern": RUN_ID_PATTERN, "maxLength": RUN_ID_MAX_LENGTH})]) -> str:
    """``run_id`` when it could be a run's id; :class:`RunNotFound` (404) when not."""
    if not is_run_id(run_id):
        shown = run_id if len(run_id) <= RUN_ID_MAX_LENGTH else run_id[:RUN_ID_MAX_LENGTH] + "..."
        raise RunNotFound(shown)
    return run_id


#: A route's ``run_id`` path parameter, checked.
RunId = Annotated[str, Depends(checked_run_id)]
