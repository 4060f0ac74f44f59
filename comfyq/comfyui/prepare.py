"""Turning a run's graph into the prompt posted to ComfyUI.

* Output files get names unique to the run: every ``filename_prefix`` is put under
  ``comfyq/<run id>/`` on the server, which also keeps ComfyUI's cache from answering a repeated
  graph with the files of an earlier run. A prefix that comes from a link goes through a
  ``StringConcatenate`` node added for the purpose (when the server has that class).
* ``ComfyUIDeployExternalImage`` nodes stay as they are when the server has ComfyDeploy's nodes
  (they fetch their URL themselves, as under ComfyDeploy). Otherwise the worker fetches the
  image (with :mod:`comfyq.nodes.image_sources`' size and time limits), uploads it with
  ``/upload/image`` and puts a ``LoadImage`` of it in the node's place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyq import graph as graph_structure
from comfyq.execution.executor import NodeExecutionError
from comfyq.inputs import is_image_source
from comfyq.nodes.image_sources import ImageSourceError, read_source

#: Server-side folder (under ComfyUI's output and input folders) of comfyq's files.
SERVER_FOLDER = "comfyq"
#: Prefix of the ids of nodes comfyq adds to a prompt.
HELPER_PREFIX = "comfyq_"
EXTERNAL_IMAGE = "ComfyUIDeployExternalImage"

#: Uploads bytes as an input file: ``(data, filename, subfolder) -> name as LoadImage takes it``.
Upload = Callable[[bytes, str, str], str]


@dataclass
class PreparedPrompt:
    """The prompt to post and what comfyq changed in it.

    :param prompt: the API graph for ``POST /prompt``.
    :param helper_nodes: ids of nodes comfyq added (not the user's; no outputs recorded).
    """

    prompt: dict[str, Any]
    helper_nodes: set[str] = field(default_factory=set)

    def class_of(self, node_id: str) -> str:
        node = self.prompt.get(node_id)
        return str(node.get("class_type", "")) if isinstance(node, dict) else ""


def run_folder(run_id: str) -> str:
    """The server-side sub-folder holding one run's output files."""
    return f"{SERVER_FOLDER}/{run_id}"


def prepare_prompt(graph: Mapping[str, Any], run_id: str, catalog: Mapping[str, Any],
                   upload: Upload) -> PreparedPrompt:
    """The prompt for ``graph`` (whose request inputs are already applied)."""
    prepared = PreparedPrompt(copy.deepcopy(dict(graph)))
    _unique_output_names(prepared, run_id, catalog)
    _external_images(prepared, run_id, catalog, upload)
    return prepared


def _unique_output_names(prepared: PreparedPrompt, run_id: str,
                         catalog: Mapping[str, Any]) -> None:
    folder = run_folder(run_id) + "/"
    for node_id, node in list(prepared.prompt.items()):
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict) or "filename_prefix" not in inputs:
            continue
        prefix = inputs["filename_prefix"]
        if isinstance(prefix, str):
            inputs["filename_prefix"] = folder + prefix
        elif graph_structure.as_link(prefix) is not None and "StringConcatenate" in catalog:
            helper = f"{HELPER_PREFIX}prefix_{node_id}"
            prepared.prompt[helper] = {"class_type": "StringConcatenate", "inputs": {
                "string_a": folder, "string_b": prefix, "delimiter": ""}}
            prepared.helper_nodes.add(helper)
            inputs["filename_prefix"] = [helper, 0]


def _external_images(prepared: PreparedPrompt, run_id: str, catalog: Mapping[str, Any],
                     upload: Upload) -> None:
    if EXTERNAL_IMAGE in catalog or "LoadImage" not in catalog:
        return
    for node_id, node in list(prepared.prompt.items()):
        if isinstance(node, dict) and node.get("class_type") == EXTERNAL_IMAGE:
            _replace_external_image(prepared, node_id, node.get("inputs") or {}, run_id, upload)


def _replace_external_image(prepared: PreparedPrompt, node_id: str, inputs: Mapping[str, Any],
                            run_id: str, upload: Upload) -> None:
    for name in ("input_id", "default_value_url"):
        source = inputs.get(name)
        if is_image_source(source):
            try:
                data = read_source(source)
            except ImageSourceError as error:
                raise NodeExecutionError(node_id, EXTERNAL_IMAGE,
                                         ImageSourceError(f"{name}: {error}")) from None
            filename = f"{run_id}_{node_id}{_image_suffix(data)}"
            image = upload(data, filename, SERVER_FOLDER)
            prepared.prompt[node_id] = {"class_type": "LoadImage", "inputs": {"image": image}}
            return
    fallback = graph_structure.as_link(inputs.get("default_value"))
    if fallback is not None:
        _relink(prepared.prompt, node_id, [fallback.source, fallback.output_index])
        del prepared.prompt[node_id]


def _relink(prompt: dict[str, Any], old_source: str, new_link: list[Any]) -> None:
    """Point every link to output 0 of ``old_source`` at ``new_link`` instead."""
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for name, value in (inputs or {}).items():
            link = graph_structure.as_link(value)
            if link is not None and link.source == old_source and link.output_index == 0:
                inputs[name] = list(new_link)


def _image_suffix(data: bytes) -> str:
    """The file suffix matching an image's magic bytes (PNG when unknown)."""
    signatures = ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF8", ".gif"),
                  (b"BM", ".bmp"))
    for magic, suffix in signatures:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".png"
