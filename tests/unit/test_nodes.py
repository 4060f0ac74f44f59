"""comfyq's built-in nodes: ComfyUI 0.3.64's specs and pixels, files, ComfyDeploy's inputs.

Nodes are called as the executor calls them, inside a real run context with real folders; image
downloads go to real HTTP servers on 127.0.0.1; reference PNGs were made by a real ComfyUI 0.3.64
(``tests/data/nodes/comfyui_reference/make_reference.py``).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfyq.execution.executor import execute_graph
from comfyq.inputs import ExternalInputError, apply_inputs
from comfyq.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, image_sources
from comfyq.nodes.files import UnsafeFilenamePrefix
from comfyq.run_context import RunCancelled, RunContext, running
from comfyq.webhooks.settings import reset_webhook_settings
from tests.ops_helpers import wait_until
from tests.paths import DATA, OBJECT_INFO, REPO

NODE_DATA = DATA / "nodes"
REFERENCE = NODE_DATA / "comfyui_reference"
#: ComfyUI 0.3.64's real /object_info.
CATALOG_FILE = OBJECT_INFO
COMFYUI_NODES = [
    "EmptyImage", "ImageInvert", "ImageScale", "ImageScaleBy", "ImageBlur", "ImageCrop",
    "ImageFlip", "ImageRotate", "ImageBlend", "SolidMask", "MaskToImage", "ImageToMask",
    "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveBoolean", "StringConcatenate",
    "StringReplace", "SaveImage", "PreviewImage",
]
COMFYDEPLOY_SPECS = json.loads((NODE_DATA / "comfydeploy-node-specs.json").read_text())["nodes"]
TORCH_IMPORTS = importlib.util.find_spec("torch") is not None


def node(class_type: str) -> Any:
    """An instance of a built-in node and the method the executor calls."""
    node_class = NODE_CLASS_MAPPINGS[class_type]
    return getattr(node_class(), node_class.FUNCTION)


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


class Progress:
    """A run's progress reports and cancellation switch."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, float, str | None]] = []
        self.cancel_after: int | None = None

    def report(self, value: float, maximum: float, node_id: str | None) -> None:
        self.reports.append((value, maximum, node_id))

    def check(self) -> None:
        if self.cancel_after is not None and len(self.reports) >= self.cancel_after:
            raise RunCancelled("cancelled by the test")


@pytest.fixture
def progress() -> Progress:
    return Progress()


@pytest.fixture
def run(tmp_path: Path, progress: Progress) -> Iterator[RunContext]:
    context = RunContext(run_id="run-1", output_dir=tmp_path / "output" / "run-1",
                         temp_dir=tmp_path / "temp" / "run-1", report_progress=progress.report,
                         check_cancelled=progress.check)
    with running(context):
        yield context


