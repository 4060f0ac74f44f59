"""Node catalogs: /object_info entries from node classes, loading, and combining workers' catalogs.

Hand-written classes are compared with the entries ComfyUI 0.3.64 really served for the same
nodes; combining is checked on modified copies of that real catalog.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from comfyq.catalog.object_info import build_catalog, combine_catalogs, load_catalog, node_info
from comfyq.catalog.validation import PromptValidationError, validate_prompt
from tests.paths import OBJECT_INFO, SD15_WORKFLOW

CATALOG_PATH = OBJECT_INFO
SD15_PATH = SD15_WORKFLOW


@pytest.fixture(scope="module")
def real_catalog() -> dict:
    return load_catalog(CATALOG_PATH)


@pytest.fixture
def catalog_copy(real_catalog: dict) -> dict:
    return copy.deepcopy(real_catalog)


class Wildcard(str):
    """Like ComfyUI's AnyType: a ``str`` subclass that compares equal to every type."""

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class SaveImageLike:
    """Declared as ComfyUI 0.3.64's SaveImage is."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {
                    "default": "ComfyUI",
                    "tooltip": "The prefix for the file to save. This may include formatting "
                               "information such as %date:yyyy-MM-dd% or %Empty Latent "
                               "Image.width% to include values from nodes."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."


class CheckpointLoaderLike:
    """Declared as ComfyUI 0.3.64's CheckpointLoaderSimple is (with no checkpoints installed)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"ckpt_name": ([], {
            "tooltip": "The name of the checkpoint (model) to load."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The model used for denoising latents.",
                       "The CLIP model used for encoding text prompts.",
                       "The VAE model used for encoding and decoding images to and from "
                       "latent space.")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise " \
                  "latents."


class Bare:
    """Only what a node must declare."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"


class Passthrough:
    """A wildcard-typed node with every optional attribute set."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"anything": (Wildcard("*"), {})},
                "optional": {"mode": (["keep", "drop"],)}}

    RETURN_TYPES = (Wildcard("*"), "STRING")
    RETURN_NAMES = ("value", "summary")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = ("the input", "what it was")
    OUTPUT_NODE = True
    DEPRECATED = True
    EXPERIMENTAL = True
    API_NODE = False
    RELATIVE_PYTHON_MODULE = "custom_nodes.passthrough"
    CATEGORY = "utils"
    FUNCTION = "run"


class Broken:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        raise RuntimeError("model folder not configured")

    RETURN_TYPES = ()


# --- node_info and build_catalog ---------------------------------------------------------------

def test_node_info_matches_the_entries_comfyui_serves(real_catalog: dict) -> None:
    assert node_info("SaveImage", SaveImageLike, "Save Image") == real_catalog["SaveImage"]
    assert node_info("CheckpointLoaderSimple", CheckpointLoaderLike, "Load Checkpoint") == \
        real_catalog["CheckpointLoaderSimple"]


def test_node_info_defaults_follow_comfyui(real_catalog: dict) -> None:
    info = node_info("Bare", Bare)
    assert info == {
        "input": {"required": {"value": ["INT", {"default": 1}]}},
        "input_order": {"required": ["value"]},
        "output": ["INT"], "output_is_list": [False], "output_name": ["INT"],
        "name": "Bare", "display_name": "Bare", "description": "", "python_module": "nodes",
        "category": "sd", "output_node": False,
    }
    # Same keys, in the same order, as a real entry of a node that sets nothing optional.
    assert list(info) == list(real_catalog["EmptyImage"])


def test_node_info_carries_optional_attributes_as_plain_json() -> None:
    info = node_info("Passthrough", Passthrough)
    assert info["input"] == {"required": {"anything": ["*", {}]},
                             "optional": {"mode": [["keep", "drop"]]}}
    assert info["input_order"] == {"required": ["anything"], "optional": ["mode"]}
    assert info["output"] == ["*", "STRING"]
    assert type(info["output"][0]) is str  # the wildcard's class does not leak into catalogs
    assert type(info["input"]["required"]["anything"][0]) is str
    assert info["output_name"] == ["value", "summary"]
    assert info["output_is_list"] == [False, True]
    assert info["output_tooltips"] == ["the input", "what it was"]
    assert info["output_node"] is True
    assert (info["deprecated"], info["experimental"], info["api_node"]) == (True, True, False)
    assert info["python_module"] == "custom_nodes.passthrough"
    assert info["category"] == "utils"
    assert json.loads(json.dumps(info)) == info


