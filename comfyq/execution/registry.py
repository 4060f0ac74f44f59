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


#: Why a pack or class written for ComfyUI's V3 node API is refused at load.
V3_REFUSAL = (
    "uses ComfyUI's V3 node API (comfy_api.latest: io.ComfyNode, define_schema/execute, "
    "comfy_entrypoint), which comfyq's in-process engine does not run; run it on workers backed "
    "by a ComfyUI server (comfyq worker --comfyui-url), which run V3 nodes natively")


def is_v3_class(node_class: object) -> bool:
    """Whether a class is a ComfyUI V3 node (``io.ComfyNode``: ``define_schema``/``execute``)."""
    return isinstance(node_class, type) and (
        callable(getattr(node_class, "define_schema", None))
        or any(base.__name__ in ("ComfyNode", "_ComfyNodeInternal")
               for base in node_class.__mro__))


def _is_v3_import_error(error: BaseException) -> bool:
    """A pack that imports ``comfy_api`` where ComfyUI is not installed is a V3 pack."""
    name = getattr(error, "name", None) or ""
    return isinstance(error, ModuleNotFoundError) and name.split(".")[0] == "comfy_api"


def _top_source(entry: Path) -> str:
    location = entry / "__init__.py" if entry.is_dir() else entry
    try:
        return location.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _declares_v3_entrypoint(entry: Path) -> bool:
    """Whether a pack's top module defines ``comfy_entrypoint`` (a V3 pack), read without
    importing it: such a pack imports ComfyUI's modules first, which fail here anyway."""
    return "def comfy_entrypoint(" in _top_source(entry)


def _imports_comfy_api(entry: Path) -> bool:
    """Whether a pack without ``NODE_CLASS_MAPPINGS`` is written against ``comfy_api``."""
    return "comfy_api" in _top_source(entry)


def _refuse(registry: NodeRegistry, where: str, reason: str) -> None:
    registry.failed_packs[where] = reason
    logger.error("custom node pack %s refused: %s", where, reason)


def load_packs(directories: Iterable[Path], registry: NodeRegistry) -> None:
    """Add every pack found in ``directories`` to ``registry``.

    A pack, or a class of a pack, written for ComfyUI's V3 node API is refused with
    :data:`V3_REFUSAL` (listed with the failed packs, so ``comfyq nodes`` shows it): V3 nodes
    run inside ComfyUI's own runtime (class cloning, hidden-input injection, ``NodeOutput``,
    extensions registered through ``comfy_api``, which only ships with ComfyUI), and comfyq's
    ComfyUI-server backend runs them as ComfyUI does.
    """
    for directory in directories:
        for entry in _pack_entries(Path(directory)):
            if _declares_v3_entrypoint(entry):
                _refuse(registry, str(entry), V3_REFUSAL)
                continue
            try:
                module = _import_pack(entry)
            except Exception as error:  # a broken pack must not stop the worker
                if _is_v3_import_error(error):
                    _refuse(registry, str(entry), V3_REFUSAL)
                    continue
                registry.failed_packs[str(entry)] = "".join(
                    traceback.format_exception_only(error)).strip()
                logger.error("custom node pack %s failed to load:\n%s", entry,
                             traceback.format_exc())
                continue
            mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
            if mappings is None:
                if hasattr(module, "comfy_entrypoint") or _imports_comfy_api(entry):
                    _refuse(registry, str(entry), V3_REFUSAL)
                else:
                    registry.failed_packs[str(entry)] = (
                        "AttributeError: the pack defines no NODE_CLASS_MAPPINGS")
                continue
            kept = {}
            for class_name, node_class in mappings.items():
                if is_v3_class(node_class):
                    _refuse(registry, f"{entry} ({class_name})", V3_REFUSAL)
                else:
                    kept[class_name] = node_class
            registry.classes.update(kept)
            registry.display_names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {})
            logger.info("loaded custom node pack %s (%d classes)", entry.name, len(kept))


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
