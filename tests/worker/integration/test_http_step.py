"""The http step against a real HTTP server (HttpSink): keys, statuses, redirects, SSRF, limits."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest

from tests.support.http_sink import HttpSink
from worker.config import Settings
from worker.errors import StepFailed
from worker.models import RunId
from worker.steps.base import StepContext, idempotency_key
from worker.steps.http import USER_AGENT, HttpExecutor, parse_retry_after

ALLOW_LOOPBACK = Settings(http_allowed_hosts=("127.0.0.1",))


def make_ctx(step_id: str = "call", *, attempt: int = 1, timeout: float | None = None) -> StepContext:
    return StepContext(
        run_id=RunId("run-1"),
        workflow="wf",
        step_id=step_id,
        item=None,
        attempt=attempt,
        idempotency_key=idempotency_key("run-1", step_id, None),
        timeout=timeout,
        settings=Settings(),
        logger=logging.getLogger("test"),
    )


@pytest.fixture
async def executor() -> AsyncIterator[HttpExecutor]:
    ex = HttpExecutor(ALLOW_LOOPBACK)
    yield ex
    await ex.aclose()


async def failure(ex: HttpExecutor, args: dict[str, Any], ctx: StepContext | None = None) -> StepFailed:
    with pytest.raises(StepFailed) as info:
        await ex.execute(args, ctx or make_ctx())
    return info.value


async def test_idempotency_key_is_sent_and_stable(executor: HttpExecutor, http_sink: HttpSink) -> None:
    args = {"method": "POST", "url": f"{http_sink.url}/pay", "json": {"amount": 5}}
    first = await executor.execute(args, make_ctx(attempt=1))
    second = await executor.execute(args, make_ctx(attempt=2))  # a retry: same run, same step
    assert http_sink.count("/pay") == 2
    assert http_sink.keys("/pay") == ["agentrt:run-1:call", "agentrt:run-1:call"]
    assert http_sink.distinct_effects("/pay") == 1
    assert http_sink.duplicate_requests("/pay") == 1
    assert first["json"]["n"] == 1
    assert second["json"]["n"] == 2
    request = http_sink.requests[0]
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("agentruntime/")
    assert request.headers["content-type"] == "application/json"
    assert orjson.loads(request.body) == {"amount": 5}


async def test_other_steps_get_other_keys(executor: HttpExecutor, http_sink: HttpSink) -> None:
    await executor.execute({"url": f"{http_sink.url}/a"}, make_ctx("one"))
    await executor.execute({"url": f"{http_sink.url}/a"}, make_ctx("two"))
    assert http_sink.distinct_effects("/a") == 2
    assert http_sink.duplicate_requests("/a") == 0


async def test_user_idempotency_key_is_kept(executor: HttpExecutor, http_sink: HttpSink) -> None:
    await executor.execute(
        {"url": http_sink.url + "/k", "headers": {"idempotency-key": "mine-1"}}, make_ctx()
    )
    request = http_sink.requests[0]
    assert request.idempotency_key == "mine-1"
    assert "agentrt" not in str(request.headers)


async def test_output_shape(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/json", [(200, {"Set-Cookie": "session=secret", "X-Trace": "t1"}, {"a": [1, 2]})])
    out = await executor.execute(
        {"method": "GET", "url": f"{http_sink.url}/json", "params": {"q": "x y", "page": 2}}, make_ctx()
    )
    assert set(out) == {"status", "headers", "json", "text", "url"}
    assert out["status"] == 200
    assert out["json"] == {"a": [1, 2]}
    assert out["text"] is None
    assert out["headers"]["x-trace"] == "t1"
    assert out["headers"]["content-type"] == "application/json"
    assert "set-cookie" not in out["headers"]
    assert all(name == name.lower() for name in out["headers"])
    assert out["url"] == f"{http_sink.url}/json?q=x+y&page=2"
    assert http_sink.requests[0].query == "q=x+y&page=2"
    orjson.dumps(out)  # the output is JSON


async def test_text_body(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/t", [(201, {}, "hello, wörld")])
    out = await executor.execute({"method": "PUT", "url": f"{http_sink.url}/t", "body": "raw"}, make_ctx())
    assert out["status"] == 201
    assert out["json"] is None
    assert out["text"] == "hello, wörld"
    assert http_sink.requests[0].body == b"raw"
    assert http_sink.requests[0].method == "PUT"


async def test_long_text_is_truncated(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/big", [(200, {}, "é" * 70_000)])  # 140 000 bytes of UTF-8
    out = await executor.execute({"url": f"{http_sink.url}/big"}, make_ctx())
    assert len(out["text"].encode()) <= 64 * 1024
    assert set(out["text"]) == {"é"}  # no half character at the cut


async def test_head_request(executor: HttpExecutor, http_sink: HttpSink) -> None:
    out = await executor.execute({"method": "HEAD", "url": f"{http_sink.url}/h"}, make_ctx())
    assert out["status"] == 200
    assert out["json"] is None
    assert out["text"] == ""


async def test_500_is_retryable(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/e", [(500, {}, "database exploded")])
    error = await failure(executor, {"url": f"{http_sink.url}/e"})
    assert error.retryable is True
    assert error.retry_after is None
    assert "HTTP 500" in error.reason
    assert "database exploded" in error.reason


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_transient_statuses_are_retryable(
    executor: HttpExecutor, http_sink: HttpSink, status: int
) -> None:
    http_sink.script("/e", [(status, {}, b"")])
    assert (await failure(executor, {"url": f"{http_sink.url}/e"})).retryable is True


async def test_429_retry_after_seconds(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/limited", [(429, {"Retry-After": "2"}, {"error": "slow down"})])
    error = await failure(executor, {"url": f"{http_sink.url}/limited"})
    assert error.retryable is True
    assert error.retry_after == 2


async def test_503_retry_after_http_date(executor: HttpExecutor, http_sink: HttpSink) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    http_sink.script("/busy", [(503, {"Retry-After": when}, b"")])
    error = await failure(executor, {"url": f"{http_sink.url}/busy"})
    assert error.retryable is True
    assert error.retry_after is not None
    assert 100 <= error.retry_after <= 121


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


async def test_404_is_not_retryable(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/missing", [(404, {}, {"error": "no such ticket"})])
    error = await failure(executor, {"url": f"{http_sink.url}/missing?token=s3cret"})
    assert error.retryable is False
    assert "HTTP 404" in error.reason
    assert "no such ticket" in error.reason
    assert "s3cret" not in error.reason


async def test_expect_status(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/gone", [(404, {}, {"gone": True}), (200, {}, {"ok": True})])
    out = await executor.execute({"url": f"{http_sink.url}/gone", "expect_status": [404]}, make_ctx())
    assert out["status"] == 404
    assert out["json"] == {"gone": True}
    error = await failure(executor, {"url": f"{http_sink.url}/gone", "expect_status": [404]})
    assert error.retryable is False
    assert "HTTP 200" in error.reason


async def test_follows_redirects_on_the_same_host(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/start", [(303, {"Location": "/middle"}, b"")])
    http_sink.script("/middle", [(307, {"Location": f"{http_sink.url}/end?x=1"}, b"")])
    out = await executor.execute(
        {"method": "POST", "url": f"{http_sink.url}/start", "json": {"a": 1}, "follow_redirects": True},
        make_ctx(),
    )
    assert out["status"] == 200
    assert out["url"] == f"{http_sink.url}/end?x=1"
    assert [(r.method, r.path) for r in http_sink.requests] == [
        ("POST", "/start"),
        ("GET", "/middle"),
        ("GET", "/end"),
    ]
    assert http_sink.requests[1].body == b""  # 303: the body is not sent again
    assert http_sink.distinct_effects() == 1  # one logical call: every hop carries the same key


async def test_307_keeps_method_and_body(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/old", [(307, {"Location": "/new"}, b"")])
    await executor.execute(
        {"method": "POST", "url": f"{http_sink.url}/old", "body": "payload", "follow_redirects": True},
        make_ctx(),
    )
    assert [(r.method, r.path, r.body) for r in http_sink.requests] == [
        ("POST", "/old", b"payload"),
        ("POST", "/new", b"payload"),
    ]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://metadata.google.internal/",
        "http://2852039166/",
    ],
)
async def test_redirect_to_internal_address_is_refused(http_sink: HttpSink, target: str) -> None:
    ex = HttpExecutor(ALLOW_LOOPBACK)
    try:
        http_sink.script("/r", [(302, {"Location": target}, b"")])
        error = await failure(ex, {"url": f"{http_sink.url}/r", "follow_redirects": True})
    finally:
        await ex.aclose()
    assert error.retryable is False
    assert "refusing" in error.reason
    assert http_sink.count() == 1


async def test_too_many_redirects(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/loop", [(302, {"Location": "/loop"}, b"")] * 10)
    error = await failure(executor, {"url": f"{http_sink.url}/loop", "follow_redirects": True})
    assert error.retryable is False
    assert "too many redirects" in error.reason
    assert http_sink.count("/loop") == 6  # the first request and 5 redirects


async def test_redirect_not_followed_by_default(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script(
        "/moved",
        [(301, {"Location": "http://169.254.169.254/"}, b""), (301, {"Location": "/elsewhere"}, b"")],
    )
    error = await failure(executor, {"url": f"{http_sink.url}/moved"})
    assert error.retryable is False
    assert "HTTP 301" in error.reason
    out = await executor.execute({"url": f"{http_sink.url}/moved", "expect_status": [301]}, make_ctx())
    assert out["status"] == 301
    assert out["headers"]["location"] == "/elsewhere"
    assert http_sink.count() == 2


async def test_loopback_refused_when_not_allowed(http_sink: HttpSink) -> None:
    ex = HttpExecutor(Settings())
    try:
        error = await failure(ex, {"url": f"{http_sink.url}/x"})
    finally:
        await ex.aclose()
    assert error.retryable is False
    assert "loopback" in error.reason
    assert http_sink.count() == 0


async def test_timeout_is_retryable(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.set_delay("/slow", 2.0)
    started = asyncio.get_running_loop().time()
    error = await failure(executor, {"url": f"{http_sink.url}/slow", "timeout": "300ms"})
    assert asyncio.get_running_loop().time() - started < 1.5
    assert error.retryable is True
    assert "timed out after 0.3s" in error.reason


async def test_step_timeout_applies_when_args_have_none(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.set_delay("/slow", 2.0)
    error = await failure(executor, {"url": f"{http_sink.url}/slow"}, make_ctx(timeout=0.2))
    assert "timed out after 0.2s" in error.reason


async def test_connection_refused_is_retryable(executor: HttpExecutor) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await failure(executor, {"url": f"http://127.0.0.1:{port}/"})
    assert error.retryable is True
    assert error.reason == f"connection refused to 127.0.0.1:{port}"


async def test_dropped_connection_is_retryable(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/drop", [(0, {}, b"")])
    error = await failure(executor, {"url": f"{http_sink.url}/drop"})
    assert error.retryable is True


async def test_response_size_cap(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/huge", [(200, {}, b"x" * 100_000)])
    error = await failure(executor, {"url": f"{http_sink.url}/huge", "max_response_bytes": 1000})
    assert error.retryable is False
    assert "too large" in error.reason
    out = await executor.execute({"url": f"{http_sink.url}/huge", "max_response_bytes": 1000}, make_ctx())
    assert out["status"] == 200  # the script is used up: the small default answer fits


async def test_large_error_page_keeps_its_status(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.script("/err", [(503, {}, "down " * 10_000)])
    error = await failure(executor, {"url": f"{http_sink.url}/err", "max_response_bytes": 1000})
    assert error.retryable is True
    assert "HTTP 503" in error.reason
    assert len(error.reason) < 400


async def test_size_cap_without_content_length(executor: HttpExecutor, http_sink: HttpSink) -> None:
    # without a Content-Length the body is counted as it streams, and reading stops at the cap
    http_sink.script(
        "/chunky",
        [
            (200, {"Transfer-Encoding": "chunked"}, b"y" * 50_000),
            (200, {"Transfer-Encoding": "chunked"}, b"y" * 50_000),
        ],
    )
    error = await failure(executor, {"url": f"{http_sink.url}/chunky", "max_response_bytes": 100})
    assert error.retryable is False
    assert "more than max_response_bytes 100" in error.reason
    out = await executor.execute({"url": f"{http_sink.url}/chunky", "max_response_bytes": 50_000}, make_ctx())
    assert out["text"] == "y" * 50_000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "url"),
        ({"url": "http://x/", "method": "BREW"}, "method"),
        ({"url": "http://x/", "bogus": 1}, "bogus"),
        ({"url": "http://x/", "timeout": "soon"}, "timeout"),
        ({"url": "http://x/", "json": {"a": 1}, "body": "b"}, "either json or body"),
    ],
)
async def test_invalid_arguments_are_not_retryable(
    executor: HttpExecutor, args: dict[str, Any], fragment: str
) -> None:
    error = await failure(executor, args)
    assert error.retryable is False
    assert fragment in error.reason


async def test_debug_log_has_no_header_values(
    executor: HttpExecutor, http_sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="test")
    await executor.execute(
        {"url": f"{http_sink.url}/log?api_key=abc123", "headers": {"Authorization": "Bearer sup3rs3cret"}},
        make_ctx(),
    )
    http_sink.script("/fail", [(500, {}, b"")])
    with pytest.raises(StepFailed):
        await executor.execute({"url": f"{http_sink.url}/fail", "headers": {"X-Api-Key": "k3y"}}, make_ctx())
    lines = [r.getMessage() for r in caplog.records if r.name == "test"]
    assert len(lines) == 2
    assert "/log" in lines[0] and "200" in lines[0]
    assert "/fail" in lines[1] and "500" in lines[1]
    assert not any(secret in line for line in lines for secret in ("sup3rs3cret", "abc123", "k3y"))


async def test_client_is_shared_and_closed(http_sink: HttpSink) -> None:
    ex = HttpExecutor(ALLOW_LOOPBACK)
    results = await asyncio.gather(
        *(ex.execute({"url": f"{http_sink.url}/p/{i}"}, make_ctx(f"s{i}")) for i in range(20))
    )
    assert [r["status"] for r in results] == [200] * 20
    await ex.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await ex.execute({"url": f"{http_sink.url}/after"}, make_ctx())


async def test_sink_waits_for_requests(executor: HttpExecutor, http_sink: HttpSink) -> None:
    http_sink.set_delay("/w", 0.1)
    task = asyncio.create_task(executor.execute({"url": f"{http_sink.url}/w"}, make_ctx()))
    assert await http_sink.wait_for_async(lambda s: s.count("/w") == 1, 5)
    await task
    assert http_sink.wait_for(lambda s: s.count("/w") == 1, 0.1)
    assert not http_sink.wait_for(lambda s: s.count("/w") == 2, 0.1)
    http_sink.clear()
    assert http_sink.count() == 0
