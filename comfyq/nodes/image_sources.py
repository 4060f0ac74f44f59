"""Loading input images from an http(s) URL or a ``data:image/...;base64,`` URI, with limits.

A URL goes through the webhooks' SSRF guard (the configured bucket's own addresses allowed), as
every input fetched by URL does. A download is refused past :data:`MAX_IMAGE_BYTES` (checked against ``Content-Length`` first,
then while streaming) and abandoned after :data:`FETCH_TIMEOUT_S` seconds in total, so a slow
or huge answer cannot stall or exhaust a worker. Zip archives (ComfyDeploy's image batches) have
their own, larger limit :data:`MAX_ARCHIVE_BYTES`. Every failure is an :class:`ImageSourceError`
that names the source and what went wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import zipfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image, ImageOps, UnidentifiedImageError
from urllib3 import exceptions as urllib3_errors

from comfyq.remote_files.fetch import InputFetchError, input_session

#: Largest image (encoded bytes) accepted from one URL or data URI.
MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: Largest zip archive accepted by ComfyUIDeployExternalImageBatch, and the most bytes its images
#: may decompress to in total.
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
#: Seconds one download may take in total (connecting, waiting and reading).
FETCH_TIMEOUT_S = 30.0
#: File name endings of the images taken out of a zip archive.
ARCHIVE_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

_CHUNK_BYTES = 64 * 1024


class ImageSourceError(ValueError):
    """An input image could not be fetched or decoded; the message says which and why."""


def describe(source: str) -> str:
    """``source`` short enough for an error message (data URIs are cut)."""
    return source if len(source) <= 120 else source[:100] + f"... ({len(source)} characters)"


def is_zip_url(source: str) -> bool:
    return urlsplit(source).path.lower().endswith(".zip")


def read_source(source: str, max_bytes: int | None = None) -> bytes:
    """The bytes behind ``source``: an http(s) URL or a ``data:image/...;base64,`` URI."""
    limit = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    source = source.strip()
    lowered = source.lower()
    if lowered.startswith("data:"):
        return _decode_data_uri(source, limit)
    if lowered.startswith(("http://", "https://")):
        return _download(source, limit)
    raise ImageSourceError(
        f"{describe(source)!r} is neither an http(s) URL nor a data:image/...;base64, URI")


def _decode_data_uri(source: str, limit: int) -> bytes:
    header, comma, payload = source.partition(",")
    media = header[len("data:"):].lower()
    if not comma or not media.startswith("image/") or not media.endswith(";base64"):
        raise ImageSourceError(
            f"data URI {describe(source)!r}: expected 'data:image/<type>;base64,<data>'")
    if len(payload) * 3 // 4 > limit + 2:
        raise ImageSourceError(
            f"data URI {describe(source)!r}: the image is over the limit of {limit} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageSourceError(f"data URI {describe(source)!r}: bad base64 ({error})") from None
    if len(data) > limit:
        raise ImageSourceError(
            f"data URI {describe(source)!r}: the image is over the limit of {limit} bytes")
    return data


def _download(url: str, limit: int) -> bytes:
    timeout = FETCH_TIMEOUT_S
    deadline = time.monotonic() + timeout
    try:
        session = input_session(url)
    except InputFetchError as error:
        raise ImageSourceError(str(error)) from None
    try:
        with session.get(url, stream=True, timeout=(timeout, timeout)) as response:
            if response.status_code >= 400:
                raise ImageSourceError(
                    f"{describe(url)}: the server answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ImageSourceError(
                    f"{describe(url)}: {declared} bytes is over the limit of {limit} bytes")
            return _read_body(url, response, limit, deadline)
    except requests.RequestException as error:
        # A stalled body surfaces as a ConnectionError wrapping urllib3's read timeout.
        if isinstance(error, requests.Timeout) or "timed out" in str(error).lower():
            raise _too_slow(url) from None
        raise ImageSourceError(f"{describe(url)}: download failed: {error}") from None


def _too_slow(url: str) -> ImageSourceError:
    return ImageSourceError(
        f"{describe(url)}: not downloaded within {FETCH_TIMEOUT_S:g} s (FETCH_TIMEOUT_S)")


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: each piece after at most one wait for the network.

    ``iter_content`` fills whole chunks, so a body trickling in byte by byte would never give
    the deadline check a turn; urllib3's ``read1`` returns what one read brought.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(_CHUNK_BYTES)
        return
    while chunk := read1(_CHUNK_BYTES, decode_content=True):
        yield chunk


def _read_body(url: str, response: requests.Response, limit: int, deadline: float) -> bytes:
    body = bytearray()
    try:
        for chunk in _chunks(response):
            body += chunk
            if len(body) > limit:
                raise ImageSourceError(f"{describe(url)}: over the limit of {limit} bytes")
            if time.monotonic() > deadline:
                raise _too_slow(url)
    except urllib3_errors.TimeoutError:
        raise _too_slow(url) from None
    except urllib3_errors.HTTPError as error:
        raise ImageSourceError(f"{describe(url)}: download failed: {error}") from None
    return bytes(body)


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Encoded image bytes as an RGB IMAGE batch of one ``[1, H, W, 3]`` (EXIF rotation applied)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            upright = ImageOps.exif_transpose(picture)
            rgb = upright.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise ImageSourceError(f"{describe(source)}: not a readable image ({error})") from None
    return (np.asarray(rgb, dtype=np.float32) / np.float32(255))[None]


def load_image(source: str) -> np.ndarray:
    """Fetch and decode one image source as ``[1, H, W, 3]``."""
    return decode_image(read_source(source), source)


def load_archive_images(source: str) -> list[np.ndarray]:
    """Every png/jpg/webp image in the zip archive at ``source``, in archive order."""
    data = read_source(source, MAX_ARCHIVE_BYTES)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise ImageSourceError(f"{describe(source)}: not a zip archive ({error})") from None
    members = [info for info in archive.infolist()
               if info.filename.lower().endswith(ARCHIVE_IMAGE_SUFFIXES) and not info.is_dir()]
    if sum(info.file_size for info in members) > MAX_ARCHIVE_BYTES:
        raise ImageSourceError(
            f"{describe(source)}: its images unpack to more than {MAX_ARCHIVE_BYTES} bytes")
    images = []
    for info in members:
        with archive.open(info) as member:
            content = member.read(MAX_ARCHIVE_BYTES + 1)
        images.append(decode_image(content, f"{source}#{info.filename}"))
    return images