def test_output_node_is_decided_like_comfyuis_server() -> None:
    class OutputByOne(Bare):
        OUTPUT_NODE = 1

    class OutputByString(Bare):
        OUTPUT_NODE = "yes"

    assert node_info("A", OutputByOne)["output_node"] is True
    assert node_info("B", OutputByString)["output_node"] is False


def test_build_catalog_uses_display_names_and_leaves_out_broken_classes(caplog) -> None:
    catalog = build_catalog({"SaveImage": SaveImageLike, "Broken": Broken, "Bare": Bare},
                            display_names={"SaveImage": "Save Image"})
    assert list(catalog) == ["SaveImage", "Bare"]
    assert catalog["SaveImage"]["display_name"] == "Save Image"
    assert catalog["Bare"]["display_name"] == "Bare"
    assert "Broken" in caplog.text and "model folder not configured" in caplog.text


def test_a_built_catalog_validates_graphs() -> None:
    catalog = build_catalog({"Passthrough": Passthrough, "Bare": Bare})
    validate_prompt({"1": {"class_type": "Bare", "inputs": {"value": 3}},
                     "2": {"class_type": "Passthrough", "inputs": {"anything": ["1", 0]}}},
                    catalog)
    with pytest.raises(PromptValidationError) as refused:
        validate_prompt({"2": {"class_type": "Passthrough",
                               "inputs": {"anything": 1, "mode": "shred"}}}, catalog)
    assert refused.value.node_errors["2"]["errors"][0]["type"] == "value_not_in_list"


# --- load_catalog --------------------------------------------------------------------------------

def test_load_catalog_reads_the_real_catalog(real_catalog: dict) -> None:
    assert len(real_catalog) == 478
    assert real_catalog["KSampler"]["name"] == "KSampler"


def test_load_catalog_refuses_json_that_is_not_a_catalog(tmp_path: Path) -> None:
    path = tmp_path / "not-a-catalog.json"
    path.write_text(json.dumps(["KSampler"]))
    with pytest.raises(ValueError, match="not-a-catalog.json: a node catalog must be"):
        load_catalog(path)


# --- combine_catalogs ---------------------------------------------------------------------------

