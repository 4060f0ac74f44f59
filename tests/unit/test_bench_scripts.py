"""Every benchmark under bench/ still starts: its imports hold and it explains its options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import REPO

BENCHMARKS = sorted((REPO / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=[path.stem for path in BENCHMARKS])
def test_the_benchmark_starts_and_explains_its_options(script) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