def pattern(height: int = 20, width: int = 24) -> np.ndarray:
    """A [1, H, W, 3] image with distinct pixels and a marked one at row 3, column 2."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x / (width - 1), y / (height - 1), np.full(x.shape, 0.5)], axis=-1)
    image[3, 2] = (1.0, 0.0, 0.0)
    return image[None].astype(np.float32)


def marked_pixel(image: np.ndarray) -> tuple[int, int]:
    """Where the pure red pixel of :func:`pattern` ended up."""
    red = (image[0, :, :, 0] > 0.99) & (image[0, :, :, 1] < 0.01) & (image[0, :, :, 2] < 0.01)
    (row, column), = np.argwhere(red)
    return int(row), int(column)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.int16)


# --------------------------------------------------------------------------------- catalog drift


def test_node_mappings_name_every_class_and_its_display_name() -> None:
    assert set(COMFYUI_NODES) | set(COMFYDEPLOY_SPECS) <= set(NODE_CLASS_MAPPINGS)
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    for name, node_class in NODE_CLASS_MAPPINGS.items():
        assert callable(getattr(node_class(), node_class.FUNCTION)), name
        assert isinstance(node_class.INPUT_TYPES()["required"], dict), name


@pytest.mark.parametrize("class_type", COMFYUI_NODES)
def test_node_matches_comfyui_0_3_64_catalog(class_type: str) -> None:
    entry = json.loads(CATALOG_FILE.read_text())[class_type]
    node_class = NODE_CLASS_MAPPINGS[class_type]
    assert as_json(node_class.INPUT_TYPES()) == entry["input"]
    assert list(node_class.RETURN_TYPES) == entry["output"]
    assert list(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)) == \
        entry["output_name"]
    output_is_list = getattr(node_class, "OUTPUT_IS_LIST", (False,) * len(entry["output"]))
    assert list(output_is_list) == entry["output_is_list"]
    assert node_class.CATEGORY == entry["category"]
    assert getattr(node_class, "OUTPUT_NODE", False) == entry["output_node"]
    assert NODE_DISPLAY_NAME_MAPPINGS[class_type] == (entry["display_name"] or class_type)


@pytest.mark.parametrize("class_type", sorted(COMFYDEPLOY_SPECS))
def test_node_matches_comfydeploy_custom_node(class_type: str) -> None:
    spec = COMFYDEPLOY_SPECS[class_type]
    node_class = NODE_CLASS_MAPPINGS[class_type]
    assert as_json(node_class.INPUT_TYPES()) == spec["input"]
    assert list(node_class.RETURN_TYPES) == spec["RETURN_TYPES"]
    assert list(getattr(node_class, "RETURN_NAMES", [])) == spec.get("RETURN_NAMES", [])
    assert node_class.CATEGORY == spec["CATEGORY"]
    assert getattr(node_class, "OUTPUT_NODE", False) == spec.get("OUTPUT_NODE", False)


def test_wildcard_outputs_compare_equal_to_every_type() -> None:
    any_type = NODE_CLASS_MAPPINGS["ComfyUIDeployExternalTextAny"].RETURN_TYPES[0]
    assert any_type == "*"
    assert not (any_type != "IMAGE")


# ---------------------------------------------------------------------------- image basics


def test_empty_image_color_is_rgb_from_hex(run: RunContext) -> None:
    (red,) = node("EmptyImage")(width=5, height=3, batch_size=2, color=0xFF0000)
    assert red.shape == (2, 3, 5, 3) and red.dtype == np.float32
    assert np.array_equal(red[1, 2, 4], [1.0, 0.0, 0.0])
    (mixed,) = node("EmptyImage")(width=1, height=1, batch_size=1, color=0x3366CC)
    assert np.allclose(mixed[0, 0, 0], [0x33 / 255, 0x66 / 255, 0xCC / 255])


def test_invert_is_one_minus_x(run: RunContext) -> None:
    image = pattern()
    (inverted,) = node("ImageInvert")(image=image)
    assert np.allclose(inverted, 1 - image)
    assert np.array_equal(inverted[0, 3, 2], [0.0, 1.0, 1.0])


@pytest.mark.parametrize(("flip_method", "expected"), [
    ("x-axis: vertically", (16, 2)), ("y-axis: horizontally", (3, 21))])
def test_flip_moves_marked_pixel_where_comfyui_puts_it(run: RunContext, flip_method: str,
                                                       expected: tuple[int, int]) -> None:
    (flipped,) = node("ImageFlip")(image=pattern(), flip_method=flip_method)
    assert flipped.shape == (1, 20, 24, 3)
    assert marked_pixel(flipped) == expected


@pytest.mark.parametrize(("rotation", "shape", "expected"), [
    ("none", (20, 24), (3, 2)),
    ("90 degrees", (24, 20), (2, 16)),  # clockwise: row r, column c -> row c, column H-1-r
    ("180 degrees", (20, 24), (16, 21)),
    ("270 degrees", (24, 20), (21, 3)),
])
def test_rotate_turns_clockwise(run: RunContext, rotation: str, shape: tuple[int, int],
                                expected: tuple[int, int]) -> None:
    (rotated,) = node("ImageRotate")(image=pattern(), rotation=rotation)
    assert rotated.shape[1:3] == shape
    assert marked_pixel(rotated) == expected


def test_crop_takes_region_and_clamps_start_to_the_image(run: RunContext) -> None:
    image = pattern()
    (cropped,) = node("ImageCrop")(image=image, width=4, height=5, x=1, y=2)
    assert cropped.shape == (1, 5, 4, 3)
    assert np.array_equal(cropped[0, 1, 1], image[0, 3, 2])
    (edge,) = node("ImageCrop")(image=image, width=10, height=10, x=100, y=18)
    assert edge.shape == (1, 2, 1, 3)
    assert np.array_equal(edge[0, 0, 0], image[0, 18, 23])


# --------------------------------------------------------------------------------- scaling


def test_scale_keeps_aspect_when_one_side_is_zero(run: RunContext) -> None:
    image = pattern()
    (wide,) = node("ImageScale")(image=image, upscale_method="bilinear", width=0, height=30,
                                 crop="disabled")
    assert wide.shape == (1, 30, 36, 3)
    (same,) = node("ImageScale")(image=image, upscale_method="area", width=0, height=0,
                                 crop="disabled")
    assert same is image or np.array_equal(same, image)


def test_nearest_exact_doubling_repeats_pixels(run: RunContext) -> None:
    image = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3) / 12
    (doubled,) = node("ImageScale")(image=image, upscale_method="nearest-exact", width=4,
                                    height=4, crop="disabled")
    assert np.array_equal(doubled[0, :2, :2], np.broadcast_to(image[0, 0, 0], (2, 2, 3)))
    assert np.array_equal(doubled[0, 2:, 2:], np.broadcast_to(image[0, 1, 1], (2, 2, 3)))


def test_bilinear_upscale_keeps_corners_and_interpolates_between(run: RunContext) -> None:
    image = np.array([0.0, 1.0], dtype=np.float32).reshape(1, 1, 2, 1)
    (large,) = node("ImageScale")(image=image, upscale_method="bilinear", width=8, height=1,
                                  crop="disabled")
    # Half-pixel centres, no corner alignment: output x samples (x + 0.5) / 4 - 0.5, clamped.
    assert np.allclose(large[0, 0, :, 0], [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])


def test_area_downscale_averages_blocks(run: RunContext) -> None:
    image = np.random.default_rng(3).random((1, 4, 6, 3), dtype=np.float32)
    (small,) = node("ImageScale")(image=image, upscale_method="area", width=3, height=2,
                                  crop="disabled")
    assert np.allclose(small[0, 1, 2], image[0, 2:4, 4:6].mean(axis=(0, 1)), atol=1e-6)


def test_center_crop_keeps_the_middle(run: RunContext) -> None:
    image = np.zeros((1, 10, 30, 3), dtype=np.float32)
    image[:, :, 10:20] = 1.0
    (square,) = node("ImageScale")(image=image, upscale_method="nearest-exact", width=10,
                                   height=10, crop="center")
    assert np.array_equal(square, np.ones((1, 10, 10, 3), dtype=np.float32))


def test_scale_by_rounds_each_side(run: RunContext) -> None:
    (scaled,) = node("ImageScaleBy")(image=pattern(), upscale_method="lanczos", scale_by=1.5)
    assert scaled.shape == (1, 30, 36, 3)
    with pytest.raises(ValueError, match="scale_by"):
        node("ImageScaleBy")(image=np.zeros((1, 2, 2, 3), np.float32), upscale_method="area",
                             scale_by=0.01)


# -------------------------------------------------------------------------- blur and blend


def test_blur_spreads_an_impulse_as_a_normalised_gaussian(run: RunContext) -> None:
    impulse = np.zeros((1, 21, 21, 1), dtype=np.float32)
    impulse[0, 10, 10, 0] = 1.0
    (blurred,) = node("ImageBlur")(image=impulse, blur_radius=3, sigma=0.5)
    response = blurred[0, :, :, 0]
    assert math.isclose(float(response.sum()), 1.0, rel_tol=1e-5)
    assert np.count_nonzero(response) == 49  # the 7x7 kernel, nothing beyond the radius
    # ComfyUI's kernel grid spans -1..1 over the radius: offset (i, j) is at (i/3, j/3).
    offsets = np.arange(-3, 4) / 3
    expected = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 0.5 ** 2))
    assert np.allclose(response[7:14, 7:14], expected / expected.sum(), atol=1e-6)


def test_blur_keeps_flat_images_and_reports_progress(run: RunContext, progress: Progress) -> None:
    flat = np.full((3, 8, 9, 3), 0.4, dtype=np.float32)
    (blurred,) = node("ImageBlur")(image=flat, blur_radius=2, sigma=1.0)
    assert np.allclose(blurred, 0.4, atol=1e-6)
    assert [report[:2] for report in progress.reports] == [(1, 3), (2, 3), (3, 3)]


def test_blur_stops_when_the_run_is_cancelled(run: RunContext, progress: Progress) -> None:
    progress.cancel_after = 1
    with pytest.raises(RunCancelled):
        node("ImageBlur")(image=np.zeros((4, 8, 8, 3), dtype=np.float32), blur_radius=1,
                          sigma=1.0)
    assert len(progress.reports) == 1


@pytest.mark.parametrize(("mode", "blended"), [
    ("normal", 0.75), ("multiply", 0.1875), ("screen", 0.8125), ("overlay", 0.375),
    ("soft_light", 0.375), ("difference", -0.5),  # signed, clamped only after mixing
])
def test_blend_modes_on_known_values(run: RunContext, mode: str, blended: float) -> None:
    base = np.full((1, 2, 2, 3), 0.25, dtype=np.float32)
    top = np.full((1, 2, 2, 3), 0.75, dtype=np.float32)
    (full,) = node("ImageBlend")(image1=base, image2=top, blend_factor=1.0, blend_mode=mode)
    assert np.allclose(full, max(0.0, blended))
    (mixed,) = node("ImageBlend")(image1=base, image2=top, blend_factor=0.2, blend_mode=mode)
    assert np.allclose(mixed, max(0.0, 0.25 * 0.8 + blended * 0.2))


def test_blend_resizes_image2_and_matches_channels(run: RunContext) -> None:
    base = np.full((1, 6, 8, 4), 0.5, dtype=np.float32)
    top = np.full((1, 3, 3, 3), 1.0, dtype=np.float32)
    (blended,) = node("ImageBlend")(image1=base, image2=top, blend_factor=0.5,
                                    blend_mode="normal")
    assert blended.shape == (1, 6, 8, 4)
    assert np.allclose(blended, 0.75)


# ---------------------------------------------------------------------- masks and literals


def test_masks_convert_to_and_from_images(run: RunContext) -> None:
    (mask,) = node("SolidMask")(value=0.3, width=4, height=2)
    assert mask.shape == (1, 2, 4) and np.allclose(mask, 0.3)
    (image,) = node("MaskToImage")(mask=mask)
    assert image.shape == (1, 2, 4, 3) and np.allclose(image, 0.3)
    (green,) = node("ImageToMask")(image=pattern(), channel="green")
    assert green.shape == (1, 20, 24) and math.isclose(float(green[0, 19, 0]), 1.0)
    with pytest.raises(ValueError, match="has 3 channels, so it has no 'alpha'"):
        node("ImageToMask")(image=pattern(), channel="alpha")


def test_primitives_and_strings(run: RunContext) -> None:
    assert node("PrimitiveInt")(value=-7) == (-7,)
    assert node("PrimitiveFloat")(value="2.5") == (2.5,)
    assert node("PrimitiveString")(value="cat") == ("cat",)
    assert node("PrimitiveBoolean")(value="false") == (False,)
    with pytest.raises(ValueError, match="value: expected an integer, got 'seven'"):
        node("PrimitiveInt")(value="seven")
    assert node("StringConcatenate")(string_a="a", string_b="b", delimiter=", ") == ("a, b",)
    assert node("StringReplace")(string="a-b-c", find="-", replace="+") == ("a+b+c",)


# -------------------------------------------------------------------------------- save nodes


def test_save_image_writes_pngs_named_like_comfyui(run: RunContext) -> None:
    images = np.concatenate([pattern(), 1 - pattern()])
    result = node("SaveImage")(images=images, filename_prefix="ComfyUI")
    records = result["ui"]["images"]
    assert result["result"] == ()
    assert [record["filename"] for record in records] == ["ComfyUI_00001_.png",
                                                          "ComfyUI_00002_.png"]
    assert all(record == {"filename": record["filename"], "subfolder": "run-1", "type": "output"}
               for record in records)
    saved = read_png(run.output_dir / "ComfyUI_00002_.png")
    assert np.array_equal(saved, np.clip(255 * images[1], 0, 255).astype(np.uint8))
    again = node("SaveImage")(images=pattern(), filename_prefix="ComfyUI")
    assert again["ui"]["images"][0]["filename"] == "ComfyUI_00003_.png"


def test_save_image_never_overwrites_and_keeps_sub_folders(run: RunContext) -> None:
    folder = run.output_dir / "portraits"
    folder.mkdir(parents=True)
    (folder / "face_00007_.png").write_bytes(b"not ours")
    result = node("SaveImage")(images=pattern(), filename_prefix="portraits/face")
    (record,) = result["ui"]["images"]
    assert record == {"filename": "face_00008_.png", "subfolder": "run-1/portraits",
                      "type": "output"}
    assert (folder / "face_00007_.png").read_bytes() == b"not ours"
    assert read_png(folder / "face_00008_.png")[3, 2].tolist() == [255, 0, 0]


def test_save_image_writes_prompt_metadata(run: RunContext) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    result = node("SaveImage")(images=pattern(), filename_prefix="meta", prompt=prompt)
    with Image.open(run.output_dir / result["ui"]["images"][0]["filename"]) as picture:
        assert json.loads(picture.text["prompt"]) == prompt


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/etc/cron", "..", "", "a/.."])
def test_save_image_refuses_prefixes_leaving_the_run_folder(run: RunContext, tmp_path: Path,
                                                             prefix: str) -> None:
    with pytest.raises(UnsafeFilenamePrefix, match="filename_prefix"):
        node("SaveImage")(images=pattern(), filename_prefix=prefix)
    assert not list((tmp_path / "output").glob("*.png"))
    assert [path.name for path in tmp_path.iterdir()] == ["output", "temp"] or \
        sorted(path.name for path in tmp_path.iterdir()) == ["output", "temp"]


def test_save_image_refuses_a_symlinked_sub_folder_leaving_the_run(run: RunContext,
                                                                   tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (run.output_dir / "link").symlink_to(outside)
    with pytest.raises(UnsafeFilenamePrefix, match="outside the run's folder"):
        node("SaveImage")(images=pattern(), filename_prefix="link/x")
    assert not list(outside.iterdir())


def test_two_runs_write_to_their_own_folders(tmp_path: Path) -> None:
    names = []
    for run_id in ("run-a", "run-b"):
        context = RunContext(run_id=run_id, output_dir=tmp_path / "output" / run_id,
                             temp_dir=tmp_path / "temp" / run_id)
        with running(context):
            (record,) = node("SaveImage")(images=pattern(), filename_prefix="same")["ui"]["images"]
        names.append((record["subfolder"], record["filename"]))
        assert (context.output_dir / record["filename"]).is_file()
    assert names == [("run-a", "same_00001_.png"), ("run-b", "same_00001_.png")]


def test_preview_image_goes_to_the_temp_folder(run: RunContext) -> None:
    (record,) = node("PreviewImage")(images=pattern())["ui"]["images"]
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", record["filename"])
    assert record["type"] == "temp" and record["subfolder"] == "run-1"
    assert read_png(run.temp_dir / record["filename"])[3, 2].tolist() == [255, 0, 0]
    assert not list(run.output_dir.iterdir())


def test_output_image_saves_each_format_with_its_output_id(run: RunContext) -> None:
    for file_type in ("png", "jpg", "webp"):
        result = node("ComfyDeployOutputImage")(images=pattern(), filename_prefix="out",
                                                 file_type=file_type, quality=95,
                                                 output_id="hero")
        (record,) = result["ui"]["images"]
        assert record["filename"].endswith(f"_.{file_type}") and record["output_id"] == "hero"
        error = np.abs(read_png(run.output_dir / record["filename"])
                       - np.clip(255 * pattern()[0], 0, 255).astype(int))
        if file_type == "png":
            assert error.max() == 0
        else:  # lossy at quality 95: close on average
            assert error.mean() < 4
    names = sorted(path.name for path in run.output_dir.iterdir())
    assert names == ["out_00001_.png", "out_00002_.jpg", "out_00003_.webp"]
    with pytest.raises(ValueError, match="file_type"):
        node("ComfyDeployOutputImage")(images=pattern(), file_type="gif")


def test_output_text_writes_a_file(run: RunContext) -> None:
    result = node("ComfyDeployOutputText")(text='{"a": 1}', filename_prefix="answer",
                                            file_type="json", output_id="reply")
    (record,) = result["ui"]["text_file"]
    assert record == {"filename": "answer_00001_.json", "subfolder": "run-1", "type": "output",
                      "output_id": "reply"}
    assert result["ui"]["text"] == ['{"a": 1}']
    assert json.loads((run.output_dir / "answer_00001_.json").read_text()) == {"a": 1}


# ------------------------------------------------------------------- ComfyDeploy input nodes


def test_number_inputs_read_input_id_and_fall_back_to_default(run: RunContext) -> None:
    number = node("ComfyUIDeployExternalNumber")
    assert number(input_id="input_number", default_value=1.5) == (1.5,)
    assert number(input_id=2.25, default_value=1.5) == (2.25,)
    integer = node("ComfyUIDeployExternalNumberInt")
    assert integer(input_id="-4", default_value=3) == (-4,)
    assert integer(input_id="input_number", default_value=3) == (3,)
    slider = node("ComfyUIDeployExternalNumberSlider")
    assert slider(input_id=0.7, default_value=0.5, min_value=0, max_value=1) == (0.7,)
    assert slider(input_id=1.7, default_value=0.5, min_value=0, max_value=1) == (0.5,)
    slider_int = node("ComfyUIDeployExternalNumberSliderInt")
    assert slider_int(input_id="6.6", default_value=1, min_value=0, max_value=10) == (7,)


def test_text_boolean_enum_inputs_return_default_value(run: RunContext) -> None:
    assert node("ComfyUIDeployExternalText")(input_id="p", default_value="a cat") == ("a cat",)
    assert node("ComfyUIDeployExternalTextAny")(input_id="p", default_value=5) == (5,)
    assert node("ComfyUIDeployExternalBoolean")(input_id="b", default_value=True) == (True,)
    assert node("ComfyUIDeployExternalEnum")(input_id="e", options='["x", "y"]',
                                             default_value="y") == ("y",)


def test_seed_is_fixed_in_range_and_random_for_minus_one(run: RunContext) -> None:
    seed = node("ComfyUIDeployExternalSeed")
    assert seed(input_id="s", default_value=42, min_value=1, max_value=100) == (42,)
    drawn = {seed(input_id="s", default_value=-1, min_value=10, max_value=20)[0]
             for _ in range(200)}
    assert drawn <= set(range(10, 21)) and len(drawn) > 5
    seed_class = NODE_CLASS_MAPPINGS["ComfyUIDeployExternalSeed"]
    assert math.isnan(seed_class.IS_CHANGED(input_id="s", default_value=-1, min_value=1,
                                            max_value=9))
    assert seed_class.IS_CHANGED(input_id="s", default_value=5, min_value=1, max_value=9) == \
        ("s", 5)


def data_uri(pixels: np.ndarray, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(png_bytes(pixels)).decode()


def test_external_image_from_a_data_uri(run: RunContext) -> None:
    pixels = np.zeros((3, 4, 3), dtype=np.uint8)
    pixels[1, 2] = (10, 200, 30)
    (image,) = node("ComfyUIDeployExternalImage")(input_id=data_uri(pixels))
    assert image.shape == (1, 3, 4, 3)
    assert np.allclose(image[0, 1, 2] * 255, [10, 200, 30])


def test_external_image_uses_default_and_explains_a_missing_image(run: RunContext) -> None:
    default = pattern()
    (image,) = node("ComfyUIDeployExternalImage")(input_id="input_image", default_value=default)
    assert np.array_equal(image, default)
    with pytest.raises(ValueError, match="no image given"):
        node("ComfyUIDeployExternalImage")(input_id="input_image")
    with pytest.raises(image_sources.ImageSourceError, match="bad base64"):
        node("ComfyUIDeployExternalImage")(input_id="data:image/png;base64,@@@")
    with pytest.raises(image_sources.ImageSourceError, match="not a readable image"):
        node("ComfyUIDeployExternalImage")(
            input_id="data:image/png;base64," + base64.b64encode(b"hello").decode())


class Routes:
    """What the local test server answers: path -> handler(request handler)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        #: Paths whose answer the client hung up on before it was all sent.
        self.cut: set[str] = set()

    def bytes(self, path: str, body: bytes, content_type: str = "image/png",
              declare_length: bool = True) -> None:
        def answer(request: BaseHTTPRequestHandler) -> None:
            request.send_response(200)
            request.send_header("Content-Type", content_type)
            if declare_length:
                request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        self.handlers[path] = answer

    def slow(self, path: str, delay_s: float, chunks: int = 1) -> None:
        def answer(request: BaseHTTPRequestHandler) -> None:
            if chunks == 1:
                time.sleep(delay_s)
            request.send_response(200)
            request.send_header("Content-Length", str(chunks * 100))
            request.end_headers()
            for _ in range(chunks if chunks > 1 else 0):
                request.wfile.write(b"x" * 100)
                request.wfile.flush()
                time.sleep(delay_s)
        self.handlers[path] = answer


