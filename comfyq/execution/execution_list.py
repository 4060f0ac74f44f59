"""Which node runs next: ComfyUI's execution list, with lazy inputs added on demand.

Nodes enter through :meth:`ExecutionList.add` together with every ancestor they read from
through a non-lazy input; a lazy input's source enters only when the node asks for it
(:meth:`ExecutionList.require`), so a branch nobody asks for never runs. Nodes that already have
results (run earlier in this run, or found in the cache) never enter. Of the nodes whose sources
are all done, the one first in the graph's dependency order runs next, so runs are reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from typing import Any

from comfyq import graph as graph_structure


class ExecutionList:
    """The nodes still to run in one run, and what each waits for.

    :param graph: the API graph.
    :param position: each node's place in a dependency order of the graph (the tie-breaker).
    :param is_done: whether a node already has results; may fetch them (from the cache).
    :param is_lazy: whether an input of a node is lazy: ``(node_id, input_name) -> bool``.
    """

    def __init__(self, graph: Mapping[str, Any], position: Mapping[str, int],
                 is_done: Callable[[str], bool], is_lazy: Callable[[str, str], bool]) -> None:
        self.graph = graph
        self.position = position
        self.is_done = is_done
        self.is_lazy = is_lazy
        self._waiting_on: dict[str, set[str]] = {}
        self._blocking: dict[str, set[str]] = {}
        self._ready: list[tuple[int, str]] = []

    def __len__(self) -> int:
        """How many nodes are pending (including one handed out and not yet completed)."""
        return len(self._waiting_on)

    def add(self, node_id: str) -> None:
        """Make ``node_id`` and the non-lazy ancestors it needs pending, unless already done."""
        if node_id in self._waiting_on or self.is_done(node_id):
            return
        links: list[tuple[str, str]] = []
        added: list[str] = []
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in self._waiting_on:
                continue
            self._waiting_on[current] = set()
            added.append(current)
            self._blocking.setdefault(current, set())
            for input_name, value in self.graph[current].get("inputs", {}).items():
                link = graph_structure.as_link(value)
                if link is None or self.is_lazy(current, input_name):
                    continue
                if not self.is_done(link.source):
                    stack.append(link.source)
                    links.append((link.source, current))
        for source, target in links:
            self._wait(target, source)
        for current in added:
            self._push_if_ready(current)

    def require(self, node_id: str, source_id: str) -> None:
        """``node_id`` needs ``source_id``'s results before it runs again (a lazy input)."""
        if self.is_done(source_id):
            return
        self.add(source_id)
        self._wait(node_id, source_id)

    def next_ready(self) -> str | None:
        """The next node whose sources are all done, or None when none is."""
        while self._ready:
            _, node_id = heapq.heappop(self._ready)
            if node_id in self._waiting_on and not self._waiting_on[node_id]:
                return node_id
        return None

    def complete(self, node_id: str) -> None:
        """``node_id`` has its results: release the nodes that waited for it."""
        self._waiting_on.pop(node_id, None)
        for target in self._blocking.pop(node_id, set()):
            waits = self._waiting_on.get(target)
            if waits is not None:
                waits.discard(node_id)
                self._push_if_ready(target)

    def retry_later(self, node_id: str) -> None:
        """``node_id`` stays pending; it runs again once what it now waits for is done."""
        self._push_if_ready(node_id)

    def pending(self) -> list[str]:
        return list(self._waiting_on)

    def _wait(self, target: str, source: str) -> None:
        self._waiting_on[target].add(source)
        self._blocking.setdefault(source, set()).add(target)

    def _push_if_ready(self, node_id: str) -> None:
        if not self._waiting_on.get(node_id, True):
            heapq.heappush(self._ready, (self.position[node_id], node_id))
