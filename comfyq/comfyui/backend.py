"""The ComfyUI backend: comfyq runs executed on a ComfyUI server (a ``GraphBackend``).

One run, :class:`PromptRun`: apply the request's inputs; prepare the prompt (output names unique
to the run, external images uploaded when the server cannot fetch them); ``POST /prompt`` with
``prompt_id`` = run id and this worker's ``client_id``; follow the websocket: ``executing``
frames become ``live_status`` and progress, ``progress`` frames per-node progress; on
``execution_success`` then ``executing{node: null}`` (the history is written by then), take the
outputs from ``/history`` and download their files into comfyq's output store.

What can go wrong, and what happens:

* a validation failure (HTTP 400, or 200 with a non-empty ``node_errors``: ComfyUI would run
  only the good outputs) fails the run with ComfyUI's ``node_errors``; an accepted partial
  prompt is withdrawn from the server;
* ``execution_error`` fails the run with the node, its class, the exception and the traceback;
* cancel or time limit (``context.check_cancelled()`` raises, checked every
  :data:`POLL_SECONDS`): the prompt is deleted from the queue and interrupted by id; the run
  ends once ComfyUI confirms (interrupted, finished, or no longer queued), and after
  ``interrupt_grace`` seconds regardless, since a node without progress callbacks cannot be
  interrupted; a server still stuck then is restarted if comfyq launched it (``.restarts``);
* the websocket breaks: reconnect, then learn the prompt's state from ``/queue`` and
  ``/history`` (in that order: ComfyUI moves a prompt from the queue to the history
  atomically, so it is always seen in one of them);
* the server dies or stops answering (a broken socket, or a ``/queue`` probe after
  ``probe_seconds`` without news that gets no answer): wait up to ``unavailable_seconds`` for it
  to answer again; a prompt it no longer knows (a restart forgets everything) is posted once
  more when ``retry_lost_prompt`` allows, else the run fails saying why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyq import graph as graph_structure
from comfyq.comfyui.client import (
    ComfyUIClient,
    ComfyUIRequestError,
    ComfyUIUnavailable,
    PromptRejected,
    websocket_url,
)
from comfyq.comfyui.errors import (
    ComfyUIRunError,
    execution_error,
    interrupted_elsewhere,
    server_lost,
    validation_error,
)
from comfyq.comfyui.events import EventStream, EventStreamLost
from comfyq.comfyui.outputs import OutputFetcher
from comfyq.comfyui.prepare import PreparedPrompt, prepare_prompt
from comfyq.comfyui.restarts import StuckServerRestarts
from comfyq.run_context import RunCancelled, RunContext

logger = logging.getLogger(__name__)

#: Longest wait for a frame before checking for cancellation (and the probe's clock).
POLL_SECONDS = 0.25
#: Pause between attempts to reach a server that does not answer.
RECONNECT_PAUSE_SECONDS = 0.5
#: Longest timeout of the quick requests made while stopping, probing or recovering.
QUICK_TIMEOUT_SECONDS = 5.0
#: How long the history may lag behind ``executing{node: null}`` (it should not at all).
HISTORY_WAIT_SECONDS = 2.0

NodeStarted = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class ComfyUIOptions:
    """How a worker drives its ComfyUI server.

    :param url: the server, e.g. ``http://127.0.0.1:8188``.
    :param request_timeout: seconds one HTTP request may take.
    :param interrupt_grace: after cancel/timeout, how long to wait for ComfyUI to confirm.
    :param unavailable_seconds: how long a run waits for a server that does not answer.
    :param retry_lost_prompt: post a prompt again (once) when a restarted server lost it.
    :param probe_seconds: without news of the prompt this long, ask ``/queue`` about it.
    :param max_output_bytes: the largest output file downloaded.
    :param restart_request: the file that asks the supervisor to restart a launched server
        (None: the server is attached by URL and cannot be restarted).
    :param startup_seconds: how long a run waits for a restarted server to answer.
    :param output_dir: the server's output folder, when it is on this host (files are taken
        from it rather than downloaded).
    """

    url: str
    request_timeout: float = 30.0
    interrupt_grace: float = 10.0
    unavailable_seconds: float = 60.0
    retry_lost_prompt: bool = True
    probe_seconds: float = 5.0
    max_output_bytes: int = 4 * 2**30
    restart_request: Path | None = None
    startup_seconds: float = 600.0
    output_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any, url: str) -> ComfyUIOptions:
        return cls(url=url, request_timeout=settings.comfyui_request_timeout_seconds,
                   interrupt_grace=settings.comfyui_interrupt_grace_seconds,
                   unavailable_seconds=settings.comfyui_unavailable_seconds,
                   retry_lost_prompt=settings.comfyui_retry_lost_prompt,
                   probe_seconds=settings.comfyui_probe_seconds,
                   max_output_bytes=settings.comfyui_max_output_bytes,
                   restart_request=settings.comfyui_restart_request,
                   startup_seconds=settings.comfyui_startup_seconds,
                   output_dir=settings.comfyui_output_dir)


class ComfyUIBackend:
    """Executes runs on one ComfyUI server; one per worker process, one run at a time.

    :param options: the server and how to drive it.
    :param apply_inputs: ``(graph, inputs) -> graph``; ComfyDeploy's rules by default.
    """

    def __init__(self, options: ComfyUIOptions,
                 apply_inputs: Callable[[dict, dict], dict] | None = None) -> None:
        if apply_inputs is None:
            from comfyq.inputs import apply_inputs
        self.apply_inputs = apply_inputs
        self.options = options
        self.client = ComfyUIClient(options.url, options.request_timeout)
        self.client_id = f"comfyq-{uuid.uuid4().hex}"
        self.events = EventStream(websocket_url(options.url, self.client_id))
        self._catalog: dict[str, Any] | None = None
        self._history_client: ComfyUIClient | None = None
        self._history_worker: ThreadPoolExecutor | None = None
        self.restarts = StuckServerRestarts(options)

    def __repr__(self) -> str:
        return f"ComfyUIBackend({self.options.url!r})"

    def history_async(self, prompt_id: str) -> Future[dict[str, Any]]:
        """The history entry of a finished prompt, fetched on another connection."""
        if self._history_worker is None:
            self._history_client = ComfyUIClient(self.options.url, self.options.request_timeout)
            self._history_worker = ThreadPoolExecutor(1, thread_name_prefix="comfyui-history")
        return self._history_worker.submit(self._finished_entry, prompt_id)

    def _finished_entry(self, prompt_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + HISTORY_WAIT_SECONDS
        while (entry := self._history_client.history(prompt_id)) is None:
            if time.monotonic() > deadline:
                raise ComfyUIRunError("", "", "ComfyUIProtocolError",
                                      "execution_success was sent but /history has no entry")
            time.sleep(0.02)
        return entry

    def catalog(self) -> dict[str, Any]:
        """The server's node catalog (``/object_info``), fetched once."""
        if self._catalog is None:
            self._catalog = self.client.object_info()
        return self._catalog

    def execute(self, graph: dict[str, Any], inputs: Mapping[str, Any] | None,
                context: RunContext, on_node_started: NodeStarted) -> dict[str, dict]:
        prepared_graph = self.apply_inputs(graph, dict(inputs or {}))
        run = PromptRun(self, context, on_node_started, user_nodes=set(graph))
        try:
            return run.execute(prepared_graph)
        except (ComfyUIUnavailable, ComfyUIRequestError) as error:
            raise ComfyUIRunError(run.progress.last_node, run.class_of(run.progress.last_node),
                                  type(error).__name__, str(error)) from error

    def close(self) -> None:
        self.events.close()
        if self._history_worker is not None:
            self._history_worker.shutdown(wait=False)


