"""The notifications' HTTP/1.1 client (worker/notify/wire.py) against real local HTTP servers."""

from __future__ import annotations

import pytest

from tests.support.http_sink import HttpSink
from tests.support.notify_receiver import NotifyReceiver
from worker.notify.payloads import render
from worker.notify.wire import PostClient, WireError


async def test_posts_reuse_the_connection_and_survive_a_server_restart() -> None:
    client = PostClient()
    rx = NotifyReceiver(secret="k").start()
    try:
        for i in range(3):
            data, headers = render(f"id-{i}", "run.failed", {"summary": "x"}, fmt="json", secret="k", attempt=1)
            answer = await client.post(rx.url + "/hook?team=pay", data, headers, within=5)
            assert answer.status == 200 and answer.headers["content-type"] == "application/json"
        got = rx.snapshot()
        assert [d.notification_id for d in got] == ["id-0", "id-1", "id-2"] and all(d.verified for d in got)
        assert got[0].path == "/hook?team=pay" and got[0].headers["host"] == rx.url.removeprefix("http://")
        assert len(client._idle[("http", "127.0.0.1", rx.port)]) == 1  # one kept-alive connection did all three
        rx.stop()
        with pytest.raises(WireError, match="ConnectionRefusedError"):
            await client.post(rx.url, data, headers, within=5)  # the kept connection is dead, and so is the port
        rx.start()
        assert (await client.post(rx.url, data, headers, within=5)).status == 200
        rx.answer_next(503)
        assert (await client.post(rx.url, data, headers, within=5)).status == 503
    finally:
        rx.stop()
        await client.aclose()


async def test_chunked_and_unanswered_and_slow_answers(http_sink: HttpSink) -> None:
    client = PostClient()
    http_sink.script("/chunked", [(200, {"Transfer-Encoding": "chunked"}, "x" * 20_000)])
    http_sink.script("/moved", [(302, {"Location": "http://attacker.example/"}, "")])
    http_sink.script("/crash", [(0, {}, ""), (0, {}, "")])
    http_sink.set_delay("/slow", 2.0)
    try:
        assert (await client.post(http_sink.url + "/chunked", b"{}", {}, within=5)).status == 200
        assert (await client.post(http_sink.url + "/after", b"{}", {}, within=5)).status == 200  # same connection
        moved = await client.post(http_sink.url + "/moved", b"{}", {}, within=5)
        assert moved.status == 302 and http_sink.count("/moved") == 1  # not followed
        with pytest.raises(WireError, match="closed the connection without answering"):
            await client.post(http_sink.url + "/crash", b"{}", {}, within=5)  # on the kept one, then a new one
        assert http_sink.count("/crash") == 2
        with pytest.raises(WireError, match=r"no answer within 0\.5s"):
            await client.post(http_sink.url + "/slow", b"{}", {}, within=0.5)
        with pytest.raises(WireError, match="not an http"):
            await client.post("ftp://example.com/x", b"{}", {}, within=1)
    finally:
        await client.aclose()
    assert [r.path for r in http_sink.requests][:3] == ["/chunked", "/after", "/moved"]
