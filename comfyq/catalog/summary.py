"""``comfyq nodes``: a readable summary of the node catalog a GPU queue offers.

One line per class (name, category, inputs), then the workers that published and the custom
node packs that failed to load on them. Inputs read ``name: TYPE``, with ``min..max`` for numbers,
the number of choices for combos, and ``?`` after optional ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from comfyq.catalog.reading import PublishedCatalog, published_catalog
from comfyq.errors import ComfyqError


def input_summary(name: str, spec: Any, optional: bool) -> str:
    """``width: INT 1..16384``, ``upscale_method: COMBO(5)``, ``mask?: MASK``."""
    parts = spec if isinstance(spec, (list, tuple)) and spec else [spec]
    socket_type = parts[0]
    options = parts[1] if len(parts) > 1 and isinstance(parts[1], Mapping) else {}
    if isinstance(socket_type, list):
        kind = f"COMBO({len(socket_type)})"
    elif socket_type == "COMBO" and isinstance(options.get("options"), list):
        kind = f"COMBO({len(options['options'])})"
    else:
        kind = str(socket_type)
        if "min" in options or "max" in options:
            kind += f" {_bound(options.get('min'))}..{_bound(options.get('max'))}"
    return f"{name}{'?' if optional else ''}: {kind}"


def _bound(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def class_line(name: str, entry: Mapping[str, Any]) -> str:
    """One class: ``EmptyImage [image] width: INT 1..16384, ...`` (outputs are marked ``->``)."""
    inputs = entry.get("input") or {}
    described = [input_summary(input_name, spec, category == "optional")
                 for category in ("required", "optional")
                 for input_name, spec in (inputs.get(category) or {}).items()]
    outputs = ", ".join(str(output) for output in entry.get("output") or [])
    flags = " (output node)" if entry.get("output_node") else ""
    line = f"{name} [{entry.get('category', '')}]{flags} {', '.join(described) or '(no inputs)'}"
    return f"{line} -> {outputs}" if outputs else line


def format_catalog(published: PublishedCatalog) -> str:
    """The whole report of one GPU type, as ``comfyq nodes`` prints it."""
    catalog = published.catalog
    workers = ", ".join(published.workers) or "-"
    heading = (f"GPU {published.gpu_type}: {len(catalog)} node classes, offered by "
               f"{len(published.workers)} worker(s): {workers}")
    lines = [heading]
    lines += [f"  {class_line(name, catalog[name])}" for name in sorted(catalog)]
    failed = published.failed_packs
    if failed:
        lines.append("Custom node packs that failed to load:")
        lines += [f"  {worker}: {pack}: {error}" for worker, packs in failed.items()
                  for pack, error in packs.items()]
    return "\n".join(lines)


def nodes_report(client: redis.Redis, gpu_types: Sequence[str], as_json: bool) -> str:
    """What ``comfyq nodes`` prints for ``gpu_types`` (those with a published catalog).

    :raises ComfyqError: no worker of any of them has published a catalog.
    """
    found = [published for published in (published_catalog(client, gpu_type)
                                         for gpu_type in gpu_types) if published is not None]
    if not found:
        raise ComfyqError(f"no worker of GPU type {', '.join(gpu_types)} has published a node "
                          "catalog yet (start one with `comfyq worker`)")
    if as_json:
        return json.dumps({published.gpu_type: published.as_dict() for published in found},
                          indent=2)
    return "\n\n".join(format_catalog(published) for published in found)
