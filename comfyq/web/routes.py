"""The run pages' routes under ``/ui``: public page shells, token-guarded data.

The pages a browser navigates to hold no data, so they are public: a navigation carries no
``Authorization`` header. Their script asks for a token once, keeps it in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` with every data request, which the
API's :class:`~comfyq.api.auth.BearerAuthMiddleware` checks before routing, as for the run
endpoints (401 and nothing else without a valid token).

Public: ``GET /ui/`` (recent runs), ``GET /ui/run?id=RUN_ID`` (one run), ``GET /ui/static/NAME``.

Token needed:

- ``GET /ui/fragments/runs?status=&gpu=&limit=``: the recent runs table, server-rendered HTML;
- ``GET /ui/live/runs?...``: the live values of the same runs (JSON), polled by the page;
- ``GET /ui/fragments/runs/{run_id}``: one run (outputs, inputs, error, webhook deliveries);
- ``GET /ui/live/runs/{run_id}``: its live values and a revision that changes when anything
  else on its page does;
- ``GET /ui/files/{run_id}/{index}``: the run's ``index``-th output file, from
  ``COMFYQ_DATA_DIR/outputs/<run_id>/`` only (see :mod:`comfyq.web.output_access`), or from
  object storage for a run whose worker uploaded it (the API reads it with its own credentials,
  so the page needs no CORS rule on the bucket).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import quote
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool

from comfyq.models import RunStatus, WorkflowRunModel
from comfyq.runs.listing import RunSummary, list_runs
from comfyq.runs.store import now
from comfyq.storage import open_stored
from comfyq.web.output_access import (
    OutputItem,
    OutputMissing,
    OutputRefused,
    output_items,
    output_path,
    output_values,
)
from comfyq.web.presentation import (
    delivery_rows,
    error_view,
    format_moment,
    iso_moment,
    run_live_values,
    run_revision,
    run_row,
    value_text,
)
from comfyq.web.run_ids import RunId
from comfyq.web.templating import render
from comfyq.webhooks.safety import display_url

if TYPE_CHECKING:  # comfyq.api imports this module to mount it
    from comfyq.api.routes import ApiContext
    from comfyq.runs.follow import RunFollower

UI_PREFIX = "/ui"
STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: Scripts and styles only from this server, no inline code: text from a run can never run.
PAGE_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                        "img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; "
                        "base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"content-security-policy": PAGE_SECURITY_POLICY,
                "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                "cache-control": "no-cache"}
DATA_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
#: An output file opened on its own renders inertly, whatever it holds.
FILE_HEADERS = {"content-security-policy": "default-src 'none'; sandbox",
                "x-content-type-options": "nosniff", "cache-control": "private, max-age=3600"}

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)


def static_files() -> dict[str, Path]:
    """The static files the pages load, by name."""
    return {path.name: path for path in STATIC_DIR.iterdir() if path.suffix in STATIC_TYPES}


def public_paths() -> frozenset[str]:
    """Exact paths of the pages and their static files: served without a token."""
    static = {f"{UI_PREFIX}/static/{name}" for name in static_files()}
    return frozenset({UI_PREFIX, f"{UI_PREFIX}/", f"{UI_PREFIX}/run", *static})


def context(request: Request) -> ApiContext:
    """What the API shares with its routes (settings, client, run follower)."""
    return request.app.state.comfyq


def _follower(request: Request) -> RunFollower:
    follower = context(request).follower
    assert follower is not None, "the API's lifespan sets the follower"
    return follower


def _page(template: str, **values: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **values), headers=PAGE_HEADERS)


def _fragment(template: str, **values: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **values), headers=DATA_HEADERS)


# --- pages (public) -------------------------------------------------------------------------


@router.get("")
async def ui_root() -> RedirectResponse:
    # Relative, so it stays right behind a proxy that serves the API under a path of its own.
    return RedirectResponse("ui/", status_code=308)


@router.get("/")
async def runs_page(request: Request) -> HTMLResponse:
    settings = context(request).settings
    return _page("runs_page.html", page="runs", statuses=[status.value for status in RunStatus],
                 gpu_types=settings.gpu_types, limits=[20, DEFAULT_LIMIT, 100, MAX_LIMIT],
                 default_limit=DEFAULT_LIMIT)


@router.get("/run")
async def run_page(run_id: str = Query("", alias="id")) -> HTMLResponse:
    return _page("run_page.html", page="run", run_id=run_id)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    path = static_files().get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    return Response(path.read_bytes(), media_type=STATIC_TYPES[path.suffix],
                    headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})


# --- recent runs (token) ----------------------------------------------------------------------


async def _recent_runs(request: Request, status: RunStatus | None, gpu: str | None,
                       limit: int) -> list[RunSummary]:
    api = context(request)
    if gpu is not None and gpu not in api.settings.gpu_types:
        raise HTTPException(422, f"gpu: {gpu!r} is not a GPU type of this deployment "
                                 f"({', '.join(api.settings.gpu_types)})")
    return await run_in_threadpool(list_runs, api.client.redis, status, gpu, limit)


def _caption(count: int, status: RunStatus | None, gpu: str | None) -> str:
    runs = f"{status.value} runs" if status else "runs"
    where = f" on {gpu}" if gpu else ""
    return f"{count} most recent {runs}{where}" if count else f"No {runs}{where} yet"


LimitQuery = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


@router.get("/fragments/runs")
async def runs_fragment(request: Request, status: RunStatus | None = None,
                        gpu: str | None = None, limit: int = LimitQuery) -> HTMLResponse:
    summaries = await _recent_runs(request, status, gpu, limit)
    moment = now()
    return _fragment("runs_table.html", rows=[run_row(summary, moment) for summary in summaries],
                     caption=_caption(len(summaries), status, gpu))


@router.get("/live/runs")
async def runs_live(request: Request, status: RunStatus | None = None, gpu: str | None = None,
                    limit: int = LimitQuery) -> JSONResponse:
    summaries = await _recent_runs(request, status, gpu, limit)
    moment = now()
    rows = [run_row(summary, moment).live_dict() for summary in summaries]
    return JSONResponse({"runs": rows}, headers=DATA_HEADERS)


# --- one run (token) --------------------------------------------------------------------------


def _moments(run: WorkflowRunModel) -> list[tuple[str, str, str]]:
    """(label, text, ISO) of the run's times."""
    labelled = [("Created", run.created_at), ("Queued", run.queued_at),
                ("Started", run.started_at), ("Ended", run.ended_at)]
    stamps = [(label, None if moment is None else moment.timestamp())
              for label, moment in labelled]
    return [(label, format_moment(stamp), iso_moment(stamp)) for label, stamp in stamps]


