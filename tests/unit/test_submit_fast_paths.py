"""The quick checks and encodings every submit takes agree with the thorough ones they stand in
for: the same verdict on request values, the same JSON text for record fields."""

from __future__ import annotations

import collections
import json

import pytest

from comfyq.request_json import MAX_INTEGER, MAX_JSON_DEPTH, _is_clean, value_problems
from comfyq.runs.codec import encode_value


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


VALUES = [
    "plain", "ünïcode ✓", "\ud800", {"\udfff": 1}, {"a": ["\ud83d"]}, "\ud83d\ude00",
    MAX_INTEGER, MAX_INTEGER + 1, -MAX_INTEGER, -MAX_INTEGER - 1, 10**400, 1.5, 1e300,
    float("nan"), float("inf"), -float("inf"), True, False, None, 0, -0.0,
    [], {}, [[[]]], nested(MAX_JSON_DEPTH - 1), nested(MAX_JSON_DEPTH), nested(MAX_JSON_DEPTH + 1),
    collections.OrderedDict(a="\ud800"),
    {"workflow_api_json": {"1": {"inputs": {"seed": 2**64, "text": "ok"}}}},
    {"1": {"inputs": {"values": [1, 2.5, "x", None, {"deep": float("nan")}]}}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_quick_check_agrees_with_the_listing_of_problems(value):
    assert _is_clean(value, 0) == (value_problems(value) == [])


def test_values_of_other_types_are_left_to_the_listing():
    # Only JSON's own types are checked quickly; a dict subclass is walked in full, and passes.
    value = collections.OrderedDict(a=1)
    assert not _is_clean(value, 0)
    assert value_problems(value) == []


ENCODED = [None, True, False, 0, -7, 2**70, 1.5, -0.0, 1e300, 0.1, "text", "ü\n\"", [1, "a"],
           {"b": None}, 3.0]


@pytest.mark.parametrize("value", ENCODED, ids=range(len(ENCODED)))
def test_field_values_encode_as_compact_json(value):
    text = encode_value(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert json.loads(text) == value
