"""A real, popular custom node pack of mask and image utilities runs in process, unchanged:
Masquerade Nodes (BadCafeCode/masquerade-nodes-comfyui), whose nodes call torch on the IMAGE
and MASK values they get, fed by and feeding comfyq's built-in nodes.

The pack is not part of comfyq: ``COMFYQ_TEST_MASQUERADE_PACK`` names a checkout of it (tested
at commit 432cb4d); without one, or without torch and torchvision (which the pack imports), the
test skips saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PACK_VARIABLE = "COMFYQ_TEST_MASQUERADE_PACK"
_pack = os.environ.get(PACK_VARIABLE)
if not _pack:
    pytest.skip(f"{PACK_VARIABLE} names no checkout of BadCafeCode/masquerade-nodes-comfyui",
                allow_module_level=True)
pytest.importorskip("torch", reason="Masquerade Nodes compute with torch (comfyq[torch])")
pytest.importorskip("torchvision", reason="Masquerade Nodes import torchvision")

from comfyq.execution.inprocess import InProcessBackend
from comfyq.execution.registry import NodeRegistry, load_packs
from comfyq.nodes import NODE_CLASS_MAPPINGS
from comfyq.run_context import RunContext

#: The pack's nodes this test runs.
NODES_RUN = ("Create Rect Mask", "Mask Morphology", "Mix Images By Mask", "Unary Mask Op",
             "Cut By Mask", "Image To Mask", "Get Image Size")


def node(class_type: str, **inputs: object) -> dict:
    return {"class_type": class_type, "inputs": inputs}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    custom_nodes = tmp_path_factory.mktemp("custom_nodes")
    (custom_nodes / "masquerade").symlink_to(Path(_pack).resolve(), target_is_directory=True)
    loaded = NodeRegistry(dict(NODE_CLASS_MAPPINGS))
    load_packs([custom_nodes], loaded)
    assert not loaded.failed_packs
    return loaded


def png(root: Path, record: dict) -> np.ndarray:
    with Image.open(root / record["type"] / record["subfolder"] / record["filename"]) as image:
        return np.asarray(image.convert("RGB"))


def test_masquerade_nodes_run_between_comfyqs_built_ins(registry: NodeRegistry,
                                                         tmp_path: Path) -> None:
    assert set(NODES_RUN) <= set(registry.classes)
    graph = {
        "black": node("EmptyImage", width=64, height=48, batch_size=1, color=0),
        "white": node("EmptyImage", width=64, height=48, batch_size=1, color=0xFFFFFF),
        "rect": node("Create Rect Mask", mode="pixels", origin="topleft", x=16.0, y=8.0,
                     width=15.0, height=15.0, image_width=64, image_height=64,
                     copy_image_size=["black", 0]),
        "grown": node("Mask Morphology", image=["rect", 0], distance=2, op="dilate"),
        "mixed": node("Mix Images By Mask", image1=["black", 0], image2=["white", 0],
                      mask=["grown", 0]),
        "save_mixed": node("SaveImage", images=["mixed", 0], filename_prefix="mixed"),
        "inverted": node("Unary Mask Op", image=["grown", 0], op="invert"),
        "mixed_inverse": node("Mix Images By Mask", image1=["black", 0], image2=["white", 0],
                              mask=["inverted", 0]),
        "save_inverse": node("SaveImage", images=["mixed_inverse", 0], filename_prefix="inv"),
        "cut": node("Cut By Mask", image=["mixed", 0], mask=["grown", 0], force_resize_width=0,
                    force_resize_height=0),
        "save_cut": node("SaveImage", images=["cut", 0], filename_prefix="cut"),
        "as_mask": node("Image To Mask", image=["mixed", 0], method="intensity"),
        "mask_image": node("MaskToImage", mask=["as_mask", 0]),
        "save_mask": node("SaveImage", images=["mask_image", 0], filename_prefix="mask"),
        "size": node("Get Image Size", image=["cut", 0]),
        "sized": node("EmptyImage", width=["size", 0], height=["size", 1], batch_size=1,
                      color=0x00FF00),
        "save_sized": node("SaveImage", images=["sized", 0], filename_prefix="sized"),
    }
    context = RunContext(run_id="pack", output_dir=tmp_path / "output" / "pack",
                         temp_dir=tmp_path / "temp" / "pack")
    backend = InProcessBackend(registry.classes, apply_inputs=lambda graph, _: graph)
    outputs = backend.execute(graph, None, context, lambda *_: None)

    assert {"rect", "grown", "mixed", "inverted", "cut", "as_mask", "size"} <= set(
        context.executed_nodes)
    expected = np.zeros((48, 64, 3), np.uint8)
    expected[6:26, 14:34] = 255  # the 16x16 rectangle at (16, 8), dilated by 2 on each side
    assert np.array_equal(png(tmp_path, outputs["save_mixed"]["images"][0]), expected)
    assert np.array_equal(png(tmp_path, outputs["save_inverse"]["images"][0]), 255 - expected)
    # Intensity is torchvision's grayscale: white weighs 0.2989 + 0.587 + 0.114 (254 in 8 bits).
    mask = png(tmp_path, outputs["save_mask"]["images"][0])
    assert np.array_equal(mask >= 254, expected == 255) and set(np.unique(mask)) <= {0, 254}
    cut = png(tmp_path, outputs["save_cut"]["images"][0])
    assert cut.shape == (20, 20, 3) and cut.min() == 255
    sized = png(tmp_path, outputs["save_sized"]["images"][0])
    assert sized.shape == (20, 20, 3), "Get Image Size read the cut's size"
