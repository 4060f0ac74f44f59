"""Where workers keep a run's output files, and the URLs other hosts fetch them from.

``COMFYQ_STORAGE`` picks one of two kinds:

- ``local`` (the default, for one host): files stay in ``COMFYQ_DATA_DIR/outputs/<run_id>/`` on
  the worker's disk; records hold ``file://`` URLs, or URLs under ``COMFYQ_OUTPUT_URL_BASE`` when
  something serves that folder.
- ``s3``: workers upload every output to an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2,
  GCS's S3 interface) under ``<prefix>/<run_id>/``. Records keep the object's ``s3://`` address,
  never a signed URL, and every read (``GET /run/{id}``, webhooks, ``comfyq outputs``, run pages)
  turns it into a presigned HTTPS URL signed at that moment (or a plain URL under
  ``COMFYQ_S3_PUBLIC_BASE_URL``), so a week-old record still yields a URL that works.

S3 goes through boto3 rather than fsspec/s3fs: presigned URLs are a local computation in
botocore (no request per read); ``upload_file`` with a ``TransferConfig`` switches to parallel
multipart uploads for large files by itself; credentials come from the standard AWS chain
(environment, ``~/.aws`` files, instance and container roles) with nothing of comfyq's own; and
``addressing_style`` covers MinIO and servers reached by IP (path style) as well as AWS and R2
(virtual hosts). s3fs would add an asyncio stack and a filesystem abstraction comfyq does not use.
"""

from __future__ import annotations

from comfyq.settings import Settings
from comfyq.storage.local import LocalStorage
from comfyq.storage.s3 import OutputUploadFailed, S3Storage, s3_storage
from comfyq.storage.stored import OutputStorage, RunFiles
from comfyq.storage.urls import open_stored, readable_outputs

__all__ = ["LocalStorage", "OutputStorage", "OutputUploadFailed", "RunFiles", "S3Storage",
           "open_stored", "output_storage", "readable_outputs"]


def output_storage(settings: Settings) -> OutputStorage:
    """The storage ``settings`` name (``COMFYQ_STORAGE``)."""
    if settings.storage == "s3":
        return s3_storage(settings)
    return LocalStorage(settings)
