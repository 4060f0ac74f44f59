"""Hostile input to ``comfyq api`` over real HTTP gets a clean answer: 422 naming the field and
the problem with nothing kept, 404 for what cannot be a run, never a 500; and every reader of
runs keeps answering afterwards. Also what the answers carry: ``cache-control: no-store`` on API
JSON, and ``/docs`` loading pinned, integrity-checked files under a Content-Security-Policy."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import requests

from comfyq.api.docs_page import SCRIPT_INTEGRITY, SCRIPT_URL, STYLE_INTEGRITY, STYLE_URL
from comfyq.redis import keys
from comfyq.request_json import MAX_JSON_DEPTH
from tests.e2e.test_api import (  # noqa: F401 (api: the module's API server fixture)
    TOKENS,
    api,
    run_count,
)
from tests.helpers import request

UI_READERS = ("/ui/live/runs", "/ui/fragments/runs")


def get_ui(server, path: str) -> requests.Response:
    return requests.get(f"{server.root}{path}", timeout=30,
                        headers={"Authorization": f"Bearer {TOKENS[0]}"})


def queue(server, body: bytes) -> requests.Response:
    return server.call("POST", "/run/workflow/queue", data=body,
                    headers={"Content-Type": "application/json"})


def refused_with(answer: requests.Response) -> dict[str, str]:
    """field -> type of each problem of a 422."""
    assert answer.status_code == 422, answer.text
    return {problem["field"]: problem["type"] for problem in answer.json()["detail"]}


def deep_body(depth: int) -> bytes:
    text = json.dumps(request())[:-1] + ', "workflow": {"a": ' + "[" * depth + "]" * depth + "}}"
    return text.encode()


@pytest.mark.parametrize("body", [
    json.dumps(request(inputs={"prefix": "\ud800"})).encode(),  # escaped, as JSON writes it
    json.dumps(request(inputs={"prefix": "X"}), ensure_ascii=False).replace(
        '"X"', '"\ud800"').encode("utf-8", "surrogatepass"),  # encoded, as a careless client
], ids=["escaped", "raw"])
def test_text_that_is_not_unicode_is_refused_and_every_reader_still_answers(
        api, redis_client, body):  # noqa: F811
    before = run_count(redis_client)
    answer = queue(api, body)
    assert refused_with(answer) == {"inputs.prefix": "string_not_unicode"}
    assert "lone UTF-16 surrogate" in answer.json()["detail"][0]["msg"]
    assert run_count(redis_client) == before
    assert all(get_ui(api, path).status_code == 200 for path in UI_READERS)


# 30,000 levels: past any parser's recursion limit, in 60 KB (under the test server's body limit).
@pytest.mark.parametrize("depth", [30_000, 900, MAX_JSON_DEPTH])
def test_json_nested_past_the_limit_is_refused_with_the_limit(
        api, redis_client, depth):  # noqa: F811
    before = run_count(redis_client)
    answer = queue(api, deep_body(depth))
    assert set(refused_with(answer).values()) == {"json_too_deep"}
    assert f"limit of {MAX_JSON_DEPTH} levels" in answer.json()["detail"][0]["msg"]
    assert run_count(redis_client) == before


@pytest.mark.parametrize(("literal", "where", "field"), [
    ("NaN", '"prefix": "p"', "inputs.width"),
    ("Infinity", '"prefix": "p"', "inputs.width"),
    ("-Infinity", '"height": 8', "workflow_api_json.1.inputs.height"),
])
def test_nan_and_infinity_in_checked_inputs_are_refused_not_crashed_on(
        api, literal, where, field):  # noqa: F811
    text = json.dumps(request(inputs={"prefix": "p"}))
    if field == "inputs.width":
        text = text.replace(where, f'{where}, "width": {literal}')
    else:
        text = text.replace(where, f'"height": {literal}')
    assert refused_with(queue(api, text.encode())) == {field: "number_not_finite"}


@pytest.mark.parametrize(("link", "message"), [
    (["1"], "a list of 2 items; got 1"), (["1", "0"], "must be an integer; got '0'"),
    (["1", 0, 1], "a list of 2 items; got 3"),
])
def test_a_malformed_link_is_refused_with_comfyuis_error_type(api, link, message):  # noqa: F811
    body = request()
    body["workflow_api_json"]["2"]["inputs"]["image"] = link
    answer = api.call("POST", "/run/workflow/queue", json=body)
    assert refused_with(answer) == {
        "workflow_api_json.2.inputs.image": "prompt_outputs_failed_validation"}
    assert message in answer.json()["detail"][0]["msg"]


NOT_RUN_IDS = ["comfyq:workers", "comfyq%3Aworkers", "..%2Fx", "%2E%2E", "x" * 10_240, "a%00b",
               "%7Bx%7D", "comfyq:run:%7Bx%7D"]
RUN_ROUTES = [("GET", "/api/run/{}"), ("POST", "/api/run/{}/cancel"),
              ("GET", "/ui/fragments/runs/{}"), ("GET", "/ui/live/runs/{}"),
              ("GET", "/ui/files/{}/0")]


def shown(run_id: str) -> str:
    """The id as the answer names it: decoded, and cut after 64 characters."""
    decoded = unquote(run_id)
    return decoded if len(decoded) <= 64 else decoded[:64] + "..."


@pytest.mark.parametrize("run_id", NOT_RUN_IDS, ids=lambda run_id: run_id[:20])
def test_what_cannot_be_a_run_id_is_404_on_every_run_route(api, run_id):  # noqa: F811
    for method, route in RUN_ROUTES:
        answer = requests.request(method, api.root + route.format(run_id), timeout=30,
                                  headers={"Authorization": f"Bearer {TOKENS[0]}"})
        assert answer.status_code == 404, (method, route, answer.text[:200])
        # An id holding "/" matches no route at all; any other is refused as no run's id.
        assert answer.json()["detail"] in ("Not Found", f"no run with id {shown(run_id)!r}")


@pytest.fixture
def key_of_another_kind(redis_client) -> Iterator[str]:
    """A string key where a run id that is not one would look for its record."""
    run_id = "comfyq:workers"
    redis_client.set(keys.run(run_id), "not a run record")
    yield run_id
    redis_client.delete(keys.run(run_id))


def test_a_run_id_naming_another_kind_of_key_is_404_not_a_redis_error(
        api, key_of_another_kind):  # noqa: F811
    for method, route in RUN_ROUTES[:2]:
        answer = requests.request(method, api.root + route.format(key_of_another_kind),
                                  timeout=30, headers={"Authorization": f"Bearer {TOKENS[0]}"})
        assert answer.status_code == 404


def test_api_json_is_never_stored_by_caches(api):  # noqa: F811
    run_id = api.call("POST", "/run/workflow/queue", json=request()).json()["run_id"]
    answers = [api.call("GET", f"/run/{run_id}"), api.call("GET", "/run/no-such-run"),
               queue(api, b"{"), api.call("GET", f"/run/{run_id}", token="wrong"),
               requests.get(f"{api.root}/openapi.json", timeout=30)]
    assert [answer.status_code for answer in answers] == [200, 404, 422, 401, 200]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_docs_load_only_pinned_files_checked_by_integrity_under_a_policy(api):  # noqa: F811
    docs = requests.get(f"{api.root}/docs", timeout=30)
    assert docs.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in
                  docs.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert re.fullmatch(rf"'sha256-[A-Za-z0-9+/=]+' {re.escape(SCRIPT_URL)}",
                        policy["script-src"])
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert (f'src="{SCRIPT_URL}" integrity="{SCRIPT_INTEGRITY}" crossorigin="anonymous"'
            in docs.text)
    assert (f'href="{STYLE_URL}" integrity="{STYLE_INTEGRITY}" crossorigin="anonymous"'
            in docs.text)
    assert set(re.findall(r"https://[^\"' ]+", docs.text)) == {SCRIPT_URL, STYLE_URL}


def test_the_document_states_what_the_server_refuses(api):  # noqa: F811
    document = requests.get(f"{api.root}/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    run_id = document["paths"]["/api/run/{run_id}"]["get"]["parameters"][0]["schema"]
    assert run_id["pattern"] == "^[A-Za-z0-9_-]{1,64}$" and run_id["maxLength"] == 64
    queue_parameters = document["paths"]["/api/run/workflow/queue"]["post"]["parameters"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= queue_parameters[0].items()
    assert queue_parameters[0]["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}
    assert schemas["GPU"]["enum"] == ["T4", "A100"]
    link = schemas["ApiNode"]["properties"]["inputs"]["additionalProperties"]["anyOf"][-1]
    assert link["prefixItems"] == [{"type": "string"}, {"type": "integer", "minimum": 0}]
    assert link["minItems"] == link["maxItems"] == 2
    webhook = schemas["WorkflowRunRequest"]["properties"]["webhook"]["anyOf"][0]
    assert not re.match(webhook["pattern"], "http://user@example.com/")
    assert not re.match(webhook["pattern"], "http://example.com\\@127.0.0.1/")
