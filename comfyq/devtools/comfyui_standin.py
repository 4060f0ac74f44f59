"""A stand-in ComfyUI server: ComfyUI 0.3.64's HTTP and websocket protocol on loopback.

A real aiohttp server, not a patched client. It validates prompts with
:func:`comfyq.catalog.validation.validate_prompt` against the catalog of comfyq's built-in nodes
plus its own (``LoadImage`` and the fault injectors of :mod:`comfyq.devtools.standin_nodes`), and
executes them one at a time with comfyq's in-process executor (:mod:`.standin_queue`). The answer
shapes and event orders follow the transcripts recorded from a real ComfyUI
(``tests/data/comfyui_transcripts``): ``POST /prompt`` 200 and 400 bodies (a prompt with some
valid outputs is accepted with the bad ones in ``node_errors`` and only the good ones run),
``/history``, ``/view``, ``/object_info``, ``/queue`` (GET, POST delete/clear), ``/interrupt``
(a ``prompt_id`` that is not running is ignored), ``/upload/image``, ``/system_stats``, and
``/ws?clientId=``. Every route also answers under ``/api``.

Fault knobs, besides the fault nodes: ``--response-delay`` (every HTTP answer waits that long)
and ``POST /standin/faults {"response_delay_seconds"}``, ``POST /standin/drop_websockets
{"refuse_seconds"}``, ``--hide-class`` (leave a class out, e.g. to play a server without
ComfyDeploy's nodes).

Run it: ``python -m comfyq.devtools.comfyui_standin --port 8190 [--root DIR]``; ComfyUI's own
``--listen``, ``--output-directory``, ``--input-directory`` and ``--temp-directory`` work too,
so a ``main.py`` that calls :func:`main` stands in for a ComfyUI checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import ipaddress
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from comfyq import graph as graph_structure
from comfyq.catalog.object_info import build_catalog
from comfyq.catalog.validation import PromptValidationError, validate_prompt
from comfyq.devtools.standin_nodes import StandinServices, standin_node_classes
from comfyq.devtools.standin_queue import EVERYONE, PromptQueue, QueuedPrompt

logger = logging.getLogger(__name__)

#: The ComfyUI version whose protocol the stand-in speaks.
COMFYUI_VERSION = "0.3.64"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _empty(status: int = 200) -> web.Response:
    """ComfyUI's bodiless answers: no content, no content type."""
    return web.Response(status=status)


def _prompt_error(error_type: str, message: str, details: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, "details": details,
                      "extra_info": {}}, "node_errors": {}}


def _inside(root: Path, *parts: str) -> Path | None:
    """``root/parts...`` when it stays inside ``root``, else None."""
    path = root.joinpath(*[part for part in parts if part]).resolve()
    return path if path.is_relative_to(root.resolve()) else None


