"""The node classes a worker can execute: comfyq's built-ins plus custom node packs.

Custom node packs are loaded like ComfyUI's ``custom_nodes/``: every directory named in
``COMFYQ_CUSTOM_NODES_DIRS`` holds packs, each a module (``pack.py``) or a package
(``pack/__init__.py``) exposing ``NODE_CLASS_MAPPINGS``. A pack that fails to import is logged
and reported (``comfyq nodes``), and the worker starts without it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import multiprocessing
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from comfyq.catalog.object_info import build_catalog
from comfyq.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass
class NodeRegistry:
    """The classes available in this process and the packs that failed to load."""

    classes: dict[str, type] = field(default_factory=dict)
    display_names: dict[str, str] = field(default_factory=dict)
    failed_packs: dict[str, str] = field(default_factory=dict)


def _pack_entries(directory: Path) -> list[Path]:
    if not directory.is_dir():
        logger.warning("custom node directory %s does not exist", directory)
        return []
    return sorted(
        entry for entry in directory.iterdir()
        if not entry.name.startswith((".", "_"))
        and ((entry.is_file() and entry.suffix == ".py") or (entry / "__init__.py").is_file())
    )


def _import_pack(entry: Path):
    module_name = f"comfyq_custom_nodes.{entry.stem}"
    location = entry / "__init__.py" if entry.is_dir() else entry
    spec = importlib.util.spec_from_file_location(
        module_name, location, submodule_search_locations=[str(entry)] if entry.is_dir() else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_packs(directories: Iterable[Path], registry: NodeRegistry) -> None:
    """Add every pack found in ``directories`` to ``registry``."""
    for directory in directories:
        for entry in _pack_entries(Path(directory)):
            try:
                module = _import_pack(entry)
                mappings = module.NODE_CLASS_MAPPINGS
            except Exception as error:  # a broken pack must not stop the worker
                registry.failed_packs[str(entry)] = "".join(
                    traceback.format_exception_only(error)).strip()
                logger.error("custom node pack %s failed to load:\n%s", entry,
                             traceback.format_exc())
                continue
            registry.classes.update(mappings)
            registry.display_names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {})
            logger.info("loaded custom node pack %s (%d classes)", entry.name, len(mappings))


@functools.cache
def node_registry() -> NodeRegistry:
    """This process's registry, built once: built-ins first, then packs (which may override)."""
    from comfyq.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    registry = NodeRegistry(dict(NODE_CLASS_MAPPINGS), dict(NODE_DISPLAY_NAME_MAPPINGS))
    load_packs(get_settings().custom_nodes_dirs, registry)
    return registry


def node_classes() -> dict[str, type]:
    """class_type -> node class for this process."""
    return node_registry().classes


def _registry_catalog() -> tuple[dict, dict[str, str]]:
    registry = node_registry()
    return build_catalog(registry.classes, registry.display_names), dict(registry.failed_packs)


def in_process_catalog() -> tuple[dict, dict[str, str]]:
    """The catalog of the in-process node registry (built-ins and packs), and failed packs.

    Built in a freshly spawned process: the worker's main process forks its pool afterwards, and
    a custom pack may touch CUDA when imported, which must never happen in a parent before a fork.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_registry_catalog)
