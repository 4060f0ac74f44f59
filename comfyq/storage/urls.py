"""Output records as a client reads them: ``s3://`` addresses become URLs it can open.

Records keep the object's address, never a signed URL (it would expire with the record still
there); each read signs afresh. Records of local storage pass through untouched, and boto3 is
never imported for them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from comfyq.settings import Settings, get_settings
from comfyq.storage.s3 import parse_s3_url, s3_storage

logger = logging.getLogger(__name__)


def open_stored(object_url: str, settings: Settings | None = None) -> Any:
    """A stream of the object an ``s3://`` URL names (``iter_chunks``, ``close``).

    :raises KeyError: the URL names no object (not ``s3://``, or no such key).
    """
    location = parse_s3_url(object_url)
    if location is None:
        raise KeyError(object_url)
    storage = s3_storage(settings or get_settings())
    from botocore.exceptions import ClientError

    try:
        return storage.read(*location)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchBucket", "404"):
            raise KeyError(object_url) from None
        raise


def _has_s3_item(outputs: Sequence[Any]) -> bool:
    for output in outputs:
        data = output.get("data") if isinstance(output, dict) else None
        for items in (data or {}).values():
            if isinstance(items, list) and any(
                    isinstance(item, dict) and str(item.get("url", "")).startswith("s3://")
                    for item in items):
                return True
    return False


def readable_outputs(outputs: Sequence[Any], settings: Settings | None = None) -> list[Any]:
    """``outputs`` (records' ``outputs`` field) with each ``s3://`` URL replaced by a presigned
    or public one; the object's address stays in the item as ``object_url``."""
    if not _has_s3_item(outputs):
        return list(outputs)
    storage = s3_storage(settings or get_settings())
    readable = []
    for output in outputs:
        data = {kind: [_readable_item(storage, item) for item in items]
                if isinstance(items, list) else items
                for kind, items in (output.get("data") or {}).items()}
        readable.append({**output, "data": data})
    return readable


def _readable_item(storage: Any, item: Any) -> Any:
    location = parse_s3_url(str(item.get("url", ""))) if isinstance(item, dict) else None
    if location is None:
        return item
    try:
        url = storage.url(*location)
    except Exception as error:  # no credentials here, a bad endpoint: the address is still news
        logger.warning("cannot sign %s: %s", item["url"], error)
        return item
    return {**item, "url": url, "object_url": item["url"]}
