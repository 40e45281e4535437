"""The canary: a secret planted where a hostile workflow would look for it, then searched for everywhere.

`canary` (a fixture, also re-exported by tests/security/conftest.py) plants one unique value

- in this process's environment (the in-process worker's) as VAULT_TOKEN, AGENTRT_CANARY_SECRET and
  AWS_SECRET_ACCESS_KEY (restored afterwards), and in `canary.env` for a worker subprocess;
- in Vault at `secret/<tag>/canary`, a path no workflow is granted;

and `await canary.assert_absent(settings, sink=..., texts=...)` fails if it shows up, raw or encoded
(base64 at every alignment, URL-encoded, JSON-escaped), in a pg_dump of the test database (runs,
events, outputs, errors, spans, step logs, audit), the test's Redis keys, the log records emitted while
the test ran, the requests a local HTTP sink received, or any text the test adds (a CLI's output, a
worker subprocess's log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.http_sink import HttpSink
from tests.support.vault_support import dump_database, dump_redis, leaks, write_secret
from worker.config import Settings

CANARY_ENV_NAMES = ("VAULT_TOKEN", "AGENTRT_CANARY_SECRET", "AWS_SECRET_ACCESS_KEY")


class _Recorder(logging.Handler):
    """Every log record emitted while the test runs, as text (message, arguments, extras, exception)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = f"{record.msg!r} {record.args!r}"
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        text = f"{record.name} {record.levelname} {message} {extras!r}"
        if record.exc_info:
            text += " " + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None))) | {"message", "asctime"}


@dataclass
class Canary:
    value: str
    tag: str
    vault_path: str
    env: dict[str, str] = field(default_factory=dict)
    """The canary variables, for a worker subprocess's environment (`worker_procs.start(extra_env=...)`)."""
    recorder: _Recorder = field(default_factory=_Recorder)

    @property
    def core(self) -> str:
        """The unique part (before the punctuation): its presence in any escaping is a leak."""
        return self.value.split("/", 1)[0]

    def found_in(self, text: str) -> list[str]:
        found = leaks(self.value, text)
        if self.core in text and "raw" not in found:
            found.append("core")
        escaped = json.dumps(self.value)[1:-1]
        if escaped != self.value and escaped in text:
            found.append("json")
        return found

    async def assert_absent(self, settings: Settings, *, sink: HttpSink | None = None,
                            texts: Mapping[str, str] | None = None) -> None:
        """Fail, naming where, if the canary is in Postgres, Redis, the logs, the sink or `texts`."""
        places: dict[str, str] = {}
        places["pg_dump of the database"] = await asyncio.to_thread(dump_database, settings.database_url)
        places["Redis keys"] = await asyncio.to_thread(dump_redis, settings.redis_url, settings.redis_prefix)
        places["log records"] = "\n".join(self.recorder.lines)
        if sink is not None:
            places["requests received by the HTTP sink"] = "\n".join(_request_text(r) for r in sink.requests)
        places.update(texts or {})
        found = {where: forms for where, text in places.items() if (forms := self.found_in(text))}
        assert not found, f"the canary leaked: {found}"


def _request_text(request: Any) -> str:
    headers = getattr(request, "headers", {})
    body = getattr(request, "body", b"")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return (f"{getattr(request, 'method', '')} {getattr(request, 'path', '')}?{getattr(request, 'query', '')} "
            f"{dict(headers)!r} {body}")


@pytest.fixture
def canary(vault_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Canary]:
    tag = f"canary-{uuid.uuid4().hex[:8]}"
    # characters that change under every encoding: a leak cannot hide behind escaping
    value = f"CANARY-{uuid.uuid4().hex}/x+y=z&q?\"'"
    path = f"{tag}/canary"
    write_secret(vault_server, path, {"token": value, "password": value})
    env = dict.fromkeys(CANARY_ENV_NAMES, value)
    for name, v in env.items():
        monkeypatch.setenv(name, v)
    found = Canary(value=value, tag=tag, vault_path=path, env=env)
    root = logging.getLogger()
    root.addHandler(found.recorder)
    old_level = root.level
    root.setLevel(min(old_level, logging.DEBUG) if old_level else logging.DEBUG)
    try:
        yield found
    finally:
        root.removeHandler(found.recorder)
        root.setLevel(old_level)
