"""bench/peers.py reports a peer it cannot install as skipped, with the reason, instead of failing or faking it.

Nothing is downloaded here: the machine's npm is hidden (an empty PATH), so the install stops before it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers_driver", BENCH / "peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_restate_without_npm_is_skipped_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = load_driver()
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("AGENTRT_BENCH_CACHE", str(tmp_path / "cache"))
    skipped: dict[str, str] = {}
    assert driver.install(["restate"], skipped) == {}
    assert skipped == {"restate": "not installed: restate-server: npm is not installed (Node 20+ with npm is needed)"}
    assert not (tmp_path / "cache" / "peers" / "restate").exists()  # its venv was not started either


def test_unknown_peers_and_empty_sizes_are_refused() -> None:
    driver = load_driver()
    with pytest.raises(SystemExit):
        driver.parse(["--peers", "temporal"])
    with pytest.raises(SystemExit):
        driver.parse(["--rounds", "0"])
    args = driver.parse(["--peers", "restate", "--sequential-runs", "5"])
    assert args.peers == ["restate"]
    assert args.sequential_runs == 5
    assert args.concurrent_runs == 500
    assert args.agentrt_env == {}
    with pytest.raises(SystemExit):
        driver.parse(["--agentrt-env", "AGENTRT_PYTHON_ISOLATION"])
    inline = driver.parse(["--agentrt-env", "AGENTRT_PYTHON_ISOLATION=inline,AGENTRT_TELEMETRY=off"])
    assert inline.agentrt_env == {"AGENTRT_PYTHON_ISOLATION": "inline", "AGENTRT_TELEMETRY": "off"}
