"""The recorded real-ComfyUI transcripts are well-formed and tell one consistent story.

The transcripts in tests/data/comfyui_transcripts/ were recorded from ComfyUI 0.3.64 on CPU
(see the README there). These checks keep them trustworthy as the yardstick for comfyq's
stand-in server: frame shapes, the per-prompt event order, and agreement between the websocket
frames and the history entries recorded beside them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.paths import TRANSCRIPTS

EXPECTED_FILES = ["success", "cached", "validation_error", "execution_error", "interrupt",
                  "object_info_sample", "upload", "binary_frames"]
TERMINAL_EVENTS = {"execution_success", "execution_error", "execution_interrupted"}


def load(name: str) -> dict[str, Any]:
    return json.loads((TRANSCRIPTS / f"{name}.json").read_text())


def case(name: str, case_name: str) -> dict[str, Any]:
    return next(c for c in load(name)["cases"] if c["name"] == case_name)


def text_frames(case_doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["text"] for f in case_doc["ws_frames"] if "text" in f]


def own_prompt_ids(case_doc: dict[str, Any]) -> list[str]:
    """Prompts this case's client submitted and the server accepted, in order, without repeats."""
    ids: list[str] = []
    for ex in case_doc["http"]:
        if (ex["method"], ex["path"], ex["status"]) == ("POST", "/prompt", 200) \
                and ex["request_json"].get("client_id") == case_doc["client_id"] \
                and ex["body"]["prompt_id"] not in ids:
            ids.append(ex["body"]["prompt_id"])
    return ids


def runs_of(frames: list[dict[str, Any]], prompt_id: str) -> list[list[dict[str, Any]]]:
    """The frames naming prompt_id, split into one list per execution (a reused id runs twice)."""
    runs: list[list[dict[str, Any]]] = []
    for frame in frames:
        if frame["data"].get("prompt_id") != prompt_id:
            continue
        if frame["type"] == "execution_start":
            runs.append([])
        assert runs, f"{prompt_id}: {frame['type']} before execution_start"
        runs[-1].append(frame)
    return runs


def history_entries(case_doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(pid, entry) for ex in case_doc["http"]
            if ex["method"] == "GET" and ex["path"].startswith("/history/") and ex.get("body")
            for pid, entry in ex["body"].items()]


def all_cases() -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name in EXPECTED_FILES for c in load(name)["cases"]]


