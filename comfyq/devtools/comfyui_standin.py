"""A stand-in ComfyUI server: ComfyUI 0.3.64's HTTP and websocket protocol on loopback.

A real aiohttp server, not a patched client. It answers ``POST /prompt`` by ComfyUI's rules
(:mod:`.standin_prompts`: a prompt with some valid outputs is accepted with the bad ones in
``node_errors`` and only the good ones run) against the catalog of comfyq's built-in nodes plus
its own (``LoadImage`` and the fault injectors of :mod:`comfyq.devtools.standin_nodes`), and
executes prompts one at a time with comfyq's in-process executor (:mod:`.standin_queue`). The
answer shapes and event orders follow the transcripts recorded from a real ComfyUI
(``tests/data/comfyui_transcripts``): ``POST /prompt`` 200 and 400 bodies, ``/history``,
``/view``, ``/object_info``, ``/queue`` (GET, POST delete/clear), ``/interrupt`` (a
``prompt_id`` that is not running is ignored), ``/upload/image``, ``/system_stats``, and
``/ws?clientId=`` (:mod:`.standin_websockets`). Every route also answers under ``/api``.

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
import ipaddress
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from comfyq.catalog.object_info import build_catalog
from comfyq.devtools.standin_nodes import StandinServices, standin_node_classes
from comfyq.devtools.standin_prompts import answer_prompt
from comfyq.devtools.standin_queue import PromptQueue
from comfyq.devtools.standin_websockets import HTTP_THREAD_NAME, WebsocketHub

logger = logging.getLogger(__name__)

#: The ComfyUI version whose protocol the stand-in speaks.
COMFYUI_VERSION = "0.3.64"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _empty(status: int = 200) -> web.Response:
    """ComfyUI's bodiless answers: no content, no content type."""
    return web.Response(status=status)


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
        self.websockets = WebsocketHub(lambda: self.queue.remaining())
        services = StandinServices(self.dirs["input"], self.shutdown, self.websockets.drop)
        self.node_classes = self._node_classes(services, set(hidden_classes))
        self.catalog = build_catalog(self.node_classes, self._display_names())
        self.queue = PromptQueue(self.websockets.emit, self.node_classes,
                                 (self.dirs["output"], self.dirs["temp"]))
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

        self._spawn(serve, HTTP_THREAD_NAME)
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
        self.websockets.open()
        app = web.Application(middlewares=[self._delay_middleware], client_max_size=64 * 2**20)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _serve_until_shutdown(self) -> None:
        sender = asyncio.create_task(self.websockets.send_frames())
        while not self.shutdown.is_set():
            await asyncio.sleep(0.05)
        sender.cancel()
        await self.websockets.close_all()
        await self._runner.cleanup()

    # -- HTTP ------------------------------------------------------------------------------------

    @web.middleware
    async def _delay_middleware(self, request: web.Request, handler: Handler
                                ) -> web.StreamResponse:
        if self.response_delay > 0 and not request.path.startswith("/standin/"):
            await asyncio.sleep(self.response_delay)
        return await handler(request)

    def _add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/ws", self.websockets.handle),
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
        answer = answer_prompt(await self._json_body(request), self.catalog, self.node_classes,
                               self.queue)
        return _json(answer.body, answer.status)

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
        self.queue.forget(body.get("delete", []), everything=bool(body.get("clear")))
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
        await self.websockets.drop_now(float(body.get("refuse_seconds", 0)))
        return _empty()


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
