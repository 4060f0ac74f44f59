"""``POST /file/upload``: ComfyDeploy's ``file.upload``: a client stores a file (an input image,
a LoRA...) and gets the URL to pass in a run's ``inputs``.

The file is kept where outputs are (:mod:`comfyq.storage.uploads`); the answer is ComfyDeploy's
``FileUploadResponse``. The request body counts against ``COMFYQ_API_MAX_BODY_BYTES``.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from comfyq.api import schemas
from comfyq.api.routes import context
from comfyq.storage.uploads import keep_upload

router = APIRouter(tags=["file"])


@router.post("/file/upload", response_model=schemas.FileUploadResponse,
             summary="Upload a file for a run's inputs")
async def upload_file(file: UploadFile, request: Request) -> schemas.FileUploadResponse:
    """Store the multipart ``file`` and answer the URL workers fetch it from."""
    settings = context(request).settings
    try:
        stored = await run_in_threadpool(keep_upload, settings, file.file, file.filename)
    except Exception as error:  # storage unreachable or refusing: say so, keep nothing
        raise HTTPException(503, f"the file could not be stored: {error}") from None
    return schemas.FileUploadResponse(message="File uploaded successfully", file_id=stored.file_id,
                                      file_name=stored.file_name, file_url=stored.url)