@pytest.fixture
def http_server(loopback_inputs_allowed: None) -> Iterator[tuple[str, Routes]]:
    """A server of test images on loopback, which the worker's settings allow."""
    routes = Routes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handler = routes.handlers.get(self.path)
            if handler is None:
                self.send_error(404)
                return
            try:
                handler(self)
            except (BrokenPipeError, ConnectionResetError):
                routes.cut.add(self.path)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def test_external_image_from_a_real_http_server(run: RunContext,
                                                http_server: tuple[str, Routes]) -> None:
    base, routes = http_server
    pixels = np.full((5, 6, 3), (255, 128, 0), dtype=np.uint8)
    routes.bytes("/cat.png", png_bytes(pixels))
    (image,) = node("ComfyUIDeployExternalImage")(input_id=f"{base}/cat.png")
    assert image.shape == (1, 5, 6, 3)
    assert np.allclose(image[0, 4, 5] * 255, [255, 128, 0])
    (from_url,) = node("ComfyUIDeployExternalImage")(input_id="input_image",
                                                     default_value_url=f"{base}/cat.png")
    assert np.array_equal(from_url, image)
    with pytest.raises(image_sources.ImageSourceError, match="input_id: .*HTTP 404"):
        node("ComfyUIDeployExternalImage")(input_id=f"{base}/missing.png")


