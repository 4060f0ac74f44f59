"""Outputs in an S3-compatible bucket (``COMFYQ_STORAGE=s3``), through boto3.

Objects are kept under ``<prefix>/<run_id>/<execution>/`` (``execution``: the random part of
the run's lease token for that execution): a worker that was cut off mid-run
and comes back late writes under its own attempt, never over the files of the worker that took
the run over. Records hold ``s3://<bucket>/<key>``; :meth:`S3Storage.url` turns that into what a
client opens, signed anew at every read.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from comfyq.errors import ComfyqError
from comfyq.settings import Settings
from comfyq.storage.media_types import served_content_type
from comfyq.storage.stored import RunFiles

logger = logging.getLogger(__name__)

#: First and longest pause between two upload attempts (doubling in between).
FIRST_RETRY_DELAY_SECONDS = 0.25
LONGEST_RETRY_DELAY_SECONDS = 4.0
#: Files from this size on go up in parallel parts of this size.
MULTIPART_BYTES = 16 * 1024 * 1024
#: Keys one DeleteObjects request may name.
_DELETE_BATCH = 1000


class OutputUploadFailed(ComfyqError):
    """An output file could not be uploaded, even after retrying; the message says why."""


@dataclass(frozen=True)
class S3Config:
    """The settings an S3 storage is made of (hashable, so one client serves each)."""

    #: None in a process that only reads records (the bucket is in each ``s3://`` URL).
    bucket: str | None
    prefix: str
    endpoint_url: str | None
    region: str | None
    addressing_style: str
    url_lifetime_seconds: int
    public_base_url: str | None
    upload_retry_seconds: float
    timeout_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> S3Config:
        return cls(settings.s3_bucket, settings.s3_prefix.strip("/"), settings.s3_endpoint_url,
                   settings.s3_region, settings.s3_addressing_style,
                   settings.s3_url_lifetime_seconds, settings.s3_public_base_url,
                   settings.s3_upload_retry_seconds, settings.s3_timeout_seconds)


def s3_storage(settings: Settings) -> S3Storage:
    """The process's storage for the S3 settings of ``settings`` (one boto3 client each)."""
    return _storage(S3Config.of(settings))


@functools.cache
def _storage(config: S3Config) -> S3Storage:
    return S3Storage(config)


class S3Storage:
    """Uploads outputs, signs their URLs and deletes them, in one bucket.

    :param config: the bucket, prefix, endpoint and URL settings.
    """

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.is_public = bool(config.public_base_url)

    @functools.cached_property
    def client(self) -> Any:
        # Imported here: boto3 takes a while to import, and only S3 storage needs it.
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.config.endpoint_url, region_name=self.config.region,
            config=Config(signature_version="s3v4",
                          s3={"addressing_style": self.config.addressing_style},
                          connect_timeout=self.config.timeout_seconds,
                          read_timeout=self.config.timeout_seconds,
                          # comfyq's own loop retries for as long as the settings say.
                          retries={"mode": "standard", "total_max_attempts": 2}))

    @functools.cached_property
    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_BYTES,
                              multipart_chunksize=MULTIPART_BYTES)

    def object_key(self, run: RunFiles, name: str) -> str:
        """``<prefix>/<run_id>/<execution>/<name>``, ``name`` without its run-id subfolder."""
        tail = name.removeprefix(f"{run.run_id}/").lstrip("/")
        parts = [self.config.prefix, run.run_id, run.execution, tail]
        return "/".join(part for part in parts if part)

    @property
    def bucket(self) -> str:
        if not self.config.bucket:
            raise ComfyqError("COMFYQ_S3_BUCKET: required to keep outputs in S3")
        return self.config.bucket

    def keep(self, run: RunFiles, path: Path, name: str) -> str:
        key = self.object_key(run, name)
        extra = {"ContentType": served_content_type(path.name),
                 "Metadata": {"run-id": run.run_id, "execution": run.execution,
                              "worker": run.worker}}
        self._upload(run, path, key, extra)
        return f"s3://{self.bucket}/{key}"

    def _upload(self, run: RunFiles, path: Path, key: str, extra: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.config.upload_retry_seconds
        delay, attempt = FIRST_RETRY_DELAY_SECONDS, 0
        while True:
            run.check()
            attempt += 1
            try:
                self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra,
                                        Config=self._transfer)
                return
            except Exception as error:  # boto3 wraps its failures in several hierarchies
                if not _worth_retrying(error) or time.monotonic() + delay > deadline:
                    raise OutputUploadFailed(
                        f"could not upload {path.name} to s3://{self.bucket}/{key} "
                        f"({attempt} attempt(s)): {error}") from None
                logger.warning("run %s: upload of %s failed (attempt %d), retrying in %.2f s: %s",
                               run.run_id, key, attempt, delay, error)
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_RETRY_DELAY_SECONDS)

    def upload_stream(self, source: Any, key: str, content_type: str) -> None:
        """Upload a readable binary stream (multipart when large), boto3 retrying its parts."""
        self.client.upload_fileobj(source, self.bucket, key,
                                   ExtraArgs={"ContentType": content_type},
                                   Config=self._transfer)

    def url(self, bucket: str, key: str) -> str:
        """What a client opens for ``s3://bucket/key``: a URL under the public base, else one
        presigned now for ``COMFYQ_S3_URL_LIFETIME_SECONDS``."""
        if self.config.public_base_url:
            return f"{self.config.public_base_url.rstrip('/')}/{quote(key)}"
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key},
            ExpiresIn=self.config.url_lifetime_seconds)

    def read(self, bucket: str, key: str) -> Any:
        """The object's body, a stream (``iter_chunks``, ``close``)."""
        return self.client.get_object(Bucket=bucket, Key=key)["Body"]

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        deleted = 0
        for run_id in run_ids:
            deleted += self._delete_under(self._run_prefix(run_id))
        return deleted

    def delete_uploads_before(self, cutoff: float) -> int:
        return self._delete_under(self.uploads_prefix, before=cutoff)

    @property
    def uploads_prefix(self) -> str:
        """Where uploaded input files are kept: ``<prefix>/uploads/``."""
        return f"{self.config.prefix}/uploads/" if self.config.prefix else "uploads/"

    def _run_prefix(self, run_id: str) -> str:
        return f"{self.config.prefix}/{run_id}/" if self.config.prefix else f"{run_id}/"

    def _delete_under(self, prefix: str, before: float | None = None) -> int:
        """Delete the objects under ``prefix`` (only those last written before ``before``)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        keys = [entry["Key"] for page in pages for entry in page.get("Contents", [])
                if before is None or entry["LastModified"].timestamp() < before]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + _DELETE_BATCH]]
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": batch, "Quiet": True})
        return len(keys)


def parse_s3_url(url: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of an ``s3://bucket/key`` URL; None for any other URL."""
    # Not urlsplit: a key may hold '?' or '#', which are plain characters in S3.
    bucket, slash, key = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket or not slash or not key:
        return None
    return bucket, key


def _worth_retrying(error: Exception) -> bool:
    """Network trouble and server errors are; a refusal (no such bucket, access denied) is not."""
    from botocore.exceptions import ClientError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or status in (408, 429)
        cause = cause.__cause__ or cause.__context__
    return True
