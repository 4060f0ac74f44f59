"""Files clients upload for their runs' inputs (``POST /file/upload``), kept where outputs are.

With S3 storage an upload goes to ``<prefix>/uploads/<file_id>/<name>`` and its URL is what a
reader of an output gets (presigned, or under the public base URL), so any worker can fetch it.
Uploads are kept as long as finished runs (``COMFYQ_RUN_RETENTION_SECONDS``). With local
storage it goes to ``COMFYQ_DATA_DIR/uploads/<file_id>/<name>`` and its URL is
``file://``: only workers on the API's own host can read it (the input fetcher accepts ``file://``
URLs inside that folder and nowhere else).
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from comfyq.settings import Settings
from comfyq.storage.media_types import served_content_type
from comfyq.storage.s3 import s3_storage

#: Longest file name kept (characters); the rest of a longer name is dropped.
MAX_NAME_CHARS = 120
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StoredUpload:
    file_id: str
    file_name: str
    url: str


def safe_file_name(name: str | None) -> str:
    """``name`` without folders, with only letters, digits, ``.``, ``_`` and ``-``."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME_CHARACTERS.sub("_", base).strip("._")[:MAX_NAME_CHARS]
    return cleaned or "upload"


def uploads_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "uploads"


def keep_upload(settings: Settings, source: BinaryIO, name: str | None) -> StoredUpload:
    """Store ``source`` under a new file id; its id, kept name and URL."""
    file_id = uuid.uuid4().hex
    file_name = safe_file_name(name)
    if settings.storage == "s3":
        storage = s3_storage(settings)
        key = f"{storage.uploads_prefix}{file_id}/{file_name}"
        storage.upload_stream(source, key, served_content_type(file_name))
        return StoredUpload(file_id, file_name, storage.url(storage.bucket, key))
    target = uploads_dir(settings) / file_id / file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as sink:
        shutil.copyfileobj(source, sink)
    return StoredUpload(file_id, file_name, target.as_uri())