def test_an_image_url_on_loopback_is_refused_unless_the_settings_allow_it(run: RunContext):
    reset_webhook_settings()
    with pytest.raises(image_sources.ImageSourceError,
                       match="127.0.0.1 is a loopback address .*COMFYQ_WEBHOOK_ALLOW_LOOPBACK"):
        image_sources.load_image("http://127.0.0.1:9/cat.png")
    with pytest.raises(image_sources.ImageSourceError, match="metadata|link-local"):
        image_sources.load_image("http://169.254.169.254/latest/meta-data/")


def test_image_download_size_limit(run: RunContext, http_server: tuple[str, Routes],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base, routes = http_server
    body = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
    routes.bytes("/declared.png", body)
    routes.bytes("/chunked.png", body, declare_length=False)
    monkeypatch.setattr(image_sources, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(image_sources.ImageSourceError, match="over the limit of 1000 bytes"):
        node("ComfyUIDeployExternalImage")(input_id=f"{base}/declared.png")
    with pytest.raises(image_sources.ImageSourceError, match="over the limit of 1000 bytes"):
        node("ComfyUIDeployExternalImage")(input_id=f"{base}/chunked.png")
    with pytest.raises(image_sources.ImageSourceError, match="over the limit of 1000 bytes"):
        node("ComfyUIDeployExternalImage")(
            input_id="data:image/png;base64," + base64.b64encode(body).decode())


def test_image_download_timeout(run: RunContext, http_server: tuple[str, Routes],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    base, routes = http_server
    routes.slow("/stalls.png", delay_s=3)
    routes.slow("/trickles.png", delay_s=0.2, chunks=10)
    monkeypatch.setattr(image_sources, "FETCH_TIMEOUT_S", 0.5)
    for path in ("/stalls.png", "/trickles.png"):
        with pytest.raises(image_sources.ImageSourceError, match="FETCH_TIMEOUT_S"):
            node("ComfyUIDeployExternalImage")(input_id=f"{base}{path}")
    # The limit is on the whole download, not on each read: the image that keeps trickling in
    # (each chunk well within the limit) was hung up on before its last chunk.
    wait_until(lambda: "/trickles.png" in routes.cut, timeout=10)


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_image_batch_fetches_resizes_and_reports_progress(run: RunContext, progress: Progress,
                                                          http_server: tuple[str, Routes]) -> None:
    base, routes = http_server
    white = np.full((4, 6, 3), 255, dtype=np.uint8)
    routes.bytes("/first.png", png_bytes(white))
    routes.bytes("/set.zip", zip_of({"a.png": png_bytes(white * 0), "notes.txt": b"skip",
                                     "b.png": png_bytes(np.full((8, 12, 3), 255, np.uint8))}),
                 content_type="application/zip")
    sources = [f"{base}/first.png", data_uri(np.zeros((2, 3, 3), np.uint8)), f"{base}/set.zip"]
    (batch,) = node("ComfyUIDeployExternalImageBatch")(input_id="pics",
                                                        images=json.dumps(sources))
    assert batch.shape == (4, 4, 6, 3)
    assert np.allclose(batch[0], 1.0) and np.allclose(batch[1], 0.0)
    assert np.allclose(batch[2], 0.0) and np.allclose(batch[3], 1.0, atol=1 / 255)
    assert [report[:2] for report in progress.reports] == [(1, 3), (2, 3), (3, 3)]


def test_image_batch_errors_and_default(run: RunContext,
                                        http_server: tuple[str, Routes]) -> None:
    base, _ = http_server
    batch_node = node("ComfyUIDeployExternalImageBatch")
    default = pattern()
    assert batch_node(input_id="pics", images="[]", default_value=default)[0] is not None
    with pytest.raises(ValueError, match="images: expected a JSON list"):
        batch_node(input_id="pics", images="[not json")
    with pytest.raises(image_sources.ImageSourceError, match=r"images\[0\]: .*HTTP 404"):
        batch_node(input_id="pics", images=[f"{base}/missing.png"])
    with pytest.raises(ValueError, match="list is empty"):
        batch_node(input_id="pics", images="[]")


# ------------------------------------------------------------------------------ apply_inputs


def external(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


@pytest.mark.parametrize(("class_type", "node_inputs", "value", "expected"), [
    ("ComfyUIDeployExternalText", {"default_value": ""}, "a cat",
     {"input_id": "a cat", "default_value": "a cat"}),
    ("ComfyUIDeployExternalTextAny", {"default_value": ""}, 12,
     {"input_id": 12, "default_value": 12}),
    ("ComfyUIDeployExternalNumber", {"default_value": 1.0}, 2.5,
     {"input_id": 2.5, "default_value": 1.0}),
    ("ComfyUIDeployExternalNumberInt", {"default_value": 0}, 7,
     {"input_id": 7, "default_value": 0}),
    ("ComfyUIDeployExternalNumberSlider", {"min_value": 0, "max_value": 1}, 0.25,
     {"input_id": 0.25, "min_value": 0, "max_value": 1}),
    ("ComfyUIDeployExternalNumberSliderInt", {"min_value": 0, "max_value": 10}, 4,
     {"input_id": 4, "min_value": 0, "max_value": 10}),
    ("ComfyUIDeployExternalBoolean", {"default_value": False}, "true",
     {"input_id": "true", "default_value": True}),
    ("ComfyUIDeployExternalSeed", {"default_value": -1}, 1234,
     {"input_id": 1234, "default_value": 1234}),
    ("ComfyUIDeployExternalEnum", {"options": '["a", "b"]', "default_value": "a"}, "b",
     {"input_id": "b", "options": '["a", "b"]', "default_value": "b"}),
    ("ComfyUIDeployExternalImage", {"default_value_url": ""}, "https://x.test/a.png",
     {"input_id": "https://x.test/a.png", "default_value_url": ""}),
    # A list stays out of the graph as a list: there, [node_id, index] is a link.
    ("ComfyUIDeployExternalImageBatch", {"images": "[]"}, ["https://x.test/a.png"],
     {"input_id": '["https://x.test/a.png"]', "images": '["https://x.test/a.png"]'}),
])
def test_apply_inputs_puts_each_value_where_its_class_reads_it(
        class_type: str, node_inputs: dict[str, Any], value: Any,
        expected: dict[str, Any]) -> None:
    graph = {"5": external(class_type, input_id="the_input", **node_inputs),
             "6": external("SaveImage", filename_prefix="x", images=["5", 0])}
    original = json.loads(json.dumps(graph))
    applied = apply_inputs(graph, {"the_input": value, "unknown": 1})
    assert applied["5"]["inputs"] == expected
    assert applied["6"] == original["6"]
    assert graph == original  # the caller's graph is untouched


def test_apply_inputs_feeds_every_node_with_that_id_and_then_the_node_reads_it(
        run: RunContext) -> None:
    graph = {"1": external("ComfyUIDeployExternalNumberInt", input_id="steps", default_value=3),
             "2": external("ComfyUIDeployExternalNumberInt", input_id="steps", default_value=5),
             "3": external("ComfyUIDeployExternalText", input_id="other", default_value="x")}
    applied = apply_inputs(graph, {"steps": 9})
    for node_id in ("1", "2"):
        assert node("ComfyUIDeployExternalNumberInt")(**applied[node_id]["inputs"]) == (9,)
    assert applied["3"] == graph["3"]
    assert apply_inputs(graph, {}) == graph


@pytest.mark.parametrize(("class_type", "node_inputs", "value", "message"), [
    ("ComfyUIDeployExternalNumber", {}, "many", "expected a finite number, got 'many'"),
    ("ComfyUIDeployExternalNumberInt", {}, 2.5, "expected an integer, got 2.5"),
    ("ComfyUIDeployExternalNumberSlider", {"min_value": 0, "max_value": 1}, 3,
     r"outside the slider's range 0\.0\.\.1\.0"),
    ("ComfyUIDeployExternalBoolean", {"default_value": False}, "maybe", "expected a boolean"),
    ("ComfyUIDeployExternalSeed", {}, "random", "expected an integer"),
    ("ComfyUIDeployExternalEnum", {"options": '["a", "b"]'}, "c", "not one of the options"),
    ("ComfyUIDeployExternalImage", {}, "cat.png", "expected an http\\(s\\) URL"),
    ("ComfyUIDeployExternalImageBatch", {}, ["ftp://x/a.png"], r"item 0: expected an http"),
])
def test_apply_inputs_refuses_values_that_cannot_fit(class_type: str,
                                                     node_inputs: dict[str, Any], value: Any,
                                                     message: str) -> None:
    graph = {"7": external(class_type, input_id="field", **node_inputs)}
    with pytest.raises(ExternalInputError, match=message) as raised:
        apply_inputs(graph, {"field": value})
    assert str(raised.value).startswith("inputs.field: ")
    assert f"(node 7, {class_type})" in str(raised.value)


def test_apply_inputs_ignores_linked_input_ids() -> None:
    graph = {"1": external("PrimitiveString", value="k"),
             "2": external("ComfyUIDeployExternalText", input_id=["1", 0], default_value="d")}
    assert apply_inputs(graph, {"k": "v"}) == graph


# ------------------------------------------------------------------------------- torch probe


def test_torch_probe_is_registered_only_where_torch_imports() -> None:
    assert ("ComfyqTorchDeviceProbe" in NODE_CLASS_MAPPINGS) == TORCH_IMPORTS


def run_python(code: str, extra_path: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter with this checkout (and ``extra_path``) importable."""
    paths = [str(path) for path in (extra_path, REPO) if path]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-c", code], env=environment, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_a_broken_torch_install_leaves_the_probe_out(tmp_path: Path) -> None:
    broken = tmp_path / "torch"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open')\n")
    printed = run_python("import comfyq.nodes as nodes; "
                         "print('ComfyqTorchDeviceProbe' in nodes.NODE_CLASS_MAPPINGS, "
                         "'SaveImage' in nodes.NODE_CLASS_MAPPINGS)", extra_path=tmp_path)
    assert printed.split() == ["False", "True"]


@pytest.mark.skipif(not TORCH_IMPORTS, reason="torch is not installed here")
def test_importing_the_nodes_initialises_no_cuda() -> None:
    printed = run_python("import comfyq.nodes as nodes, torch; "
                         "print('ComfyqTorchDeviceProbe' in nodes.NODE_CLASS_MAPPINGS, "
                         "torch.cuda.is_initialized())")
    assert printed.split() == ["True", "False"]


@pytest.mark.skipif(not TORCH_IMPORTS, reason="torch is not installed here")
def test_torch_probe_reports_device_and_checksum(run: RunContext) -> None:
    result = node("ComfyqTorchDeviceProbe")()
    (report,) = result["result"]
    assert result["ui"] == {"text": [report]}
    assert re.fullmatch(r"cpu .+ checksum=\S+", report)


# ----------------------------------------------------------------- ComfyUI reference pixels


class ReferenceLoadImage:
    """ComfyUI's LoadImage for the reference graphs: an input PNG of the reference folder."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"image": ("STRING", {})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image: str) -> tuple[np.ndarray, np.ndarray]:
        with Image.open(REFERENCE / image) as picture:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
        return pixels[None], np.zeros((1,) + pixels.shape[:2], dtype=np.float32)


REFERENCE_MANIFEST = json.loads((REFERENCE / "graphs.json").read_text())


@pytest.mark.parametrize("tensors", [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(not TORCH_IMPORTS,
                                                   reason="torch is not installed here"))])
@pytest.mark.parametrize("name", sorted(REFERENCE_MANIFEST["graphs"]))
def test_nodes_reproduce_comfyui_reference_pngs(name: str, tensors: str, tmp_path: Path) -> None:
    entry = REFERENCE_MANIFEST["graphs"][name]
    context = RunContext(run_id="ref", output_dir=tmp_path / "output", temp_dir=tmp_path / "temp")
    classes = {**NODE_CLASS_MAPPINGS, "LoadImage": ReferenceLoadImage}
    with running(context):
        outputs = execute_graph(entry["graph"], classes, context, tensor_library=tensors)
    records = [image for ui in outputs.values() for image in ui["images"]]
    comfyui_records = entry["comfyui_records"]
    assert len(records) == len(comfyui_records)
    for record, theirs, reference in zip(records, comfyui_records, entry["references"],
                                          strict=True):
        assert record["type"] == theirs["type"]
        if theirs["type"] == "output":
            assert record["filename"] == theirs["filename"]
            assert record["subfolder"] == "/".join(filter(None, ["ref", theirs["subfolder"]]))
        folder = context.output_dir if record["type"] == "output" else context.temp_dir
        relative = record["subfolder"].removeprefix("ref").strip("/")
        mine = read_png(folder / relative / record["filename"])
        expected = read_png(REFERENCE / reference)
        assert mine.shape == expected.shape
        # 8-bit truncation of float results that differ in the last bits can differ by 1.
        assert np.abs(mine - expected).max() <= 1, f"{name}: pixels differ from ComfyUI's"


# ------------------------------------------------------------------- whole graphs, in process


def test_comfydeploy_graph_runs_with_request_inputs_in_process(tmp_path: Path) -> None:
    from comfyq.execution.inprocess import InProcessBackend

    graph = {
        "1": external("ComfyUIDeployExternalNumberInt", input_id="width", default_value=3),
        "2": external("ComfyUIDeployExternalText", input_id="name", default_value="plain"),
        "3": external("EmptyImage", width=["1", 0], height=2, batch_size=1, color=0x0000FF),
        "4": external("ComfyDeployOutputImage", images=["3", 0], filename_prefix=["2", 0],
                      file_type="png", quality=80, output_id="picture"),
        "5": external("ComfyDeployOutputText", text=["2", 0], filename_prefix="caption",
                      file_type="txt"),
    }
    context = RunContext(run_id="run-9", output_dir=tmp_path / "run-9", temp_dir=tmp_path / "t")
    outputs = InProcessBackend(NODE_CLASS_MAPPINGS).execute(
        graph, {"width": 5, "name": "blue"}, context, lambda *_: None)
    assert outputs["4"]["images"] == [{"filename": "blue_00001_.png", "subfolder": "run-9",
                                       "type": "output", "output_id": "picture"}]
    assert read_png(context.output_dir / "blue_00001_.png").shape == (2, 5, 3)
    assert outputs["5"]["text"] == ["blue"]
    assert (context.output_dir / "caption_00001_.txt").read_text() == "blue"


def test_apply_inputs_leaves_the_graph_it_was_given_untouched() -> None:
    graph = {"1": {"class_type": "ComfyUIDeployExternalText",
                   "inputs": {"input_id": "prompt", "default_value": "a cat"}},
             "2": {"class_type": "PrimitiveInt", "inputs": {"value": 3}}}
    before = json.loads(json.dumps(graph))
    prepared = apply_inputs(graph, {"prompt": "a dog"})
    assert graph == before
    assert prepared["1"]["inputs"]["default_value"] == "a dog"
    assert prepared["2"] == graph["2"]
