"""The stand-in ComfyUI's prompt queue: pending prompts, the running one, history, events.

One executor thread runs one prompt at a time with comfyq's in-process executor and emits the
websocket events in the order a real ComfyUI 0.3.64 sends them (see
``tests/data/comfyui_transcripts/README.md``)::

    status(n) status(n) execution_start execution_cached{nodes: []}
    per node: progress_state executing{node} [progress progress_state ...]
              [executed{node, output}] progress_state
    terminal (execution_success | execution_error | execution_interrupted)
    [history written] status(n) executing{node: null}

Events about a prompt go only to the websocket of its ``client_id`` (none without one), except
``progress_state`` and ``status``, which every client gets. Nothing is cached between prompts:
``execution_cached`` always lists no node.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.executor import GraphError, NodeExecutionError, execute_graph
from comfyq.run_context import RunCancelled, RunContext, running

#: ``emit`` target meaning every connected client.
EVERYONE = "*"

#: Called as (event type, data, target): a client id, :data:`EVERYONE`, or None (nobody).
Emit = Callable[[str, dict[str, Any], str | None], None]


@dataclass
class QueuedPrompt:
    """One accepted prompt, as ComfyUI keeps it: ``[number, id, graph, extra_data, outputs]``."""

    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def as_item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class Interrupted(RunCancelled):
    """The running prompt was interrupted; raised at a node boundary or progress report."""


def _timestamp() -> int:
    return int(time.time() * 1000)


class _ServerContext(RunContext):
    """A run context whose files land where ComfyUI puts them: no per-run sub-folder."""

    @property
    def subfolder(self) -> str:
        return ""


@dataclass
class _NodeTracker:
    """Whether a node is executing now; boundaries and in-node progress interrupt differently."""

    inside: bool = False
    node_id: str | None = None


class PromptExecution:
    """Executing one prompt: the events, the node states, the interrupt points.

    :param item: the prompt.
    :param emit: where events go.
    :param node_classes: class_type -> node class.
    :param folders: ``(output, temp)`` folders, shared by every prompt as in ComfyUI.
    :param interrupted: set by ``POST /interrupt``; cleared when this prompt starts.
    """

    def __init__(self, item: QueuedPrompt, emit: Emit, node_classes: Mapping[str, type],
                 folders: tuple[Path, Path], interrupted: threading.Event) -> None:
        self.item = item
        self.emit = emit
        self.node_classes = node_classes
        self.folders = folders
        self.interrupted = interrupted
        self.tracker = _NodeTracker()
        self.states: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.outputs: dict[str, dict[str, Any]] = {}
        self.messages: list[list[Any]] = []

    # -- events --------------------------------------------------------------------------------

    def _to_client(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        if record:
            self.messages.append([event, data])
        self.emit(event, data, self.item.client_id)

    def _progress_state(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.states[node_id] = {
            "value": value, "max": maximum, "state": state, "node_id": node_id,
            "prompt_id": self.item.prompt_id, "display_node_id": node_id,
            "parent_node_id": None, "real_node_id": node_id}
        self.emit("progress_state", {"prompt_id": self.item.prompt_id,
                                     "nodes": {k: dict(v) for k, v in self.states.items()}},
                  EVERYONE)

    # -- hooks the executor calls --------------------------------------------------------------

    def node_started(self, node_id: str, class_type: str, index: int, total: int) -> None:
        self._progress_state(node_id, 0.0, 1.0, "running")
        self._to_client("executing", {"node": node_id, "display_node": node_id,
                                      "prompt_id": self.item.prompt_id})
        self.tracker.node_id = node_id
        # ComfyUI checks the interrupt flag after announcing the next node, so that node is
        # the one reported as interrupted.
        if self.interrupted.is_set():
            raise Interrupted(node_id)

    def check_interrupted(self) -> None:
        if self.tracker.inside and self.interrupted.is_set():
            raise Interrupted(self.tracker.node_id)

    def report_progress(self, value: float, maximum: float, node_id: str | None) -> None:
        node = node_id or self.tracker.node_id or ""
        self._to_client("progress", {"value": value, "max": maximum,
                                     "prompt_id": self.item.prompt_id, "node": node})
        self._progress_state(node, value, maximum, "running")

    def node_finished(self, returned: Any) -> None:
        node_id = self.tracker.node_id or ""
        ui = returned.get("ui") if isinstance(returned, dict) else None
        self.executed.append(node_id)
        if ui is not None:
            self.outputs[node_id] = ui
            self._to_client("executed", {"node": node_id, "display_node": node_id,
                                         "output": ui, "prompt_id": self.item.prompt_id})
        self._progress_state(node_id, 1.0, 1.0, "finished")

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> tuple[str, dict[str, Any]]:
        """Execute the prompt; returns the terminal event and its data."""
        prompt_id = self.item.prompt_id
        self.interrupted.clear()
        self._to_client("execution_start", {"prompt_id": prompt_id, "timestamp": _timestamp()},
                        record=True)
        self._to_client("execution_cached", {"nodes": [], "prompt_id": prompt_id,
                                             "timestamp": _timestamp()}, record=True)
        terminal = self._execute()
        self._to_client(*terminal, record=True)
        return terminal

    def _execute(self) -> tuple[str, dict[str, Any]]:
        prompt_id = self.item.prompt_id
        output_dir, temp_dir = self.folders
        context = _ServerContext(run_id=prompt_id, output_dir=output_dir, temp_dir=temp_dir,
                                 report_progress=self.report_progress,
                                 check_cancelled=self.check_interrupted)
        try:
            with running(context):
                execute_graph(self._graph_to_run(), self._tracked_classes(), context,
                              self.node_started)
        except Interrupted as interrupt:
            node_id = str(interrupt)
            return "execution_interrupted", {
                "prompt_id": prompt_id, "node_id": node_id,
                "node_type": self.item.prompt[node_id]["class_type"],
                "executed": list(self.executed), "timestamp": _timestamp()}
        except (NodeExecutionError, GraphError) as error:
            return "execution_error", self._error_data(error)
        return "execution_success", {"prompt_id": prompt_id, "timestamp": _timestamp()}

    def _graph_to_run(self) -> dict[str, Any]:
        """The prompt without the output nodes validation dropped (and what only they need)."""
        keep = graph_structure.ancestors_and_self(self.item.prompt, self.item.outputs)
        return {node_id: node for node_id, node in self.item.prompt.items() if node_id in keep}

    def _tracked_classes(self) -> dict[str, type]:
        used = {node["class_type"] for node in self.item.prompt.values()}
        return {name: _tracked(self.node_classes[name], self.tracker, self.node_finished)
                for name in used if name in self.node_classes}

    def _error_data(self, error: NodeExecutionError | GraphError) -> dict[str, Any]:
        cause = error.__cause__ or error
        node_id = getattr(error, "node_id", None)
        return {
            "prompt_id": self.item.prompt_id, "node_id": node_id,
            "node_type": getattr(error, "class_type", None),
            "executed": list(self.executed),
            # ComfyUI appends a line of tips (empty unless out of memory) to the message.
            "exception_message": f"{getattr(error, 'exception_message', str(error))}\n",
            "exception_type": getattr(error, "exception_type", type(error).__name__),
            "traceback": traceback.format_tb(cause.__traceback__),
            "current_inputs": {}, "current_outputs": list(self.item.prompt),
            "timestamp": _timestamp(),
        }

    def history_entry(self, terminal: str) -> dict[str, Any]:
        success = terminal == "execution_success"
        outputs = self.outputs if success else {}
        return {
            "prompt": self.item.as_item(),
            "outputs": outputs,
            "status": {"status_str": "success" if success else "error", "completed": success,
                       "messages": self.messages},
            "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                               "real_node_id": node_id} for node_id in outputs},
        }


def _tracked(node_class: type, tracker: _NodeTracker, finished: Callable[[Any], None]) -> type:
    """``node_class`` with its function bracketed: inside-node flag, then ``finished(result)``."""
    function_name = node_class.FUNCTION
    original = getattr(node_class, function_name)

    def call(self: Any, **arguments: Any) -> Any:
        tracker.inside = True
        try:
            returned = original(self, **arguments)
            if inspect.isawaitable(returned):
                returned = asyncio.run(_awaited(returned))
        finally:
            tracker.inside = False
        finished(returned)
        return returned

    return type(node_class.__name__, (node_class,), {function_name: call})


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@dataclass
class PromptQueue:
    """ComfyUI's queue and history, executed by one thread.

    :param emit: where events go.
    :param node_classes: class_type -> node class.
    :param folders: ``(output, temp)`` folders.
    """

    emit: Emit
    node_classes: Mapping[str, type]
    folders: tuple[Path, Path]
    pending: list[QueuedPrompt] = field(default_factory=list)
    running: QueuedPrompt | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    number: int = 0
    interrupted: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False

    def next_number(self) -> int:
        with self._changed:
            number = self.number
            self.number += 1
            return number

    def remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def _status(self) -> None:
        self.emit("status", {"status": {"exec_info": {"queue_remaining": self.remaining()}}},
                  EVERYONE)

    def put(self, item: QueuedPrompt) -> None:
        with self._changed:
            self.pending.append(item)
            self.pending.sort(key=lambda queued: queued.number)
            self._status()
            self._changed.notify_all()

    def delete(self, prompt_ids: list[str]) -> None:
        with self._changed:
            self.pending = [item for item in self.pending if item.prompt_id not in prompt_ids]
            self._status()

    def clear(self) -> None:
        with self._changed:
            self.pending = []
            self._status()

    def interrupt(self, prompt_id: str | None) -> None:
        """Interrupt the running prompt; a ``prompt_id`` that is not running is ignored."""
        with self._changed:
            if prompt_id and (self.running is None or self.running.prompt_id != prompt_id):
                return
            self.interrupted.set()

    def snapshot(self) -> dict[str, list[list[Any]]]:
        with self._changed:
            return {"queue_running": [self.running.as_item()] if self.running else [],
                    "queue_pending": [item.as_item() for item in self.pending]}

    def history_items(self, max_items: int | None = None) -> dict[str, Any]:
        with self._changed:
            items = list(self.history.items())
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return dict(items)

    def forget(self, prompt_ids: list[str], everything: bool = False) -> None:
        """Delete history entries (``POST /history``): those named, or all of them."""
        with self._changed:
            if everything:
                self.history.clear()
            for prompt_id in prompt_ids:
                self.history.pop(prompt_id, None)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self.interrupted.set()
            self._changed.notify_all()

    def run_forever(self) -> None:
        """The executor thread: take the oldest pending prompt, run it, record it, repeat."""
        while True:
            with self._changed:
                while not self.pending and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                item = self.running = self.pending.pop(0)
                self._status()
            execution = PromptExecution(item, self.emit, self.node_classes, self.folders,
                                        self.interrupted)
            terminal, _ = execution.run()
            with self._changed:
                self.history.pop(item.prompt_id, None)  # a reused id moves to the newest place
                self.history[item.prompt_id] = execution.history_entry(terminal)
                self.running = None
                self._status()
            self.emit("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)
