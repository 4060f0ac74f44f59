"""The ``comfyq`` command before it reaches Redis: help, version, bad input, bad settings, exit
codes. Real processes, as a user runs them; nothing here needs a Redis."""

from __future__ import annotations

import argparse
import os
import subprocess

import pytest

from comfyq.cli.main import build_parser
from tests.ops_helpers import comfyq_command

#: Where no Redis listens: a command that got that far would fail differently.
NO_REDIS = {"COMFYQ_REDIS_URL": "redis://127.0.0.1:9/0"}


def comfyq(*args: str, stdout: int = subprocess.PIPE, **env: str) -> subprocess.CompletedProcess:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("COMFYQ_")}
    return subprocess.run([*comfyq_command(), *args], env={**inherited, **NO_REDIS, **env},
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)


def every_parser(parser: argparse.ArgumentParser, path: str = "comfyq"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from every_parser(command, f"{path} {name}")


def test_every_argument_of_every_command_says_what_it_is_for():
    undocumented = [f"{path}: {action.option_strings or action.dest}"
                    for path, parser in every_parser(build_parser())
                    for action in parser._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert undocumented == []


def test_help_is_plain_text_without_markup():
    for path, parser in every_parser(build_parser()):
        assert "`" not in parser.format_help(), path  # no reStructuredText or Markdown


def test_version_is_printed():
    shown = comfyq("--version")
    assert shown.returncode == 0
    assert shown.stdout.startswith("comfyq ") and shown.stdout.split()[1][0].isdigit()


def test_a_command_group_alone_names_what_it_needs_in_words():
    shown = comfyq("workflows")
    assert shown.returncode == 2
    assert "workflows_command" not in shown.stderr
    assert "required: ACTION" in shown.stderr


@pytest.mark.parametrize(("content", "arguments", "expected"), [
    (None, [], "No such file or directory"),
    ("{not json", [], "not valid JSON"),
    ("{}", ["--input", "width"], "--input 'width': expected NAME=VALUE"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, content, arguments, expected):
    path = tmp_path / "request.json"
    if content is not None:
        path.write_text(content)
    shown = comfyq("submit", str(path), *arguments)
    assert shown.returncode == 2
    [line] = shown.stderr.splitlines()
    assert line.startswith("comfyq: error: ") and expected in line


def test_bad_settings_name_each_variable_and_never_echo_a_value():
    shown = comfyq("runs", COMFYQ_REDIS_URL="redis://:hunter2@127.0.0.1:63x9/0",
                   COMFYQ_METRICS_PORT="ninety", COMFYQ_DEFAULT_GPU="V100",
                   COMFYQ_GPU_TYPES="A100,T4")
    assert shown.returncode == 2
    assert sorted(shown.stderr.splitlines()) == [
        "comfyq: error: COMFYQ_DEFAULT_GPU: 'V100' is not one of COMFYQ_GPU_TYPES (A100, T4)",
        "comfyq: error: COMFYQ_METRICS_PORT: Input should be a valid integer, unable to parse "
        "string as an integer",
        "comfyq: error: COMFYQ_REDIS_URL: the port after the host is not a number",
    ]
    assert "hunter2" not in shown.stderr and "ninety" not in shown.stderr


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("COMFYQ_MACHINES", "m1", "expected NAME=VALUE pairs separated by commas, or a JSON object"),
    ("COMFYQ_GPU_MAX_RUN_SECONDS", "A100=soon", "expected numbers (seconds)"),
    ("COMFYQ_GPU_TYPES", '["A100",', "not a valid JSON list"),
    ("COMFYQ_REDIS_URL", "hunter2", "expected a URL starting with one of redis://"),
    ("COMFYQ_WEBHOOK_SECRETS", "hunter2", "must start with 'whsec_'"),
])
def test_each_kind_of_bad_value_is_explained_without_it(variable, value, expected):
    # `webhooks secret` reads both the comfyq and the webhook settings before Redis.
    shown = comfyq("webhooks", "secret", **{variable: value})
    assert shown.returncode == 2
    [line] = shown.stderr.splitlines()
    assert line.startswith(f"comfyq webhooks: error: {variable}") and expected in line
    assert value not in line


def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write fails with a broken pipe
    try:
        shown = comfyq("--version", stdout=write_end)
    finally:
        os.close(write_end)
    assert shown.returncode == 141 and shown.stderr == ""