def _with_checkpoints(catalog: dict, names: list[str]) -> dict:
    changed = copy.deepcopy(catalog)
    changed["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = names
    return changed


def test_identical_catalogs_combine_to_the_same_catalog(real_catalog: dict) -> None:
    assert combine_catalogs([real_catalog, real_catalog, real_catalog]) == real_catalog
    assert combine_catalogs([real_catalog]) == real_catalog
    assert combine_catalogs([]) == {}


def test_combined_catalog_offers_only_classes_every_worker_has(catalog_copy: dict,
                                                               real_catalog: dict) -> None:
    del catalog_copy["KSampler"]
    combined = combine_catalogs([real_catalog, catalog_copy])
    assert "KSampler" not in combined
    assert "KSampler" not in combine_catalogs([catalog_copy, real_catalog])
    assert len(combined) == 477


def test_combo_choices_are_intersected_so_any_worker_can_run_the_graph(
        real_catalog: dict) -> None:
    first = _with_checkpoints(real_catalog, ["sd15.safetensors", "sdxl.safetensors"])
    second = _with_checkpoints(real_catalog, ["flux.safetensors", "sd15.safetensors"])
    for combined in (combine_catalogs([first, second]), combine_catalogs([second, first])):
        assert combined["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "sd15.safetensors"]
    sd15 = json.loads(SD15_PATH.read_text())
    sd15["4"]["inputs"]["ckpt_name"] = "sd15.safetensors"
    validate_prompt(sd15, combine_catalogs([first, second]))
    sd15["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    validate_prompt(sd15, first)
    with pytest.raises(PromptValidationError) as refused:
        validate_prompt(sd15, combine_catalogs([first, second]))
    assert refused.value.node_errors["4"]["errors"][0]["type"] == "value_not_in_list"


def test_new_style_combo_options_are_intersected(catalog_copy: dict, real_catalog: dict) -> None:
    blend_mode = catalog_copy["ImageBlend"]["input"]["required"]["blend_mode"]
    blend_mode[1]["options"] = ["screen", "normal", "glow"]
    combined = combine_catalogs([real_catalog, catalog_copy])
    assert combined["ImageBlend"]["input"]["required"]["blend_mode"] == [
        "COMBO", {"multiselect": False, "options": ["normal", "screen"]}]


def test_numeric_limits_take_the_tighter_bound(catalog_copy: dict, real_catalog: dict) -> None:
    width = catalog_copy["EmptyImage"]["input"]["required"]["width"][1]
    width["min"], width["max"] = 8, 4096
    height = catalog_copy["EmptyImage"]["input"]["required"]["height"][1]
    height["max"] = 99999
    for combined in (combine_catalogs([real_catalog, catalog_copy]),
                     combine_catalogs([catalog_copy, real_catalog])):
        limits = combined["EmptyImage"]["input"]["required"]
        assert (limits["width"][1]["min"], limits["width"][1]["max"]) == (8, 4096)
        assert (limits["height"][1]["min"], limits["height"][1]["max"]) == (1, 16384)


def test_an_input_required_by_any_worker_is_required(catalog_copy: dict,
                                                     real_catalog: dict) -> None:
    composite = catalog_copy["ImageCompositeMasked"]["input"]
    composite["required"]["mask"] = composite["optional"].pop("mask")
    combined = combine_catalogs([real_catalog, catalog_copy])["ImageCompositeMasked"]
    assert "mask" in combined["input"]["required"]
    assert "mask" not in combined["input"].get("optional", {})
    assert combined["input_order"]["required"][-1] == "mask"


def test_socket_types_are_intersected_and_conflicts_leave_the_class_out(
        catalog_copy: dict, real_catalog: dict) -> None:
    conversion = catalog_copy["TripoConversionNode"]["input"]["required"]
    conversion["original_model_task_id"][0] = "RIG_TASK_ID,MODEL_TASK_ID"
    catalog_copy["PreviewAny"]["input"]["required"]["source"][0] = "IMAGE"
    catalog_copy["ImageInvert"]["input"]["required"]["image"][0] = "MASK"
    combined = combine_catalogs([real_catalog, catalog_copy])
    assert combined["TripoConversionNode"]["input"]["required"]["original_model_task_id"][0] \
        == "MODEL_TASK_ID,RIG_TASK_ID"
    assert combined["PreviewAny"]["input"]["required"]["source"][0] == "IMAGE"
    assert "ImageInvert" not in combined


def test_outputs_keep_only_what_every_worker_produces(catalog_copy: dict,
                                                      real_catalog: dict) -> None:
    loader = catalog_copy["CheckpointLoaderSimple"]
    loader["output"] = ["MODEL", "CLIP"]
    catalog_copy["PreviewImage"]["output_node"] = False
    combined = combine_catalogs([real_catalog, catalog_copy])
    assert combined["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP"]
    assert combined["CheckpointLoaderSimple"]["output_name"] == ["MODEL", "CLIP"]
    assert combined["PreviewImage"]["output_node"] is False


def test_combining_modifies_no_catalog(real_catalog: dict) -> None:
    first = _with_checkpoints(real_catalog, ["a.safetensors", "b.safetensors"])
    second = _with_checkpoints(real_catalog, ["b.safetensors"])
    before = copy.deepcopy([first, second])
    combined = combine_catalogs([first, second])
    combined["EmptyImage"]["input"]["required"]["width"][1]["max"] = 1
    assert [first, second] == before
