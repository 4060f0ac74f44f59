"""comfyq's layers hold: imports point down the layers of pyproject.toml's import-linter
contracts, and no package's modules import each other in a cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def lint_imports(source_root: Path | None = None) -> subprocess.CompletedProcess:
    """import-linter with the project's contracts, on comfyq as found under ``source_root``
    (the checkout by default), in a fresh process."""
    # `python -c` puts its working folder first on sys.path: that comfyq is the one analysed.
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports({str(REPO / 'pyproject.toml')!r}, no_cache=True, "
            "no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=source_root or REPO,
                          capture_output=True, text=True, timeout=300)


def linked_copy(source: Path, target: Path) -> None:
    """``target`` as a folder of links to ``source``'s entries, so a test can add to it."""
    target.mkdir()
    for entry in source.iterdir():
        (target / entry.name).symlink_to(entry.resolve())


def test_every_import_contract_is_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_layer_contract_would_catch_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: a module below the tasks importing them breaks it."""
    linked_copy(REPO / "comfyq", tmp_path / "comfyq")
    (tmp_path / "comfyq" / "runs").unlink()
    linked_copy(REPO / "comfyq" / "runs", tmp_path / "comfyq" / "runs")
    (tmp_path / "comfyq" / "runs" / "layer_probe.py").write_text("import comfyq.tasks.app\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "comfyq.runs is not allowed to import comfyq.tasks" in result.stdout
