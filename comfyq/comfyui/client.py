"""HTTP client of one ComfyUI server (the routes of ComfyUI 0.3.64 that comfyq drives).

Every failure to get an answer (refused connection, timeout, HTTP 5xx) is a
:class:`ComfyUIUnavailable` naming the server and the request, so callers can tell "the server
is gone" from "the server said no" (:class:`PromptRejected`, :class:`ComfyUIRequestError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from comfyq.errors import ComfyqError

#: Bytes read per chunk when downloading an output file.
_CHUNK_BYTES = 256 * 1024


class ComfyUIUnavailable(ComfyqError):
    """The server did not answer (refused, timed out, or failed with HTTP 5xx)."""


class ComfyUIRequestError(ComfyqError):
    """The server answered a request with an unexpected status or body."""


class PromptRejected(ComfyqError):
    """``POST /prompt`` answered 400; ``body`` is ComfyUI's ``{"error", "node_errors"}``."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        error = body.get("error") or {}
        super().__init__(f"ComfyUI refused the prompt: {error.get('message') or body}")


def websocket_url(base_url: str, client_id: str) -> str:
    """``ws(s)://host:port/ws?clientId=<client_id>`` for an ``http(s)://`` server URL."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={client_id}", ""))


def output_over_limit(filename: str, max_bytes: int) -> ComfyUIRequestError:
    """The error of an output file larger than a worker takes from its server."""
    return ComfyUIRequestError(f"output {filename} is over the limit of {max_bytes} bytes "
                               "(COMFYQ_COMFYUI_MAX_OUTPUT_BYTES)")


class ComfyUIClient:
    """Requests to one server, over one keep-alive session (not thread-safe; one per worker).

    :param base_url: e.g. ``http://127.0.0.1:8188``.
    :param timeout: seconds any one request may take, unless a call gives its own.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"ComfyUI URL {base_url!r}: expected http://host:port")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # ComfyUI is reached directly (loopback or the GPU host's network), never through a
        # proxy; not consulting the proxy environment saves about a millisecond per request.
        self.session.trust_env = False

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url!r})"

    def _request(self, method: str, path: str, timeout: float | None = None,
                 **arguments: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.base_url + path,
                                            timeout=timeout or self.timeout, **arguments)
        except requests.RequestException as error:
            raise ComfyUIUnavailable(
                f"ComfyUI at {self.base_url}: {method} {path} got no answer: {error}") from None
        if response.status_code >= 500:
            raise ComfyUIUnavailable(f"ComfyUI at {self.base_url}: {method} {path} answered "
                                     f"HTTP {response.status_code}")
        return response

    def _json(self, method: str, path: str, timeout: float | None = None,
              **arguments: Any) -> Any:
        response = self._request(method, path, timeout, **arguments)
        if response.status_code != 200:
            raise ComfyUIRequestError(f"ComfyUI at {self.base_url}: {method} {path} answered "
                                      f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError:
            raise ComfyUIRequestError(f"ComfyUI at {self.base_url}: {method} {path} answered "
                                      f"no JSON: {response.text[:300]!r}") from None

    # -- prompts ---------------------------------------------------------------------------------

    def queue_prompt(self, prompt: dict[str, Any], prompt_id: str, client_id: str,
                     extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /prompt``; returns ``{"prompt_id", "number", "node_errors"}``.

        :raises PromptRejected: HTTP 400 (validation failed); ``body`` has the details.
        """
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id,
                "extra_data": extra_data or {}}
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                raise PromptRejected(response.json())
            except ValueError:
                raise PromptRejected({"error": {"type": "bad_request", "message": response.text,
                                                "details": "", "extra_info": {}},
                                      "node_errors": {}}) from None
        if response.status_code != 200:
            raise ComfyUIRequestError(f"ComfyUI at {self.base_url}: POST /prompt answered "
                                      f"HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    def history(self, prompt_id: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while it is not finished (or lost)."""
        answer = self._json("GET", f"/history/{prompt_id}", timeout)
        return answer.get(prompt_id) if isinstance(answer, dict) else None

    def queue(self, timeout: float | None = None) -> dict[str, list[list[Any]]]:
        """``{"queue_running": [...], "queue_pending": [...]}``, items ``[number, id, ...]``."""
        return self._json("GET", "/queue", timeout)

    def delete_from_queue(self, prompt_ids: list[str], timeout: float | None = None) -> None:
        """Remove pending prompts (a running one is not affected)."""
        self._request("POST", "/queue", timeout, json={"delete": prompt_ids})

    def interrupt(self, prompt_id: str | None, timeout: float | None = None) -> None:
        """Interrupt the running prompt if it is ``prompt_id`` (ComfyUI ignores it otherwise)."""
        self._request("POST", "/interrupt", timeout,
                      json={"prompt_id": prompt_id} if prompt_id else {})

    # -- files -----------------------------------------------------------------------------------

    def download(self, item: dict[str, Any], destination: Path, max_bytes: int) -> int:
        """Save the file a ``{"filename", "subfolder", "type"}`` record names; returns its size."""
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                  "type": item.get("type", "output")}
        response = self._request("GET", "/view", params=params, stream=True)
        with response:
            if response.status_code != 200:
                raise ComfyUIRequestError(
                    f"ComfyUI at {self.base_url}: GET /view of {params} answered HTTP "
                    f"{response.status_code}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            try:
                with open(destination, "wb") as file:
                    for chunk in response.iter_content(_CHUNK_BYTES):
                        size += len(chunk)
                        if size > max_bytes:
                            raise output_over_limit(item["filename"], max_bytes)
                        file.write(chunk)
            except requests.RequestException as error:
                raise ComfyUIUnavailable(f"ComfyUI at {self.base_url}: download of "
                                         f"{item['filename']} broke off: {error}") from None
        return size

    def upload_image(self, data: bytes, filename: str, subfolder: str = "",
                     overwrite: bool = True) -> dict[str, str]:
        """``POST /upload/image`` into the input folder; returns ``{"name", "subfolder", "type"}``."""
        form = {"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else ""}
        return self._json("POST", "/upload/image", files={"image": (filename, data)}, data=form)

    # -- the server ------------------------------------------------------------------------------

    def object_info(self, timeout: float | None = None) -> dict[str, Any]:
        """The node catalog (``GET /object_info``)."""
        return self._json("GET", "/object_info", timeout)

    def system_stats(self, timeout: float | None = None) -> dict[str, Any]:
        return self._json("GET", "/system_stats", timeout)

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the server answers ``GET /system_stats`` now."""
        try:
            self.system_stats(timeout)
        except (ComfyUIUnavailable, ComfyUIRequestError):
            return False
        return True
