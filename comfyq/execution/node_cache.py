"""Node results kept across the runs of one worker, keyed the way ComfyUI keys its cache.

A node's key covers its class, what its ``IS_CHANGED`` says, its literal inputs and, through
each link, the key of the node it reads from (so a change anywhere upstream changes every key
downstream). A second run of the same graph with a new seed therefore finds every node that does
not depend on the seed in the cache, and re-runs only the seed's descendants.

What is never taken from the cache is the executor's business (output nodes always re-run so
each run writes its own files); this module only computes keys and holds results, bounded by a
number of entries and an approximate byte size, evicting the least recently used first.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.node_calls import NodeOutputs

#: Default bounds of one worker's cache.
DEFAULT_MAX_ENTRIES = 512
DEFAULT_MAX_BYTES = 1 << 30


_CONTAINER_OVERHEAD = 64
_MAX_SIZE_DEPTH = 8


def approximate_size(value: Any, depth: int = 0) -> int:
    """Bytes ``value`` holds, roughly: arrays and tensors by ``nbytes``, containers summed."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (str, bytes, bytearray)):
        return sys.getsizeof(value)
    if depth >= _MAX_SIZE_DEPTH:
        return _CONTAINER_OVERHEAD
    if isinstance(value, Mapping):
        return _CONTAINER_OVERHEAD + sum(
            approximate_size(key, depth + 1) + approximate_size(item, depth + 1)
            for key, item in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return _CONTAINER_OVERHEAD + sum(approximate_size(item, depth + 1) for item in value)
    return sys.getsizeof(value, _CONTAINER_OVERHEAD)


class NodeResultCache:
    """Least-recently-used results of nodes, bounded by entries and approximate bytes.

    One instance lives as long as its worker and is shared by every run the worker executes.
    A result larger than ``max_bytes`` on its own is not kept.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[NodeOutputs, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> NodeOutputs | None:
        """The results stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, outputs: NodeOutputs) -> None:
        """Keep ``outputs`` under ``key``, evicting the least recently used beyond the bounds."""
        size = approximate_size(outputs)
        with self._lock:
            self._discard(key)
            if size > self.max_bytes or self.max_entries == 0:
                return
            self._entries[key] = (outputs, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._discard(next(iter(self._entries)))

    def _discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def bytes_used(self) -> int:
        """The approximate size of everything held."""
        return self._bytes


class _Uncacheable(Exception):
    """A signature part that can never compare equal to another run's (NaN, an object)."""


def cache_keys(graph: Mapping[str, Any], order: Iterable[str], is_changed: Callable[[str], Any],
               keys_on_node_id: Callable[[str], bool],
               known: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """The cache key of each node of ``order`` (a dependency order), None where uncacheable.

    :param known: keys already computed for nodes outside ``order`` that its nodes link to (the
        submitted graph's, when an expansion adds nodes).

    :param is_changed: what the node's ``IS_CHANGED`` says (False when its class has none).
    :param keys_on_node_id: whether the node's key includes its id (ComfyUI does so for
        ``NOT_IDEMPOTENT`` classes and those with a ``UNIQUE_ID`` hidden input).

    A node is uncacheable when ``IS_CHANGED`` says NaN (ComfyUI's "always re-run") or something
    that cannot be compared across runs, and so is every node that reads from it.
    """
    keys: dict[str, str | None] = dict(known or {})
    computed: dict[str, str | None] = {}
    for node_id in order:
        node = graph[node_id]
        try:
            signature = [node["class_type"], _comparable(is_changed(node_id))]
            if keys_on_node_id(node_id):
                signature.append(node_id)
            signature.append(_input_signature(node.get("inputs", {}), keys))
            keys[node_id] = computed[node_id] = _digest(signature)
        except _Uncacheable:
            keys[node_id] = computed[node_id] = None
    return computed


def _input_signature(inputs: Mapping[str, Any], keys: Mapping[str, str | None]) -> list:
    signature = []
    for name in sorted(inputs):
        value = inputs[name]
        link = graph_structure.as_link(value)
        if link is None:
            signature.append([name, value])
            continue
        source_key = keys.get(link.source)
        if source_key is None:
            raise _Uncacheable(link.source)
        signature.append([name, ["LINK", source_key, link.output_index]])
    return signature


def _comparable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        raise _Uncacheable("IS_CHANGED is NaN")
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


def _digest(signature: list) -> str:
    try:
        text = json.dumps(signature, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:  # objects, NaN or infinities never compare equal
        raise _Uncacheable(str(error)) from None
    return hashlib.sha256(text.encode()).hexdigest()
