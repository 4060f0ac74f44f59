"""Hostile input gets a clean refusal, naming the field and the problem, before anything is kept:
text that is not Unicode, numbers that are not JSON, nesting past the limit, malformed links,
webhook URLs two parsers read differently or whose addresses carry a forbidden IPv4 address,
run ids that are not run ids, and output records that point through a link or name no file."""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections.abc import Iterator

import pytest

from comfyq.errors import InvalidRunRequest
from comfyq.models import is_run_id, parse_run_request
from comfyq.request_json import MAX_JSON_DEPTH, load_request_json
from comfyq.web.output_access import OutputItem, OutputRefused, output_path
from comfyq.webhooks.safety import AddressPolicy, UnsafeWebhookURL, check_webhook_url
from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.transport import Outcome, post
from tests.helpers import invert_graph, request

LONE_SURROGATE = "\ud800"


def problems_of(data) -> list[tuple[str, str, str]]:
    """(field, message, kind) of each problem the request is refused for."""
    with pytest.raises(InvalidRunRequest) as refused:
        parse_run_request(data)
    return [(problem.path, problem.message, problem.kind) for problem in refused.value.problems]


def nested(depth: int) -> object:
    """A value of ``depth`` levels of lists."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- text that is not Unicode -----------------------------------------------------------------


@pytest.mark.parametrize(("fields", "path"), [
    ({"workflow_id": "w" + LONE_SURROGATE}, "workflow_id"),
    ({"inputs": {"prefix": LONE_SURROGATE}}, "inputs.prefix"),
    ({"workflow": {"nodes": [{"title": LONE_SURROGATE}]}}, "workflow.nodes.0.title"),
])
def test_a_lone_surrogate_in_any_string_is_refused_with_its_field(fields, path):
    for form in (request(**fields), json.dumps(request(**fields))):  # a dict, and JSON text
        [(field, message, kind)] = problems_of(form)
        assert (field, kind) == (path, "string_not_unicode")
        assert "lone UTF-16 surrogate (\\ud800" in message


def test_a_lone_surrogate_in_a_name_is_refused_and_named_printably():
    graph = invert_graph()
    graph["3"]["inputs"]["bad" + LONE_SURROGATE] = 1
    [(field, message, _)] = problems_of(json.dumps(request(graph)))
    assert field == "workflow_api_json.3.inputs.bad\\ud800"
    assert message.startswith("the name is not valid Unicode")
    field.encode("utf-8")  # the answer naming it can be sent


def test_a_surrogate_pair_is_one_character_and_passes():
    text = json.dumps(request(inputs={"prefix": "\U0001f600"}))  # "\ud83d\ude00" in the JSON
    assert parse_run_request(text).inputs == {"prefix": "\U0001f600"}


# --- numbers that are not JSON ----------------------------------------------------------------


@pytest.mark.parametrize(("literal", "kind"), [
    ("NaN", "number_not_finite"), ("Infinity", "number_not_finite"),
    ("-Infinity", "number_not_finite"), ("1e999", "number_not_finite"),
    ("1" + "0" * 25, "number_too_large"), ("-1e20", "number_too_large"),
])
def test_numbers_json_cannot_carry_are_refused_with_their_field(literal, kind):
    text = json.dumps(request(inputs={"width": 8})).replace('"width": 8', f'"width": {literal}')
    [(field, _, found)] = problems_of(text)
    assert (field, found) == ("inputs.width", kind)


def test_a_python_nan_is_refused_like_the_json_one():
    [(field, message, _)] = problems_of(request(inputs={"width": float("nan")}))
    assert field == "inputs.width" and "NaN and Infinity are not JSON" in message


def test_a_64_bit_seed_passes():
    graph = invert_graph()
    graph["1"]["inputs"]["color"] = 2**64 - 1
    assert parse_run_request(request(graph)).workflow_api_json["1"]["inputs"]["color"] == 2**64 - 1


# --- nesting ----------------------------------------------------------------------------------


def test_nesting_at_the_limit_passes_and_one_level_more_is_refused():
    # The request is level 1 and ``workflow`` level 2, so ``workflow.a`` may nest MAX - 2.
    assert parse_run_request(request(workflow={"a": nested(MAX_JSON_DEPTH - 2)}))
    [(field, message, kind)] = problems_of(request(workflow={"a": nested(MAX_JSON_DEPTH - 1)}))
    assert field == "workflow.a" + ".0" * (MAX_JSON_DEPTH - 2)  # the level past the limit
    assert kind == "json_too_deep" and f"limit of {MAX_JSON_DEPTH} levels" in message


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH * 2, 900, 100_000])
def test_json_nested_far_too_deep_is_refused_not_crashed_on(depth):
    text = '{"workflow_id": "w", "workflow": {"a": ' + "[" * depth + "]" * depth + "}}"
    with pytest.raises(InvalidRunRequest) as refused:
        load_request_json(text)
    [problem] = refused.value.problems
    assert problem.kind == "json_too_deep"


def test_many_bad_values_are_listed_up_to_a_count():
    with pytest.raises(InvalidRunRequest) as refused:
        load_request_json(json.dumps({"a": [LONE_SURROGATE] * 1000}))
    problems = refused.value.problems
    assert len(problems) == 21 and problems[-1].message == "and 980 more values like those above"


def test_text_that_is_not_json_names_where():
    [(field, message, kind)] = problems_of(b'{"workflow_id": ')
    assert (field, kind) == ("request", "json_invalid")
    assert "line 1 column 17" in message


# --- links the structural check refuses --------------------------------------------------------


@pytest.mark.parametrize(("link", "message"), [
    (["1"], "a list of 2 items; got 1"),
    (["1", 0, 1], "a list of 2 items; got 3"),
    (["1", "0"], "output index must be an integer; got '0'"),
    (["1", 0.0], "output index must be an integer; got 0.0"),
    (["1", True], "output index must be an integer; got True"),
    ([1, 0], "node id must be a string"),
    (["1", -1], "output index -1 is negative"),
    (["9", 0], "links to node '9', which is not in the graph"),
    ([], "a list of 2 items; got 0"),
])
def test_every_malformed_link_is_refused_as_comfyui_would_fail_the_outputs(link, message):
    graph = invert_graph()
    graph["2"]["inputs"]["image"] = link
    [(field, found, kind)] = problems_of(request(graph))
    assert field == "workflow_api_json.2.inputs.image" and message in found
    assert kind == "prompt_outputs_failed_validation"


def test_a_list_literal_in_comfyuis_value_form_is_no_link():
    graph = invert_graph()
    graph["3"]["inputs"]["tags"] = {"__value__": ["a", "b", "c"]}
    assert parse_run_request(request(graph))


@pytest.mark.parametrize(("body", "field", "kind"), [
    (request({}), "workflow_api_json", "prompt_no_outputs"),
    ({"workflow_id": "w"}, "workflow_api_json", "no_prompt"),
    (request({"1": {"inputs": {}}}), "workflow_api_json.1.class_type", "invalid_prompt"),
    (request({"1": "SaveImage"}), "workflow_api_json.1", "invalid_prompt"),
    (request({"1": {"class_type": "A", "inputs": {"x": ["1", 0]}}}), "workflow_api_json",
     "prompt_outputs_failed_validation"),
])
def test_graph_refusals_carry_comfyuis_error_type(body, field, kind):
    assert (field, kind) in {(path, found) for path, _, found in problems_of(body)}


# --- webhook URLs ------------------------------------------------------------------------------

STRICT = AddressPolicy()
LENIENT = AddressPolicy(allow_loopback=True, allow_private=True)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://93.184.215.14\\@127.0.0.1/", "backslashes"),       # urlsplit and urllib3 disagree
    ("http://127.0.0.1\\@93.184.215.14/", "backslashes"),
    ("http:\\\\93.184.215.14/", "backslashes"),
    ("http://user:pw@93.184.215.14/", "holds credentials"),
    ("http://a@b@93.184.215.14/", "holds credentials"),
    ("http://93.184.215.1%34/", "can be read more than one way"),  # urllib3 decodes the host
    ("http://[fe80::1%25eth0]/", "can be read more than one way"),
    ("http://exämple.com/", "outside printable ASCII"),
    ("http://93.184.215.14/\x00", "outside printable ASCII"),
])
def test_webhook_urls_two_parsers_could_read_differently_are_refused(url, reason):
    with pytest.raises(UnsafeWebhookURL, match=reason):
        check_webhook_url(url, LENIENT)


@pytest.mark.parametrize(("address", "carried", "mechanism"), [
    ("2002:7f00:1::", "127.0.0.1", "6to4"),
    ("2002:a9fe:a9fe::1", "169.254.169.254", "6to4"),
    ("64:ff9b::a00:1", "10.0.0.1", "NAT64"),
    ("64:ff9b::7f00:1", "127.0.0.1", "NAT64"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1", "Teredo client"),
    ("::7f00:1", "127.0.0.1", "IPv4-compatible"),
    ("::ffff:0:a00:1", "10.0.0.1", "IPv4-translated"),
    ("2606:4700::5efe:a00:1", "10.0.0.1", "ISATAP"),
])
def test_ipv6_addresses_carrying_a_forbidden_ipv4_address_are_refused(address, carried,
                                                                       mechanism):
    with pytest.raises(UnsafeWebhookURL, match=f"carries {carried} \\({mechanism}\\)"):
        check_webhook_url(f"http://[{address}]/hook", STRICT)


@pytest.mark.parametrize("address", ["2002:5db8:d70e::1", "64:ff9b::5db8:d70e"])
def test_ipv6_addresses_carrying_a_public_ipv4_address_pass(address):
    assert check_webhook_url(f"http://[{address}]/hook", STRICT) == [address]


def test_allowed_networks_admit_those_networks_only():
    settings = WebhookSettings(webhook_allowed_networks="10.20.0.0/16,fd00:1::/64")
    policy = settings.address_policy
    assert check_webhook_url("http://10.20.3.4/hook", policy) == ["10.20.3.4"]
    assert check_webhook_url("http://[fd00:1::7]/hook", policy) == ["fd00:1::7"]
    assert check_webhook_url("http://[::ffff:10.20.3.4]/hook", policy)
    for refused in ("http://10.21.0.1/", "http://127.0.0.1/", "http://[fd00:2::7]/"):
        with pytest.raises(UnsafeWebhookURL):
            check_webhook_url(refused, policy)


def test_allowed_networks_never_admit_metadata_addresses():
    policy = AddressPolicy(allowed_networks=(ipaddress.ip_network("169.254.0.0/16"),))
    assert check_webhook_url("http://169.254.10.1/", policy)
    with pytest.raises(UnsafeWebhookURL, match="cloud metadata address"):
        check_webhook_url("http://169.254.169.254/", policy)


def test_a_bad_network_setting_says_what_is_expected():
    with pytest.raises(ValueError, match="CIDR form, like 10.20.0.0/16"):
        WebhookSettings(webhook_allowed_networks="10.0.0.0/8,banana")


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket listening on loopback that never accepts: connections only queue up."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_delivery_to_a_refused_address_never_connects_so_open_and_closed_ports_look_alike(
        listening):
    def attempt(port: int):
        return post(f"http://localhost:{port}/hook", b"{}", {}, timeout=2,
                    max_response_bytes=1024, policy=STRICT)

    open_port = listening.getsockname()[1]
    answers = {port: attempt(port) for port in (open_port, closed_port())}
    assert {answer.outcome for answer in answers.values()} == {Outcome.REJECTED}
    errors = {answer.error.replace(str(port), "PORT") for port, answer in answers.items()}
    assert errors == {"connection to localhost:PORT refused: 127.0.0.1 is a loopback address "
                      "(set COMFYQ_WEBHOOK_ALLOW_LOOPBACK=true to allow it)"}
    with pytest.raises(BlockingIOError):
        listening.accept()  # nothing ever connected


# --- run ids and the files of a run -------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["comfyq:workers", "../x", "..", "a/b", "x" * 10_240, "a\x00b",
                                    "x}", "{x}", "", "r\u00e9sum\u00e9", "a b", "a.b"])
def test_what_cannot_be_a_run_id_is_not_one(run_id):
    assert not is_run_id(run_id)


@pytest.mark.parametrize("run_id", [str(uuid.uuid4()), "crafted-1", "run_1", "x" * 64])
def test_issued_and_hand_made_run_ids_are(run_id):
    assert is_run_id(run_id)


def test_a_run_folder_that_is_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(b"not yours")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "run-1").symlink_to(elsewhere)
    item = OutputItem(0, "3", "images", "secret.png", "run-1", "output")
    with pytest.raises(OutputRefused, match="the run's outputs folder is a link"):
        output_path(tmp_path / "outputs", "run-1", item)


@pytest.mark.parametrize("filename", ["a\x00b.png", "x" * 5000 + ".png"])
def test_a_record_naming_no_path_a_file_can_have_is_refused(tmp_path, filename):
    (tmp_path / "outputs" / "run-1").mkdir(parents=True)
    item = OutputItem(0, "3", "images", filename, "run-1", "output")
    with pytest.raises(OutputRefused, match="names no file that can be served"):
        output_path(tmp_path / "outputs", "run-1", item)