class StandinComfyUI:
    """One stand-in server.

    :param root: folder holding ``output/``, ``input/`` and ``temp/`` (created).
    :param port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`url` after start).
    :param hidden_classes: node classes to leave out.
    :param response_delay: seconds every HTTP answer waits (a slow server).
    """

    def __init__(self, root: Path | str, port: int = 0, host: str = "127.0.0.1",
                 hidden_classes: Iterable[str] = (), response_delay: float = 0.0,
                 folders: dict[str, Path] | None = None) -> None:
        _require_loopback(host)
        self.root = Path(root)
        given = folders or {}
        self.dirs = {kind: Path(given.get(kind) or self.root / kind)
                     for kind in ("output", "input", "temp")}
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self.response_delay = response_delay
        self.shutdown = threading.Event()
        services = StandinServices(self.dirs["input"], self.shutdown, self.drop_websockets)
        self.node_classes = self._node_classes(services, set(hidden_classes))
        self.catalog = build_catalog(self.node_classes, self._display_names())
        self.queue = PromptQueue(self.emit, self.node_classes,
                                 (self.dirs["output"], self.dirs["temp"]))
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.refuse_websockets_until = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] | None = None
        self._runner: web.AppRunner | None = None
        self._threads: list[threading.Thread] = []

    @staticmethod
    def _node_classes(services: StandinServices, hidden: set[str]) -> dict[str, type]:
        from comfyq.nodes import NODE_CLASS_MAPPINGS

        classes = {**NODE_CLASS_MAPPINGS, **standin_node_classes(services)}
        return {name: cls for name, cls in classes.items() if name not in hidden}

    @staticmethod
    def _display_names() -> dict[str, str]:
        from comfyq.nodes import NODE_DISPLAY_NAME_MAPPINGS

        return dict(NODE_DISPLAY_NAME_MAPPINGS)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve from background threads; returns once the server answers."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as error:  # noqa: BLE001 (re-raised in start()'s caller)
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_until_complete(self._serve_until_shutdown())
            loop.close()

        self._spawn(serve, "standin-http")
        started.wait()
        if failure:
            raise failure[0]
        self._spawn(self.queue.run_forever, "standin-executor")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.shutdown.set()
        self.queue.stop()
        for thread in self._threads:
            thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.start()
        print(f"stand-in ComfyUI {COMFYUI_VERSION} listening on {self.url}", flush=True)
        stop.wait()
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _open(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        app = web.Application(middlewares=[self._delay_middleware], client_max_size=64 * 2**20)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _serve_until_shutdown(self) -> None:
        sender = asyncio.create_task(self._send_frames())
        while not self.shutdown.is_set():
            await asyncio.sleep(0.05)
        sender.cancel()
        for socket in list(self.sockets.values()):
            await socket.close()
        await self._runner.cleanup()

    # -- websocket frames --------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any], target: str | None) -> None:
        """Queue a frame for ``target`` (a client id, EVERYONE, or None: nobody); thread-safe."""
        if target is None or self.loop is None or self._outbox is None:
            return
        text = json.dumps({"type": event, "data": data})
        try:
            self.loop.call_soon_threadsafe(self._outbox.put_nowait, (target, text))
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    async def _send_frames(self) -> None:
        """Deliver queued frames one at a time, so every client sees them in emit order."""
        assert self._outbox is not None
        while True:
            target, text = await self._outbox.get()
            sockets = list(self.sockets.values()) if target == EVERYONE else [
                socket for socket in (self.sockets.get(target),) if socket is not None]
            for socket in sockets:
                try:
                    await socket.send_str(text)
                except (ConnectionError, RuntimeError):
                    pass  # a closing socket; its handler removes it

    def drop_websockets(self, refuse_seconds: float = 0.0) -> None:
        """Close every websocket now and refuse new ones for ``refuse_seconds``; thread-safe."""
        self.refuse_websockets_until = time.monotonic() + refuse_seconds
        if self.loop is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._close_sockets(), self.loop)
        if threading.current_thread().name != "standin-http":
            closing.result(timeout=10)

    async def _close_sockets(self) -> None:
        sockets, self.sockets = list(self.sockets.values()), {}
        for socket in sockets:
            await socket.close()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.refuse_websockets_until:
            return _empty(503)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = socket
        await socket.send_str(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": self.queue.remaining()}}, "sid": sid}}))
        try:
            async for _ in socket:
                pass  # ComfyUI reads and ignores what clients send
        finally:
            if self.sockets.get(sid) is socket:
                del self.sockets[sid]
        return socket

    # -- HTTP ------------------------------------------------------------------------------------

    @web.middleware
    async def _delay_middleware(self, request: web.Request, handler: Handler
                                ) -> web.StreamResponse:
        if self.response_delay > 0 and not request.path.startswith("/standin/"):
            await asyncio.sleep(self.response_delay)
        return await handler(request)

    def _add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/ws", self._websocket),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_entry),
            ("POST", "/history", self._post_history),
            ("GET", "/view", self._view),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_entry),
            ("GET", "/system_stats", self._system_stats),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_post("/standin/faults", self._post_faults)
        app.router.add_post("/standin/drop_websockets", self._post_drop_websockets)

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            return _json(_prompt_error("invalid_prompt", "Invalid JSON body", ""), 400)
        number = self.queue.next_number()
        if "number" in body:
            number = body["number"]
        elif body.get("front"):
            number = -number
        if "prompt" not in body:
            return _json(_prompt_error("no_prompt", "No prompt provided", "No prompt provided"),
                         400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        outputs, node_errors = self._outputs_to_run(prompt)
        if not outputs:
            return _json(node_errors, 400)
        self.queue.put(QueuedPrompt(number, prompt_id, prompt, extra_data, outputs))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _outputs_to_run(self, prompt: Any) -> tuple[list[str], dict[str, Any]]:
        """``(outputs that can run, node_errors)``; no outputs means the 400 body instead.

        comfyq's validation refuses a prompt with any bad output; ComfyUI runs the good ones
        and lists the bad ones, so the good outputs are those no error's ``dependent_outputs``
        names. Classes' own ``VALIDATE_INPUTS`` (LoadImage's file check) run here too, as in
        ComfyUI.
        """
        error = dict(_OUTPUTS_FAILED)
        node_errors: dict[str, Any] = {}
        try:
            validate_prompt(prompt, self.catalog)
        except PromptValidationError as rejection:
            if rejection.error_type != "prompt_outputs_failed_validation":
                return [], rejection.body
            error, node_errors = rejection.body["error"], dict(rejection.node_errors)
        outputs = self._output_nodes(prompt)
        for node_id, errors in custom_validation_errors(prompt, self.node_classes, outputs,
                                                        skip=set(node_errors)).items():
            node_errors[node_id] = errors
        failed = {output for errors in node_errors.values()
                  for output in errors.get("dependent_outputs", [])}
        good = [node_id for node_id in outputs if node_id not in failed]
        if not good:
            return [], {"error": error, "node_errors": node_errors}
        return good, node_errors

    def _output_nodes(self, prompt: dict[str, Any]) -> list[str]:
        return [node_id for node_id, node in prompt.items()
                if self.catalog[node["class_type"]].get("output_node")]

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return _json({"exec_info": {"queue_remaining": self.queue.remaining()}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        return _json(self.queue.snapshot())

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await self._json_body(request) or {}
        if body.get("clear"):
            self.queue.clear()
        if "delete" in body:
            self.queue.delete([str(prompt_id) for prompt_id in body["delete"]])
        return _empty()

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        self.queue.interrupt(prompt_id)
        return _empty()

    async def _get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        return _json(self.queue.history_items(int(max_items) if max_items else None))

    async def _get_history_entry(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history_items().get(prompt_id)
        return _json({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await self._json_body(request) or {}
        with self.queue._changed:
            if body.get("clear"):
                self.queue.history.clear()
            for prompt_id in body.get("delete", []):
                self.queue.history.pop(prompt_id, None)
        return _empty()

    async def _view(self, request: web.Request) -> web.StreamResponse:
        root = self.dirs.get(request.query.get("type", "output"))
        filename = request.query.get("filename", "")
        path = _inside(root, request.query.get("subfolder", ""), filename) if root else None
        if not filename or path is None or not path.is_file():
            return _empty(404)
        return web.FileResponse(path)

    async def _upload_image(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form.get("image")
        kind = str(form.get("type") or "input")
        root = self.dirs.get(kind)
        if not isinstance(image, web.FileField) or not image.filename or root is None:
            return _empty(400)
        subfolder = str(form.get("subfolder", ""))
        folder = _inside(root, subfolder)
        if folder is None:
            return _empty(400)
        data = image.file.read()
        overwrite = str(form.get("overwrite", "")) in ("true", "1")
        name = _upload_name(folder, image.filename, data, overwrite)
        if name is None:
            return _empty(400)
        return _json({"name": name, "subfolder": subfolder, "type": kind})

    async def _object_info(self, request: web.Request) -> web.Response:
        return _json(self.catalog)

    async def _object_info_entry(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return _json({name: self.catalog[name]} if name in self.catalog else {})

    async def _system_stats(self, request: web.Request) -> web.Response:
        return _json({"system": {
            "os": os.name, "comfyui_version": COMFYUI_VERSION,
            "python_version": sys.version, "embedded_python": False, "argv": sys.argv,
            "comfyq_standin": True, "platform": platform.platform()},
            "devices": [{"name": "cpu", "type": "cpu", "index": None}]})

    async def _post_faults(self, request: web.Request) -> web.Response:
        body = await self._json_body(request) or {}
        if "response_delay_seconds" in body:
            self.response_delay = float(body["response_delay_seconds"])
        return _json({"response_delay_seconds": self.response_delay})

    async def _post_drop_websockets(self, request: web.Request) -> web.Response:
        body = await self._json_body(request) or {}
        self.refuse_websockets_until = time.monotonic() + float(body.get("refuse_seconds", 0))
        await self._close_sockets()
        return _empty()


_OUTPUTS_FAILED = {"type": "prompt_outputs_failed_validation",
                   "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}


def custom_validation_errors(prompt: dict[str, Any], node_classes: dict[str, type],
                             outputs: list[str], skip: set[str]) -> dict[str, dict[str, Any]]:
    """``node_errors`` entries from the ``VALIDATE_INPUTS`` of the classes that define one.

    Like ComfyUI, only literal inputs named in the method's signature are passed, and a result
    other than True is a ``custom_validation_failed`` error on each of those inputs.
    """
    found: dict[str, dict[str, Any]] = {}
    for node_id in graph_structure.ancestors_and_self(prompt, outputs):
        node_class = node_classes.get(prompt[node_id]["class_type"])
        validate = getattr(node_class, "VALIDATE_INPUTS", None)
        if node_id in skip or validate is None:
            continue
        names = inspect.signature(validate).parameters
        literals = {name: value for name, value in prompt[node_id].get("inputs", {}).items()
                    if name in names and graph_structure.as_link(value) is None}
        result = validate(**literals)
        if result is True:
            continue
        found[node_id] = {
            "errors": [{"type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": name if result is False else f"{name} - {result}",
                        "extra_info": {"input_name": name}} for name in literals],
            "dependent_outputs": [output for output in outputs if node_id in
                                  graph_structure.ancestors_and_self(prompt, [output])],
            "class_type": prompt[node_id]["class_type"]}
    return found


def _upload_name(folder: Path, filename: str, data: bytes, overwrite: bool) -> str | None:
    """Store an upload the way ComfyUI does; returns the name it was stored under.

    The same name with the same bytes is kept as it is; the same name with other bytes gets
    ``"<stem> (1)<suffix>"`` (then 2, 3, ...) unless ``overwrite`` is set.
    """
    target = _inside(folder, filename)
    if target is None or target.parent != folder.resolve():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(filename)
    name, counter = filename, 1
    while not overwrite and (folder / name).exists():
        if (folder / name).read_bytes() == data:
            return name
        name = f"{stem} ({counter}){suffix}"
        counter += 1
    (folder / name).write_bytes(data)
    return name


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"--listen {host}: the stand-in serves on loopback only (127.0.0.1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m comfyq.devtools.comfyui_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--listen", default="127.0.0.1", help="loopback address to serve on")
    parser.add_argument("--root", help="folder for output/, input/ and temp/ (default: a new "
                                       "temporary folder)")
    parser.add_argument("--output-directory", help="ComfyUI's option: the output folder")
    parser.add_argument("--input-directory", help="ComfyUI's option: the input folder")
    parser.add_argument("--temp-directory", help="ComfyUI's option: the temp folder's parent")
    parser.add_argument("--hide-class", action="append", default=[], metavar="CLASS",
                        help="leave this node class out (repeatable)")
    parser.add_argument("--response-delay", type=float, default=0.0, metavar="SECONDS",
                        help="every HTTP answer waits this long")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # ComfyUI's other options (--cpu, --cuda-device, ...) are accepted and ignored, so a
    # supervisor can launch the stand-in exactly as it launches ComfyUI.
    args, ignored = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if ignored:
        logger.info("ignoring ComfyUI options the stand-in does not need: %s", " ".join(ignored))
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="comfyui-standin-"))
    folders = {"output": args.output_directory, "input": args.input_directory,
               "temp": args.temp_directory and Path(args.temp_directory) / "temp"}
    server = StandinComfyUI(root, port=args.port, host=args.listen,
                            hidden_classes=args.hide_class, response_delay=args.response_delay,
                            folders={kind: Path(path) for kind, path in folders.items() if path})
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