@router.get("/fragments/runs/{run_id}")
async def run_fragment(run_id: RunId, request: Request) -> HTMLResponse:
    run = await _follower(request).get(run_id)
    inputs = [(name, value_text(value)) for name, value in (run.workflow_inputs or {}).items()]
    values = [(node_id, kind, value_text(value))
              for node_id, kind, value in output_values(run.outputs)]
    return _fragment(
        "run_detail.html", run=run, live=run_live_values(run, now()), revision=run_revision(run),
        moments=_moments(run), files=output_items(run.outputs), values=values, inputs=inputs,
        error=error_view(run.error), deliveries=delivery_rows(run.webhook_attempts),
        webhook_url=display_url(run.webhook) if run.webhook else None)


@router.get("/live/runs/{run_id}")
async def run_live(run_id: RunId, request: Request) -> JSONResponse:
    run = await _follower(request).get(run_id)
    body = {**run_live_values(run, now()).as_dict(), "revision": run_revision(run)}
    return JSONResponse(body, headers=DATA_HEADERS)


def _file_kind(item: OutputItem) -> tuple[str, str]:
    """``(media type, disposition)`` the file is served with."""
    if item.is_image:
        return mimetypes.guess_type(item.filename)[0] or "application/octet-stream", "inline"
    # Anything else is only ever downloaded: an HTML or SVG output must not render here.
    return "application/octet-stream", "attachment"


def _file_response(path: Path, item: OutputItem) -> FileResponse:
    media_type, disposition = _file_kind(item)
    return FileResponse(path, media_type=media_type, filename=item.filename,
                        content_disposition_type=disposition, headers=FILE_HEADERS)


async def _stored_response(item: OutputItem) -> StreamingResponse:
    media_type, disposition = _file_kind(item)
    try:
        body = await run_in_threadpool(open_stored, item.object_url)
    except KeyError:
        raise HTTPException(404, f"{item.filename}: no longer in object storage") from None
    headers = {**FILE_HEADERS, "content-disposition":
               f"{disposition}; filename*=utf-8''{quote(item.filename)}"}
    return StreamingResponse(body.iter_chunks(1 << 20), media_type=media_type, headers=headers)


@router.get("/files/{run_id}/{index}")
async def output_file(run_id: RunId, index: int, request: Request) -> Response:
    run = await _follower(request).get(run_id)
    items = output_items(run.outputs)
    if not 0 <= index < len(items):
        raise HTTPException(404, f"run {run_id} has no output file number {index} "
                                 f"(it has {len(items)})")
    item = items[index]
    if item.object_url:
        return await _stored_response(item)
    try:
        path = output_path(context(request).settings.output_dir, run_id, item)
    except OutputRefused as error:
        raise HTTPException(403, str(error)) from None
    except OutputMissing as error:
        raise HTTPException(404, str(error)) from None
    return _file_response(path, item)
