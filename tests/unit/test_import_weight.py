"""What a process pays for importing a part of comfyq: each part loads only what it needs.

Each check runs in a fresh interpreter and reports which heavy libraries ended up imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Libraries that only some processes need.
HEAVY = ("celery", "kombu", "numpy", "PIL", "pydantic", "redis", "comfyq.nodes", "torch")


def loaded_after(code: str) -> set[str]:
    """The HEAVY modules loaded once ``code`` ran in a new interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(("code", "allowed"), [
    ("import comfyq", set()),
    ("import comfyq.webhooks.signing", {"pydantic"}),
    ("from comfyq.cli.main import build_parser; build_parser().format_help()", set()),
])
def test_importing_a_part_loads_only_what_it_needs(code: str, allowed: set[str]) -> None:
    assert loaded_after(code) <= allowed


def test_the_help_of_every_command_loads_no_library() -> None:
    code = ("from comfyq.cli.main import build_parser\n"
            "parser = build_parser()\n"
            "for action in parser._subparsers._group_actions:\n"
            "    for command in action.choices.values(): command.format_help()")
    assert loaded_after(code) == set()
