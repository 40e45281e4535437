"""`python -m console`: arguments, and a clear exit 5 when the runtime cannot be reached."""

from __future__ import annotations

import socket

import pytest

from console.__main__ import EXIT_UNAVAILABLE, EXIT_USAGE, main, parse_args


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_parse_args() -> None:
    assert parse_args([]).readonly is False
    assert parse_args(["--readonly"]).readonly is True
    with pytest.raises(SystemExit):
        parse_args(["--nope"])


def test_unreachable_database_exits_5_with_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    monkeypatch.setenv("AGENTRT_DATABASE_URL", f"postgresql://app:s3cret@127.0.0.1:{port}/agentrt")
    monkeypatch.setenv("AGENTRT_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    assert main(["--readonly"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot reach the runtime database" in err
    assert f"postgresql://app:***@127.0.0.1:{port}/agentrt" in err
    assert "s3cret" not in err


def test_bad_configuration_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENTRT_LEASE_TTL", "not-a-number")
    assert main([]) == EXIT_USAGE
    assert "AGENTRT_LEASE_TTL" in capsys.readouterr().err
