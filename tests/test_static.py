"""The architecture and lint rules in pyproject.toml, checked as part of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"{name} is not installed (pip install -e '.[dev]')"
    return found


def test_import_contracts_hold() -> None:
    """The console reaches the runtime only through worker.client/worker.models; worker never imports console."""
    res = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "4 kept, 0 broken" in res.stdout


def test_ruff_finds_nothing() -> None:
    res = subprocess.run([_tool("ruff"), "check", "worker", "console", "tests", "bench"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-5000:]


def test_mypy_finds_nothing_and_the_console_double_fits_its_protocol() -> None:
    """mypy over the code (pyproject's `files`) and the console's test double: `FakeRuntimeClient` and
    `RuntimeClient` must both be `console.backend.ConsoleClient`s (tests/console/test_contract.py)."""
    res = subprocess.run([_tool("mypy"), "worker", "console", "tests/console/fakes.py",
                          "tests/console/test_contract.py"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
