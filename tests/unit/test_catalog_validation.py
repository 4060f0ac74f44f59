"""Submit-time validation of API graphs against ComfyUI 0.3.64's real node catalog.

First the prompts a real ComfyUI 0.3.64 refused (``tests/data/comfyui_transcripts``): comfyq's
answer must equal the recorded one field by field. Then graphs built from real built-in classes
of that catalog, each error type checked for the body a ComfyUI client reads and the summary a
person reads.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from comfyq.catalog.object_info import load_catalog
from comfyq.catalog.validation import (
    CompiledCatalog,
    PromptValidationError,
    check_prompt,
    compile_catalog,
    validate_prompt,
)
from tests.paths import OBJECT_INFO, SD15_WORKFLOW
from tests.unit.comfyui_recordings import (
    VALIDATION_POSTS,
    recorded_case,
    recorded_history,
    stack_texts_set_aside,
    validation_post_name,
)

CATALOG_PATH = OBJECT_INFO
SD15_PATH = SD15_WORKFLOW
SAVE_IMAGES_CONFIG = ["IMAGE", {"tooltip": "The images to save."}]


@pytest.fixture(scope="module")
def catalog() -> dict:
    return load_catalog(CATALOG_PATH)


def empty_image(**inputs: Any) -> dict:
    return {"class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0} | inputs}


def scale(image: list, **inputs: Any) -> dict:
    return {"class_type": "ImageScale", "inputs": {
        "image": image, "upscale_method": "bilinear", "width": 32, "height": 32,
        "crop": "disabled"} | inputs}


def save(images: Any) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": "t"}}


def refusal(prompt: dict, catalog: dict) -> PromptValidationError:
    before = copy.deepcopy(prompt)
    with pytest.raises(PromptValidationError) as refused:
        validate_prompt(prompt, catalog)
    assert prompt == before, "validation must not modify the prompt"
    body = refused.value.body
    assert json.loads(json.dumps(body)) == body, "the body must be plain JSON"
    return refused.value


def only_error(refused: PromptValidationError, node_id: str) -> dict:
    assert list(refused.node_errors) == [node_id]
    [error] = refused.node_errors[node_id]["errors"]
    return error


# --- what a real ComfyUI answered -------------------------------------------------------------

RECORDED_REFUSALS = [call for call in VALIDATION_POSTS
                     if call["status"] == 400 and "prompt" in call["request_json"]]
[RECORDED_PARTIAL] = [call for call in VALIDATION_POSTS if call["status"] == 200]


@pytest.mark.parametrize("recorded", RECORDED_REFUSALS, ids=validation_post_name)
def test_refuses_as_the_real_comfyui_did(catalog: dict, recorded: dict) -> None:
    refused = refusal(recorded["request_json"]["prompt"], catalog)
    assert stack_texts_set_aside(refused.body) == stack_texts_set_aside(recorded["body"])


def test_a_partly_valid_graph_gets_comfyuis_node_errors_and_runs_only_its_good_output(
        catalog: dict) -> None:
    prompt = RECORDED_PARTIAL["request_json"]["prompt"]
    verdict = check_prompt(prompt, catalog)
    assert verdict.node_errors == RECORDED_PARTIAL["body"]["node_errors"]
    entry = recorded_history(recorded_case("validation_error", "validation_error"),
                             RECORDED_PARTIAL["body"]["prompt_id"])
    assert verdict.good_outputs == entry["prompt"][4] == ["3"]
    # comfyq's submit check refuses what ComfyUI would silently run only in part.
    assert refusal(prompt, catalog).body == verdict.body
    assert verdict.error == {"type": "prompt_outputs_failed_validation",
                             "message": "Prompt outputs failed validation", "details": "",
                             "extra_info": {}}


# --- valid graphs ------------------------------------------------------------------------------

def test_a_valid_image_graph_passes(catalog: dict) -> None:
    validate_prompt({"1": empty_image(), "2": scale(["1", 0]), "3": save(["2", 0])}, catalog)


def test_literals_convert_as_comfyui_converts_them(catalog: dict) -> None:
    # "64" becomes 64 and 40.9 becomes 40 (int()), as ComfyUI does before checking limits.
    validate_prompt({"1": empty_image(width="64", height=40.9), "2": save(["1", 0])}, catalog)
    # A list literal is passed wrapped in __value__, since a bare list is a link.
    validate_prompt({"1": empty_image(width={"__value__": 64}), "2": save(["1", 0])}, catalog)


def test_only_outputs_and_their_ancestors_are_checked(catalog: dict) -> None:
    validate_prompt({"1": empty_image(), "2": save(["1", 0]),
                     "3": empty_image(width=-5), "4": scale(["3", 0], crop="sideways")}, catalog)


def test_upload_combos_accept_files_the_catalog_does_not_list(catalog: dict) -> None:
    # LoadImage lists only example.png; ComfyUI checks the file itself (VALIDATE_INPUTS) on
    # the machine that runs the graph, so an uploaded name must pass here.
    validate_prompt({"1": {"class_type": "LoadImage", "inputs": {"image": "upload-7.png"}},
                     "2": save(["1", 0])}, catalog)


def test_union_and_wildcard_socket_types(catalog: dict) -> None:
    rig = {"class_type": "TripoRigNode", "inputs": {"original_model_task_id": ["1", 1]}}
    model = {"class_type": "TripoTextToModelNode", "inputs": {"prompt": "a chair"}}
    convert = {"class_type": "TripoConversionNode",
               "inputs": {"original_model_task_id": ["2", 1], "format": "GLTF"}}
    validate_prompt({"1": model, "2": rig, "3": convert}, catalog)
    validate_prompt({"1": empty_image(), "2": {"class_type": "PreviewAny",
                                               "inputs": {"source": ["1", 0]}}}, catalog)
    convert_string = copy.deepcopy(convert)
    convert_string["inputs"]["original_model_task_id"] = ["2", 0]
    error = only_error(refusal({"1": model, "2": rig, "3": convert_string}, catalog), "3")
    assert error["details"] == ("original_model_task_id, received_type(STRING) mismatch "
                                "input_type(MODEL_TASK_ID,RIG_TASK_ID,RETARGET_TASK_ID)")


def test_a_wildcard_output_feeds_any_input(catalog: dict) -> None:
    with_any = copy.deepcopy(catalog)
    with_any["EmptyImage"]["output"] = ["*"]
    validate_prompt({"1": empty_image(), "2": save(["1", 0])}, with_any)


def test_sd15_workflow_is_valid_when_the_checkpoint_is_installed(catalog: dict) -> None:
    with_checkpoint = copy.deepcopy(catalog)
    with_checkpoint["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [
        "v1-5-pruned-emaonly.safetensors"]
    validate_prompt(json.loads(SD15_PATH.read_text()), with_checkpoint)


def test_sd15_workflow_names_the_missing_checkpoint(catalog: dict) -> None:
    refused = refusal(json.loads(SD15_PATH.read_text()), catalog)
    assert refused.body == {
        # As in ComfyUI, ``details`` lists the output nodes' own problems only: none here.
        "error": {"type": "prompt_outputs_failed_validation",
                  "message": "Prompt outputs failed validation", "details": "",
                  "extra_info": {}},
        "node_errors": {"4": {
            "errors": [{"type": "value_not_in_list", "message": "Value not in list",
                        "details": "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []",
                        "extra_info": {"input_name": "ckpt_name",
                                       "input_config": [[], {"tooltip": "The name of the "
                                                             "checkpoint (model) to load."}],
                                       "received_value": "v1-5-pruned-emaonly.safetensors"}}],
            "dependent_outputs": ["9"],
            "class_type": "CheckpointLoaderSimple"}},
    }
    assert str(refused) == (
        "Prompt outputs failed validation (1 problem): node 4 (CheckpointLoaderSimple) input "
        "'ckpt_name': Value not in list ['v1-5-pruned-emaonly.safetensors' not in []].")


# --- whole-prompt errors ------------------------------------------------------------------------

def test_unknown_class_refuses_the_whole_prompt(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": {"class_type": "UpscaleWithMagic", "inputs": {}},
                       "3": save(["1", 0])}, catalog)
    assert refused.body == {
        "error": {"type": "invalid_prompt",
                  "message": "Cannot execute because node UpscaleWithMagic does not exist.",
                  "details": "Node ID '#2'", "extra_info": {}},
        "node_errors": {}}
    assert refused.error_type == "invalid_prompt"
    assert str(refused) == ("Cannot execute because node UpscaleWithMagic does not exist. "
                            "(Node ID '#2')")


def test_missing_class_type_refuses_the_whole_prompt(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": {"inputs": {"images": ["1", 0]}}}, catalog)
    assert refused.body["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#2'", "extra_info": {}}
    assert refused.body["node_errors"] == {}


def test_a_prompt_without_output_nodes_is_refused(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": scale(["1", 0])}, catalog)
    assert refused.body == {
        "error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                  "details": "", "extra_info": {}},
        "node_errors": {}}
    assert str(refused) == "Prompt has no outputs"


# --- input errors -------------------------------------------------------------------------------

def test_required_input_missing(catalog: dict) -> None:
    refused = refusal({"1": empty_image(),
                       "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}},
                      catalog)
    assert refused.body["error"] == {
        "type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
        "details": "Required input is missing: images", "extra_info": {}}
    assert refused.node_errors == {"2": {
        "errors": [{"type": "required_input_missing", "message": "Required input is missing",
                    "details": "images", "extra_info": {"input_name": "images"}}],
        "dependent_outputs": ["2"], "class_type": "SaveImage"}}
    assert str(refused) == ("Prompt outputs failed validation (1 problem): node 2 (SaveImage) "
                            "input 'images': Required input is missing.")


def test_bad_linked_input(catalog: dict) -> None:
    error = only_error(refusal({"1": empty_image(), "2": save(["1", 0, 1])}, catalog), "2")
    assert error == {
        "type": "bad_linked_input",
        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        "details": "images",
        "extra_info": {"input_name": "images", "input_config": SAVE_IMAGES_CONFIG,
                       "received_value": ["1", 0, 1]}}


def test_return_type_mismatch(catalog: dict) -> None:
    to_mask = {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "red"}}
    refused = refusal({"1": empty_image(), "2": to_mask, "3": save(["2", 0])}, catalog)
    assert only_error(refused, "3") == {
        "type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
        "details": "images, received_type(MASK) mismatch input_type(IMAGE)",
        "extra_info": {"input_name": "images", "input_config": SAVE_IMAGES_CONFIG,
                       "received_type": "MASK", "linked_node": ["2", 0]}}
    assert "node 3 (SaveImage) input 'images': Return type mismatch between linked nodes " \
           "[received_type(MASK) mismatch input_type(IMAGE)]" in str(refused)


def test_invalid_input_type(catalog: dict) -> None:
    refused = refusal({"1": empty_image(width="wide"), "2": save(["1", 0])}, catalog)
    error = only_error(refused, "1")
    message = "invalid literal for int() with base 10: 'wide'"
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a INT value"
    assert error["details"] == f"width, wide, {message}"
    assert error["extra_info"] == {
        "input_name": "width",
        "input_config": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
        "received_value": "wide", "exception_message": message}
    assert refused.node_errors["1"]["dependent_outputs"] == ["2"]
    blur = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1,
                                                  "sigma": None}}
    error = only_error(refusal({"1": empty_image(), "2": blur, "3": save(["2", 0])}, catalog),
                       "2")
    assert (error["type"], error["message"]) == (
        "invalid_input_type", "Failed to convert an input value to a FLOAT value")


def test_value_smaller_than_min_and_bigger_than_max(catalog: dict) -> None:
    blend = {"class_type": "ImageBlend", "inputs": {
        "image1": ["1", 0], "image2": ["1", 0], "blend_factor": 1.5, "blend_mode": "normal"}}
    refused = refusal({"1": empty_image(width=0), "2": blend, "3": save(["2", 0])}, catalog)
    assert refused.node_errors["1"]["errors"] == [{
        "type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
        "details": "width",
        "extra_info": {"input_name": "width",
                       "input_config": ["INT", {"default": 512, "min": 1, "max": 16384,
                                                "step": 1}],
                       "received_value": 0}}]
    [too_big] = refused.node_errors["2"]["errors"]
    assert (too_big["type"], too_big["message"], too_big["details"]) == (
        "value_bigger_than_max", "Value 1.5 bigger than max of 1.0", "blend_factor")
    assert too_big["extra_info"]["received_value"] == 1.5


def test_value_not_in_list_for_list_combos(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": scale(["1", 0], upscale_method="cubic"),
                       "3": save(["2", 0])}, catalog)
    choices = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert only_error(refused, "2") == {
        "type": "value_not_in_list", "message": "Value not in list",
        "details": f"upscale_method: 'cubic' not in {choices}",
        # A spec without options still shows ``{}``: ComfyUI reports (type, options or {}).
        "extra_info": {"input_name": "upscale_method", "input_config": [choices, {}],
                       "received_value": "cubic"}}


def test_value_not_in_list_leaves_long_lists_out(catalog: dict) -> None:
    prompt = json.loads(SD15_PATH.read_text())
    prompt["3"]["inputs"]["sampler_name"] = "euler_fast"
    error = refusal(prompt, catalog).node_errors["3"]["errors"][0]
    count = len(catalog["KSampler"]["input"]["required"]["sampler_name"][0])
    assert count > 20
    assert error["details"] == f"sampler_name: 'euler_fast' not in (list of length {count})"
    assert error["extra_info"] == {"input_name": "sampler_name", "input_config": None,
                                   "received_value": "euler_fast"}


def test_value_not_in_list_for_new_style_combo_options(catalog: dict) -> None:
    blend = {"class_type": "ImageBlend", "inputs": {
        "image1": ["1", 0], "image2": ["1", 0], "blend_factor": 0.5, "blend_mode": "burn"}}
    error = only_error(refusal({"1": empty_image(), "2": blend, "3": save(["2", 0])}, catalog),
                       "2")
    options = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
    assert error["details"] == f"blend_mode: 'burn' not in {options}"
    assert error["extra_info"]["input_config"] == [
        "COMBO", {"multiselect": False, "options": options}]


# --- links ComfyUI cannot look up ------------------------------------------------------------

@pytest.mark.parametrize("link,exception_type,message", [
    (["7", 0], "KeyError", "'7'"),
    ([1, 0], "KeyError", "1"),
    (["1", 1], "IndexError", "tuple index out of range"),
    (["1", "0"], "TypeError", "tuple indices must be integers or slices, not str"),
])
def test_an_output_whose_link_cannot_be_looked_up(catalog: dict, link: list,
                                                  exception_type: str, message: str) -> None:
    # ComfyUI's lookup raises while it checks the output itself: the exception is the error.
    refused = refusal({"1": empty_image(), "2": save(link)}, catalog)
    error = only_error(refused, "2")
    assert stack_texts_set_aside(error) == {
        "type": "exception_during_validation", "message": "Exception when validating node",
        "details": message,
        "extra_info": {"exception_type": exception_type, "traceback": "<a Python traceback>"}}
    assert refused.body["error"]["details"] == f"Exception when validating node: {message}"
    assert str(refused) == ("Prompt outputs failed validation (1 problem): node 2 (SaveImage): "
                            f"Exception when validating node [{exception_type}: {message}].")


def test_an_inner_node_whose_link_cannot_be_looked_up(catalog: dict) -> None:
    # The lookup raises inside the check of node 2, reached from output 3's input "images":
    # ComfyUI keys the error on node 2 but names the input that led there, and drops node 2's
    # other problems (its check ended at the exception).
    blur = {"class_type": "ImageBlur", "inputs": {"image": ["1", 3], "blur_radius": 0,
                                                  "sigma": 1.0}}
    refused = refusal({"1": empty_image(), "2": blur, "3": save(["2", 0])}, catalog)
    error = only_error(refused, "2")
    assert stack_texts_set_aside(error) == {
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node", "details": "tuple index out of range",
        "extra_info": {"input_name": "images", "input_config": SAVE_IMAGES_CONFIG,
                       "exception_message": "tuple index out of range",
                       "exception_type": "IndexError", "traceback": "<a Python traceback>",
                       "linked_node": ["2", 0]}}
    assert refused.node_errors["2"]["dependent_outputs"] == ["3"]
    assert refused.body["error"]["details"] == ""
    assert "node 2 (ImageBlur): Exception when validating inner node [IndexError: tuple index " \
           "out of range]" in str(refused)


def test_a_negative_output_index_reads_from_the_end_as_in_comfyui(catalog: dict) -> None:
    validate_prompt({"1": empty_image(), "2": save(["1", -1])}, catalog)


# --- beyond ComfyUI -----------------------------------------------------------------------------

def test_dependency_cycle_is_named(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": scale(["3", 0]), "3": scale(["2", 0]),
                       "4": save(["3", 0])}, catalog)
    assert list(refused.node_errors) == ["2", "3"]
    for node_id, source in (("2", "3"), ("3", "2")):
        [error] = refused.node_errors[node_id]["errors"]
        assert error["type"] == "dependency_cycle"
        assert error["message"] == "Node is part of a dependency cycle"
        assert error["extra_info"]["input_name"] == "image"
        assert error["extra_info"]["received_value"] == [source, 0]
        assert error["extra_info"]["cycle"] in (["2", "3", "2"], ["3", "2", "3"])
        assert refused.node_errors[node_id]["dependent_outputs"] == ["4"]
    assert "node 2 (ImageScale) input 'image': Node is part of a dependency cycle" in str(refused)


def test_a_bad_output_refuses_the_prompt_even_when_others_are_good(catalog: dict) -> None:
    refused = refusal({"1": empty_image(), "2": save(["1", 0]),
                       "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                   "filename_prefix": []}}},
                      catalog)
    assert refused.error_type == "prompt_outputs_failed_validation"
    assert list(refused.node_errors) == ["3"]
    assert refused.node_errors["3"]["dependent_outputs"] == ["3"]


def test_dependent_outputs_list_exactly_the_outputs_downstream(catalog: dict) -> None:
    prompt = {"1": empty_image(width=0), "2": scale(["1", 0]), "3": save(["2", 0]),
              "4": save(["1", 0]), "5": empty_image(), "6": save(["5", 0]),
              "7": scale(["5", 0], crop="sideways"), "8": save(["7", 0])}
    refused = refusal(prompt, catalog)
    assert refused.node_errors["1"]["dependent_outputs"] == ["3", "4"]
    assert refused.node_errors["7"]["dependent_outputs"] == ["8"]
    assert list(refused.node_errors) == ["1", "7"]


def test_every_problem_is_listed_in_body_and_summary(catalog: dict) -> None:
    prompt = {"1": empty_image(width=0, color="red"), "2": scale(["1", 0], crop="sideways"),
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}}
    refused = refusal(prompt, catalog)
    found = {(node_id, error["extra_info"]["input_name"], error["type"])
             for node_id, entry in refused.node_errors.items() for error in entry["errors"]}
    assert found == {("1", "width", "value_smaller_than_min"),
                     ("1", "color", "invalid_input_type"),
                     ("2", "crop", "value_not_in_list"),
                     ("3", "filename_prefix", "required_input_missing")}
    # The top-level details hold the output's own problems only, as in ComfyUI.
    assert refused.body["error"]["details"] == "Required input is missing: filename_prefix"
    summary = str(refused)
    assert "\n" not in summary
    assert summary.startswith("Prompt outputs failed validation (4 problems): ")
    for fragment in ("node 1 (EmptyImage) input 'width'", "node 1 (EmptyImage) input 'color'",
                     "node 2 (ImageScale) input 'crop'",
                     "node 3 (SaveImage) input 'filename_prefix'"):
        assert fragment in summary


# --- compiled catalogs ----------------------------------------------------------------------------

def test_a_catalog_is_compiled_once_and_a_compiled_one_validates(catalog: dict) -> None:
    compiled = compile_catalog(catalog)
    assert isinstance(compiled, CompiledCatalog)
    assert compile_catalog(catalog) is compiled
    assert compile_catalog(compiled) is compiled
    validate_prompt({"1": empty_image(), "2": save(["1", 0])}, compiled)
    other = copy.deepcopy(catalog)
    assert compile_catalog(other) is not compiled
