"""Regenerate the ComfyUI reference PNGs of this folder from a running ComfyUI.

Usage: ``python tests/data/nodes/comfyui_reference/make_reference.py [http://127.0.0.1:8188]``

It writes the two input patterns (``pattern.png``, ``pattern_small.png``), uploads them to the
server, runs every graph of :func:`reference_graphs` there (``POST /prompt``, ``GET /history``),
downloads each saved image (``GET /view``) as ``<name>.png`` and records the graphs, file names
and server versions in ``graphs.json``. ``tests/unit/test_nodes.py`` replays the same graphs with
comfyq's nodes and compares the pixels.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

HERE = Path(__file__).resolve().parent
PATTERN = "comfyq_pattern.png"
PATTERN_SMALL = "comfyq_pattern_small.png"


def make_patterns() -> dict[str, np.ndarray]:
    """A 24x20 pattern (gradients, a checkerboard, a marked pixel) and a 10x7 one."""
    height, width = 20, 24
    y, x = np.mgrid[0:height, 0:width]
    pattern = np.stack([x / (width - 1), y / (height - 1), ((x // 4 + y // 4) % 2) * 0.8 + 0.1],
                       axis=-1)
    pattern[3, 2] = (1.0, 0.0, 0.0)
    small_y, small_x = np.mgrid[0:7, 0:10]
    small = np.stack([np.sin(small_x / 2) * 0.5 + 0.5, small_y / 6, 1 - small_x / 9], axis=-1)
    return {PATTERN: pattern, PATTERN_SMALL: small}


def _load(name: str) -> dict[str, Any]:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def _save(source: str, prefix: str) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def _on_pattern(name: str, class_type: str, **inputs: Any) -> dict[str, Any]:
    """pattern -> one node -> SaveImage."""
    return {"1": _load(PATTERN),
            "2": {"class_type": class_type, "inputs": {"image": ["1", 0], **inputs}},
            "3": _save("2", f"comfyq_ref/{name}")}


def reference_graphs() -> dict[str, dict[str, Any]]:
    graphs: dict[str, dict[str, Any]] = {
        "empty_color": {"1": {"class_type": "EmptyImage", "inputs": {
            "width": 32, "height": 24, "batch_size": 2, "color": 0x3366CC}},
            "2": _save("1", "comfyq_ref/empty_color")},
        "invert": _on_pattern("invert", "ImageInvert"),
        "crop": _on_pattern("crop", "ImageCrop", width=10, height=8, x=5, y=4),
        "crop_past_edge": _on_pattern("crop_past_edge", "ImageCrop", width=10, height=8, x=30,
                                      y=2),
        "flip_x": _on_pattern("flip_x", "ImageFlip", flip_method="x-axis: vertically"),
        "flip_y": _on_pattern("flip_y", "ImageFlip", flip_method="y-axis: horizontally"),
        "scale_width_from_height": _on_pattern("scale_width_from_height", "ImageScale",
                                               upscale_method="bilinear", width=0, height=30,
                                               crop="disabled"),
        "scaleby_bicubic": _on_pattern("scaleby_bicubic", "ImageScaleBy",
                                       upscale_method="bicubic", scale_by=1.5),
        "scaleby_area": _on_pattern("scaleby_area", "ImageScaleBy", upscale_method="area",
                                    scale_by=0.45),
        "blur_r3_s1.5": _on_pattern("blur_r3_s1.5", "ImageBlur", blur_radius=3, sigma=1.5),
        "blur_r1_s0.5": _on_pattern("blur_r1_s0.5", "ImageBlur", blur_radius=1, sigma=0.5),
        "solid_mask": {"1": {"class_type": "SolidMask", "inputs": {
            "value": 0.3, "width": 16, "height": 12}},
            "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
            "3": _save("2", "comfyq_ref/solid_mask")},
        "image_to_mask_green": {"1": _load(PATTERN),
            "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "green"}},
            "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
            "4": _save("3", "comfyq_ref/image_to_mask_green")},
        "primitive_width": {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 20}},
            "2": {"class_type": "EmptyImage", "inputs": {
                "width": ["1", 0], "height": 6, "batch_size": 1, "color": 0xFF8000}},
            "3": _save("2", "comfyq_ref/primitive_width")},
        "string_prefix": {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a b"}},
            "2": {"class_type": "StringConcatenate", "inputs": {
                "string_a": "comfyq_ref/str", "string_b": ["1", 0], "delimiter": "-"}},
            "3": {"class_type": "StringReplace", "inputs": {
                "string": ["2", 0], "find": " ", "replace": "_"}},
            "4": {"class_type": "EmptyImage", "inputs": {
                "width": 4, "height": 4, "batch_size": 1, "color": 0x00FF00}},
            "5": {"class_type": "SaveImage", "inputs": {
                "images": ["4", 0], "filename_prefix": ["3", 0]}}},
        "preview": {"1": _load(PATTERN_SMALL),
                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
    }
    for rotation in ("90 degrees", "180 degrees", "270 degrees"):
        name = f"rotate_{rotation.split()[0]}"
        graphs[name] = _on_pattern(name, "ImageRotate", rotation=rotation)
    for method in ("nearest-exact", "bilinear", "area", "bicubic", "lanczos"):
        up, down = f"scale_{method}_up", f"scale_{method}_down_center"
        graphs[up] = _on_pattern(up, "ImageScale", upscale_method=method, width=37, height=29,
                                 crop="disabled")
        graphs[down] = _on_pattern(down, "ImageScale", upscale_method=method, width=13,
                                   height=11, crop="center")
    for mode in ("normal", "multiply", "screen", "overlay", "soft_light", "difference"):
        name = f"blend_{mode}"
        graphs[name] = {"1": _load(PATTERN),
                        "2": {"class_type": "ImageFlip", "inputs": {
                            "image": ["1", 0], "flip_method": "y-axis: horizontally"}},
                        "3": {"class_type": "ImageBlend", "inputs": {
                            "image1": ["1", 0], "image2": ["2", 0], "blend_factor": 0.6,
                            "blend_mode": mode}},
                        "4": _save("3", f"comfyq_ref/{name}")}
    graphs["blend_resized"] = {"1": _load(PATTERN), "2": _load(PATTERN_SMALL),
                               "3": {"class_type": "ImageBlend", "inputs": {
                                   "image1": ["1", 0], "image2": ["2", 0],
                                   "blend_factor": 0.75, "blend_mode": "overlay"}},
                               "4": _save("3", "comfyq_ref/blend_resized")}
    return graphs


def _run(server: str, graph: dict[str, Any]) -> dict[str, Any]:
    prompt_id = str(uuid.uuid4())
    answer = requests.post(f"{server}/prompt", json={
        "prompt": graph, "client_id": "comfyq-reference", "prompt_id": prompt_id}, timeout=30)
    answer.raise_for_status()
    if answer.json().get("node_errors"):
        raise RuntimeError(f"ComfyUI refused the graph: {answer.json()}")
    for _ in range(600):
        history = requests.get(f"{server}/history/{prompt_id}", timeout=30).json()
        if prompt_id in history:
            entry = history[prompt_id]
            if entry["status"]["status_str"] != "success":
                raise RuntimeError(f"ComfyUI failed the graph: {entry['status']}")
            return entry["outputs"]
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not finish")


def main(server: str) -> None:
    for name, pixels in make_patterns().items():
        quantised = np.clip(pixels * 255.0, 0, 255).round().astype(np.uint8)
        Image.fromarray(quantised).save(HERE / name)
        with open(HERE / name, "rb") as file:
            requests.post(f"{server}/upload/image", files={"image": (name, file, "image/png")},
                          data={"overwrite": "true"}, timeout=30).raise_for_status()
    stats = requests.get(f"{server}/system_stats", timeout=30).json()["system"]
    manifest: dict[str, Any] = {
        "comfyui_version": stats["comfyui_version"], "pytorch_version": stats["pytorch_version"],
        "inputs": [PATTERN, PATTERN_SMALL], "graphs": {}}
    for name, graph in reference_graphs().items():
        outputs = _run(server, graph)
        records = [image for ui in outputs.values() for image in ui.get("images", [])]
        references = []
        for index, record in enumerate(records):
            view = requests.get(f"{server}/view", params=record, timeout=30)
            view.raise_for_status()
            references.append(f"{name}.png" if index == 0 else f"{name}_{index}.png")
            (HERE / references[-1]).write_bytes(view.content)
        manifest["graphs"][name] = {"graph": graph, "comfyui_records": records,
                                    "references": references}
        print(name, [record["filename"] for record in records])
    (HERE / "graphs.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