@dataclass
class NodeProgress:
    """How far the prompt got: nodes started of those ComfyUI will execute."""

    total: int = 1
    started: int = 0
    last_node: str = ""

    def restart(self, to_run: set[str]) -> None:
        self.total, self.started, self.last_node = max(len(to_run), 1), 0, ""


class PromptRun:
    """One run's prompt on the server, from posting it to its outputs."""

    def __init__(self, backend: ComfyUIBackend, context: RunContext,
                 on_node_started: NodeStarted, user_nodes: set[str]) -> None:
        self.backend = backend
        self.client = backend.client
        self.events = backend.events
        self.options = backend.options
        self.context = context
        self.prompt_id = context.run_id
        self.on_node_started = on_node_started
        self.user_nodes = user_nodes
        self.prepared = PreparedPrompt({})
        self.progress = NodeProgress()
        self.to_run: set[str] = set()
        self.accepted = False
        self.finished = False
        self.succeeded = False
        self.history: dict[str, Any] | None = None
        self.executed_outputs: dict[str, dict[str, Any]] = {}
        self.retries_left = 1 if self.options.retry_lost_prompt else 0
        #: Set once the event stream broke: its ``executed`` events may then miss outputs.
        self.missed_events = False
        self.quick_timeout = min(QUICK_TIMEOUT_SECONDS, self.options.request_timeout)
        self._last_check = self._last_heard = time.monotonic()

    def class_of(self, node_id: str) -> str:
        return self.prepared.class_of(node_id) if node_id else ""

    # -- the run -------------------------------------------------------------------------------

    def execute(self, graph: dict[str, Any]) -> dict[str, dict]:
        try:
            self._wait_for_server()
            self.prepared = prepare_prompt(graph, self.prompt_id, self.backend.catalog(),
                                           self._upload)
            self.to_run = self._nodes_to_run()
            self._submit()
            self._follow()
            return self._outputs()
        except RunCancelled as stopped:
            if not self._stop_on_server():
                stopped.add_note(self.backend.restarts.restart(self.prompt_id))
                self.events.close()
            raise
        except BaseException:
            self._withdraw()
            raise

    def _nodes_to_run(self) -> set[str]:
        catalog = self.backend.catalog()
        outputs = [node_id for node_id, node in self.prepared.prompt.items()
                   if catalog.get(node.get("class_type"), {}).get("output_node")]
        return graph_structure.ancestors_and_self(self.prepared.prompt, outputs)

    def _upload(self, data: bytes, filename: str, subfolder: str) -> str:
        stored = self.client.upload_image(data, filename, subfolder)
        return "/".join(part for part in (stored.get("subfolder"), stored["name"]) if part)

    def _wait_for_server(self) -> None:
        """Connect the websocket (before posting, so no event is missed), waiting if need be."""
        self.events.drain()
        if self.events.connected:
            return
        deadline = time.monotonic() + self.backend.restarts.wait_before_next_prompt(
            self.context.check_cancelled, RECONNECT_PAUSE_SECONDS)
        while True:
            try:
                self.events.connect(self.quick_timeout)
                return
            except EventStreamLost as error:
                self._pause_or_give_up(deadline, error)

    def _pause_or_give_up(self, deadline: float, error: Exception) -> None:
        if time.monotonic() >= deadline:
            raise server_lost(self.options.url, f"no answer for "
                              f"{self.options.unavailable_seconds:g} s (last: {error})",
                              self.progress.last_node, self.class_of(self.progress.last_node))
        self.context.check_cancelled()
        time.sleep(RECONNECT_PAUSE_SECONDS)

    def _submit(self) -> None:
        self.progress.restart(self.to_run)
        self.succeeded = False
        self.executed_outputs = {}
        try:
            answer = self.client.queue_prompt(self.prepared.prompt, self.prompt_id,
                                              self.backend.client_id)
        except PromptRejected as rejection:
            raise validation_error(rejection.body, self.prepared.prompt) from None
        except ComfyUIUnavailable as error:
            logger.warning("run %s: posting the prompt got no answer (%s); recovering",
                           self.prompt_id, error)
            self._recover()
            return
        self.accepted = True
        self._last_heard = time.monotonic()
        if answer.get("node_errors"):
            raise validation_error(answer, self.prepared.prompt)

    # -- following the events -----------------------------------------------------------------

    def _follow(self) -> None:
        while not self.finished:
            try:
                frame = self.events.next(POLL_SECONDS)
            except EventStreamLost as error:
                logger.warning("run %s: %s; recovering", self.prompt_id, error)
                self._recover()
                continue
            if frame is not None:
                self._handle(frame)
            self._checkpoint()

    def _checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_check >= POLL_SECONDS:
            self._last_check = now
            self.context.check_cancelled()
        if not self.finished and now - self._last_heard >= self.options.probe_seconds:
            self._probe()

    def _handle(self, frame: Mapping[str, Any]) -> None:
        data = frame.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
            return
        self._last_heard = time.monotonic()
        kind = frame.get("type")
        if kind == "executing":
            self._executing(data.get("node"))
        elif kind == "progress":
            self.context.report_progress(float(data.get("value", 0)), float(data.get("max", 0)),
                                         data.get("node"))
        elif kind == "execution_cached":
            cached = [str(node) for node in data.get("nodes") or []]
            self.progress.total = max(len(self.to_run - set(cached)), 1)
            # The run's record names the user's nodes the server's cache answered.
            shown = [node for node in cached
                     if node in self.user_nodes and node not in self.prepared.helper_nodes]
            self.context.cached_nodes.extend(shown)
            self.context.report_cached(shown)
        elif kind == "executed":
            if isinstance(data.get("output"), dict):
                self.executed_outputs[str(data.get("node"))] = data["output"]
        elif kind == "execution_success":
            self.succeeded = True
        elif kind == "execution_error":
            self.finished = True
            raise execution_error(data)
        elif kind == "execution_interrupted":
            self.finished = True
            raise interrupted_elsewhere(data)

    def _executing(self, node_id: str | None) -> None:
        if node_id is None:
            self._prompt_done()
            return
        index = self.progress.started
        self.progress.started += 1
        self.progress.last_node = node_id
        self.context.current_node = node_id
        if node_id not in self.prepared.helper_nodes:
            self.on_node_started(node_id, self.class_of(node_id), index, self.progress.total)

    def _prompt_done(self) -> None:
        """``executing{node: null}``: the prompt is over and its history written."""
        if self.succeeded:
            self.finished = True
            return
        entry = self.client.history(self.prompt_id)
        if entry is None:
            self._lost()
        else:
            self._finish_from_history(entry)

    # -- learning the state over HTTP ------------------------------------------------------------

    def _where(self) -> tuple[str, dict[str, Any] | None]:
        """``("running"|"pending"|"finished"|"missing", history entry)``."""
        queue = self.client.queue(self.quick_timeout)
        for state in ("running", "pending"):
            if any(item[1] == self.prompt_id for item in queue.get(f"queue_{state}") or []):
                return state, None
        entry = self.client.history(self.prompt_id, self.quick_timeout)
        return ("finished", entry) if entry is not None else ("missing", None)

    def _probe(self) -> None:
        self._last_heard = time.monotonic()
        try:
            where, entry = self._where()
        except ComfyUIUnavailable as error:
            logger.warning("run %s: %s; recovering", self.prompt_id, error)
            self._recover()
            return
        self._settle(where, entry)

    def _settle(self, where: str, entry: dict[str, Any] | None) -> None:
        if where in ("running", "pending"):
            self.accepted = True
        elif where == "finished":
            self._finish_from_history(entry or {})
        else:
            self._lost()

    def _recover(self) -> None:
        """Reconnect and find out what became of the prompt; waits for a silent server."""
        self.missed_events = True
        self.events.close()
        deadline = time.monotonic() + self.options.unavailable_seconds
        while True:
            try:
                self.events.connect(self.quick_timeout)
                where, entry = self._where()
                break
            except (EventStreamLost, ComfyUIUnavailable) as error:
                self._pause_or_give_up(deadline, error)
        logger.info("run %s: ComfyUI answers again; the prompt is %s", self.prompt_id, where)
        self._last_heard = time.monotonic()
        self._settle(where, entry)

    def _finish_from_history(self, entry: Mapping[str, Any]) -> None:
        self.finished = True
        status = entry.get("status") or {}
        if status.get("status_str") == "success":
            self.succeeded = True
            self.history = dict(entry)
            return
        for event, data in reversed(status.get("messages") or []):
            if event == "execution_error":
                raise execution_error(data)
            if event == "execution_interrupted":
                raise interrupted_elsewhere(data)
        raise ComfyUIRunError(self.progress.last_node, self.class_of(self.progress.last_node),
                              "ComfyUIError", f"the prompt ended without success: {status}")

    def _lost(self) -> None:
        """The server does not know the prompt: never taken, or forgotten by a restart."""
        if not self.accepted:
            self._submit()
            return
        if self.retries_left > 0:
            self.retries_left -= 1
            logger.warning("run %s: ComfyUI at %s lost the prompt (restarted?); posting it "
                           "again", self.prompt_id, self.options.url)
            self.accepted = False
            self._submit()
            return
        retry = ("it was already posted again once" if self.options.retry_lost_prompt
                 else "retrying is off (COMFYQ_COMFYUI_RETRY_LOST_PROMPT)")
        raise server_lost(self.options.url, "the server lost the prompt mid-run (it restarted "
                          f"or the prompt was deleted there); {retry}",
                          self.progress.last_node, self.class_of(self.progress.last_node))

    def _outputs(self) -> dict[str, dict]:
        """The user's output nodes' ui, their files downloaded.

        When every event came on the one stream opened before the prompt was posted, its
        ``executed`` events hold what ``/history`` would (ComfyUI sends one for each node with
        ui, cached ones included), so no history is fetched. After a break in the stream the
        history is the authority: while it is fetched (on a second connection), the files the
        events named are already being downloaded, so the two round trips overlap, and a file
        only the history names is downloaded after.
        """
        fetcher = OutputFetcher(self.client, self.context, self.options.max_output_bytes,
                                self.options.output_dir)
        if self.history is not None:
            return fetcher.fetch(self.history.get("outputs") or {}, self.user_nodes)
        if self.succeeded and not self.missed_events:
            return fetcher.fetch(self.executed_outputs, self.user_nodes)
        entry = self.backend.history_async(self.prompt_id)
        fetcher.prefetch(self.executed_outputs, self.user_nodes)
        history = entry.result()
        return fetcher.fetch(history.get("outputs") or {}, self.user_nodes)

    # -- stopping --------------------------------------------------------------------------------

    def _stop_on_server(self) -> bool:
        """Cancel or timeout: dequeue and interrupt the prompt, then await the confirmation;
        False when the server kept executing it past the grace."""
        if not self.accepted or self.finished:
            return True
        try:
            self.client.delete_from_queue([self.prompt_id], self.quick_timeout)
            self.client.interrupt(self.prompt_id, self.quick_timeout)
        except (ComfyUIUnavailable, ComfyUIRequestError) as error:
            logger.warning("run %s: could not stop the prompt on ComfyUI: %s", self.prompt_id,
                           error)
            return True
        deadline = time.monotonic() + self.options.interrupt_grace
        while time.monotonic() < deadline:
            if self._stop_confirmed():
                return True
        return False

    def _stop_confirmed(self) -> bool:
        """Whether the prompt has left the server's queue; else wait a poll for its events."""
        try:
            where, _ = self._where()
        except (ComfyUIUnavailable, ComfyUIRequestError):
            where = "unknown"
        if where in ("finished", "missing"):
            return True
        until = time.monotonic() + POLL_SECONDS
        while (left := until - time.monotonic()) > 0:
            try:
                frame = self.events.next(left)
            except EventStreamLost:
                time.sleep(left)
                return False
            if frame is None:
                return False
            if self._ends_prompt(frame):
                return True
        return False

    def _ends_prompt(self, frame: Mapping[str, Any]) -> bool:
        data = frame.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
            return False
        kind = frame.get("type")
        return kind in ("execution_interrupted", "execution_success", "execution_error") or (
            kind == "executing" and data.get("node") is None)

    def _withdraw(self) -> None:
        """Best effort, without waiting: take an abandoned prompt off the server."""
        if not self.accepted or self.finished:
            return
        try:
            self.client.delete_from_queue([self.prompt_id], self.quick_timeout)
            self.client.interrupt(self.prompt_id, self.quick_timeout)
        except (ComfyUIUnavailable, ComfyUIRequestError):
            pass
