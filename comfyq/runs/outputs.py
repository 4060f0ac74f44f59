"""The files a run produced, and fetching them into a local folder (``comfyq outputs``).

Output records list media under their kind (``images``, ``gifs``, ``files``...), each with a
``url``: with S3 storage a presigned (or public) URL of the object, signed as the record is read
(:mod:`comfyq.storage`); with local storage ``file://`` when the outputs folder is not served
(the worker's local path, reachable from this host only if it shares that disk), else
``http(s)://`` under ``COMFYQ_OUTPUT_URL_BASE``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests

from comfyq.errors import ComfyqError
from comfyq.models import WorkflowRunOutputModel

#: Seconds to wait for an output server to connect or send the next bytes.
DOWNLOAD_TIMEOUT_SECONDS = 30.0
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    """One file of a run's outputs."""

    node_id: str | None
    kind: str
    filename: str
    subfolder: str
    url: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_file_record(item: Any) -> bool:
    """Whether an output entry names a file (ComfyUI's ``{filename, subfolder, type}``)."""
    return isinstance(item, dict) and bool(item.get("filename"))


def file_records(outputs: Iterable[WorkflowRunOutputModel]
                 ) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    """``(node_id, kind, record)`` of every file the outputs name, in node then list order."""
    for output in outputs:
        for kind, items in output.data.items():
            if isinstance(items, list):
                for item in filter(is_file_record, items):
                    yield output.node_id, kind, item


def output_files(outputs: Iterable[WorkflowRunOutputModel]) -> list[OutputFile]:
    """Every file named in the outputs with a URL to fetch it from, in node then list order."""
    return [OutputFile(node_id, kind, str(item["filename"]), str(item.get("subfolder") or ""),
                       str(item["url"]))
            for node_id, kind, item in file_records(outputs) if item.get("url")]


def _local_path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path))


def _copy_local(file: OutputFile, target: Path) -> None:
    source = _local_path(file.url)
    if not source.is_file():
        raise ComfyqError(f"{file.filename}: {source} is not on this host (set "
                          "COMFYQ_OUTPUT_URL_BASE to serve the outputs folder over HTTP)")
    shutil.copyfile(source, target)


def _fetch_http(file: OutputFile, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    try:
        with requests.get(file.url, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            if response.status_code != 200:
                raise ComfyqError(f"{file.filename}: {file.url} answered HTTP "
                                  f"{response.status_code}")
            with partial.open("wb") as sink:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    sink.write(chunk)
    except requests.RequestException as error:
        partial.unlink(missing_ok=True)
        raise ComfyqError(f"{file.filename}: could not download {file.url} ({error})") from None
    partial.replace(target)


def _target_names(files: list[OutputFile]) -> list[str]:
    """A distinct plain file name for each file (node id prefixed when two names collide)."""
    names: list[str] = []
    for file in files:
        name = Path(file.filename).name
        if name in names:
            name = f"{file.node_id}-{name}"
        names.append(name)
    return names


def download_outputs(files: list[OutputFile], directory: Path) -> list[Path]:
    """Copy (``file://``) or download (``http(s)://``) each file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file, name in zip(files, _target_names(files)):
        target = directory / name
        scheme = urlsplit(file.url).scheme
        if scheme == "file":
            _copy_local(file, target)
        elif scheme in ("http", "https"):
            _fetch_http(file, target)
        else:
            raise ComfyqError(f"{file.filename}: cannot fetch {scheme or 'scheme-less'} URL "
                              f"{file.url}")
        written.append(target)
    return written