def test_every_file_names_the_comfyui_it_came_from_and_all_stay_small() -> None:
    assert sorted(p.stem for p in TRANSCRIPTS.glob("*.json")) == sorted(EXPECTED_FILES)
    for name in EXPECTED_FILES:
        doc = load(name)
        assert doc["file"] == name
        assert re.fullmatch(r"[0-9a-f]{40}", doc["comfyui"]["commit"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", doc["comfyui"]["version"])
        assert doc["cases"], f"{name} has no cases"
    assert sum(p.stat().st_size for p in TRANSCRIPTS.glob("*.json")) < 200_000


@pytest.mark.parametrize("file_name,case_doc", all_cases(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_frames_are_well_formed_and_open_with_the_clients_status(file_name: str, case_doc: dict[str, Any]) -> None:
    frames = case_doc["ws_frames"]
    assert [f["t_ms"] for f in frames] == sorted(f["t_ms"] for f in frames)
    for frame in frames:
        if "binary" in frame:
            assert frame["binary"]["length"] >= 8
            assert re.fullmatch(r"[0-9a-f]{8}", frame["binary"]["first_4_bytes_hex"])
        else:
            assert set(frame["text"]) == {"type", "data"} and isinstance(frame["text"]["data"], dict)
    first = frames[0]["text"]
    assert first["type"] == "status" and first["data"]["sid"] == case_doc["client_id"]
    assert "queue_remaining" in first["data"]["status"]["exec_info"]


@pytest.mark.parametrize("file_name,case_doc", all_cases(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_each_run_follows_the_event_order(file_name: str, case_doc: dict[str, Any]) -> None:
    frames = text_frames(case_doc)
    for prompt_id in own_prompt_ids(case_doc):
        for run in runs_of(frames, prompt_id):
            types = [f["type"] for f in run]
            assert types[:2] == ["execution_start", "execution_cached"], types
            assert [t for t in types if t in TERMINAL_EVENTS] == [types[-2]], types
            assert run[-1] == {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}
            cached = set(run[1]["data"]["nodes"])
            started = [f["data"]["node"] for f in run[:-1] if f["type"] == "executing"]
            assert not cached & set(started), "a cached node was executed again"
            for frame in run:
                if frame["type"] == "executed":
                    assert frame["data"]["node"] in cached | set(started)
            if types[-2] != "execution_success":
                assert run[-2]["data"]["node_id"] == started[-1], "the failing node is the last one started"
                assert started[-1] not in run[-2]["data"]["executed"]


@pytest.mark.parametrize("file_name,case_doc", all_cases(), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_history_agrees_with_the_frames(file_name: str, case_doc: dict[str, Any]) -> None:
    frames = text_frames(case_doc)
    own = set(own_prompt_ids(case_doc))
    for prompt_id, entry in history_entries(case_doc):
        messages = entry["status"]["messages"]
        terminal = messages[-1][0]
        assert [m[0] for m in messages] == ["execution_start", "execution_cached", terminal]
        assert entry["status"]["status_str"] == ("success" if terminal == "execution_success" else "error")
        assert entry["status"]["completed"] is (terminal == "execution_success")
        assert entry["prompt"][1] == prompt_id
        if prompt_id not in own:
            continue
        run = next(r for r in runs_of(frames, prompt_id) if r[0]["data"] == messages[0][1])
        sent = [(f["type"], f["data"]) for f in run if f["type"] in {m[0] for m in messages}]
        assert sent == [tuple(m) for m in messages]
        shown = {f["data"]["node"]: f["data"]["output"] for f in run if f["type"] == "executed"}
        assert shown == entry["outputs"]


def test_cached_resubmission_runs_nothing_and_points_at_the_first_file() -> None:
    first = history_entries(case("success", "success"))[0][1]
    again_case = case("cached", "cached")
    again = history_entries(again_case)[0][1]
    assert again["outputs"] == first["outputs"]
    frames = text_frames(again_case)
    cached_nodes = next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"]
    assert sorted(cached_nodes) == sorted(again["prompt"][2])
    assert not [f for f in frames if f["type"] == "executing" and f["data"]["node"] is not None]


def test_an_intervening_prompt_evicts_the_cache_so_the_save_runs_again() -> None:
    first = history_entries(case("success", "success"))[0][1]["outputs"]["3"]["images"][0]["filename"]
    evicted_case = case("cached", "cache_evicted")
    again = history_entries(evicted_case)[-1][1]
    assert again["prompt"][2] == case("success", "success")["http"][0]["request_json"]["prompt"]
    assert again["outputs"]["3"]["images"][0]["filename"] == first.replace("_00001_", "_00002_")
    assert {"type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": again["prompt"][1]}} \
        in text_frames(evicted_case)


def test_validation_errors_have_the_documented_shape() -> None:
    exchanges = [ex for ex in case("validation_error", "validation_error")["http"] if ex["path"] == "/prompt"]
    rejected = [ex for ex in exchanges if ex["status"] == 400]
    assert {ex["body"]["error"]["type"] for ex in rejected} == {
        "prompt_outputs_failed_validation", "invalid_prompt", "prompt_no_outputs", "no_prompt"}
    error_types = set()
    for ex in exchanges:
        assert set(ex["body"].get("error", {"type", "message", "details", "extra_info"})) == \
            {"type", "message", "details", "extra_info"}
        for node_error in ex["body"]["node_errors"].values():
            assert set(node_error) == {"errors", "dependent_outputs", "class_type"}
            error_types |= {e["type"] for e in node_error["errors"]}
    assert {"value_smaller_than_min", "required_input_missing", "value_bigger_than_max"} <= error_types
    partial = [ex for ex in exchanges if ex["status"] == 200]
    assert len(partial) == 1 and partial[0]["body"]["node_errors"], "accepted but with node_errors"


def test_deleted_queued_prompt_leaves_the_queue_and_never_runs() -> None:
    doc = case("interrupt", "delete_queued")
    deleted = next(ex for ex in doc["http"] if ex["path"] == "/queue" and ex["method"] == "POST")
    victim = deleted["request_json"]["delete"][0]
    before, after = (ex["body"] for ex in doc["http"] if ex["path"] == "/queue" and ex["method"] == "GET")
    assert victim in [item[1] for item in before["queue_pending"]]
    assert victim not in [item[1] for item in after["queue_pending"] + after["queue_running"]]
    assert not [f for f in text_frames(doc) if f["data"].get("prompt_id") == victim]
    assert next(ex for ex in doc["http"] if ex["path"] == f"/history/{victim}")["body"] == {}
