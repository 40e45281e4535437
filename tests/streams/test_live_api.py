"""`GET /v1/runs/{id}/events` carries the live output: `llm.delta` events between the committed ones, and a
client that reconnects with `Last-Event-ID` gets the rest of both without a gap or a repeat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.streams.support import ANSWER, llm_workflow
from tests.support.api_server import bearer, make_token
from tests.support.llm_peer import LlmPeer, openai_text
from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        yield p


async def read_sse(api: httpx.AsyncClient, path: str, headers: dict[str, str], *,
                   stop_after_deltas: int | None = None) -> list[dict[str, Any]]:
    """The stream's messages ({"id", "event", "data"}) until it ends, or until `stop_after_deltas` llm.delta
    events were read (then the client hangs up)."""
    messages: list[dict[str, Any]] = []
    async with api.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        current: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line == "":
                if "event" in current:
                    messages.append(current)
                    if stop_after_deltas is not None and \
                            sum(m["event"] == "llm.delta" for m in messages) >= stop_after_deltas:
                        return messages
                current = {}
            elif line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return messages


async def test_deltas_on_the_events_stream_and_a_reconnect_misses_and_repeats_nothing(
        settings: Settings, api: httpx.AsyncClient, peer: LlmPeer) -> None:
    write_workflow(settings, "ask.yaml", llm_workflow())
    peer.tokens_per_s = 60
    peer.script([openai_text(ANSWER, usage=(30, 44))])
    h = bearer(await make_token(settings, "watcher", "runs:write", "runs:read"))
    async with running_worker(settings), client_for(settings) as client:
        run_id = (await api.post("/v1/runs", json={"workflow": "ask", "inputs": {"llm": peer.openai_url}},
                                 headers=h)).json()["run_id"]
        first = await read_sse(api, f"/v1/runs/{run_id}/events", h, stop_after_deltas=3)
        rest = await read_sse(api, f"/v1/runs/{run_id}/events", {**h, "Last-Event-ID": first[-1]["id"]})
        whole = await read_sse(api, f"/v1/runs/{run_id}/events", h)  # afterwards, from the start
        quiet = await read_sse(api, f"/v1/runs/{run_id}/events?deltas=false", h)
        bad = await api.get(f"/v1/runs/{run_id}/events", headers={**h, "Last-Event-ID": "3:not-an-id"})
        committed = (await client.get_run(run_id)).events
    both = first + rest
    deltas = [m for m in both if m["event"] == "llm.delta"]
    assert "".join(m["data"]["text"] for m in deltas) == ANSWER
    assert [m["data"]["seq"] for m in both if m["event"].startswith("llm.")] == \
        list(range(1, len(deltas) + 2))  # every delta, then llm.done: once each
    assert [m["event"] for m in both if not m["event"].startswith("llm.") and m["event"] != "end"] == \
        [e.type for e in committed]
    assert both[-1]["event"] == "end" and both[-1]["data"]["status"] == "completed"
    # ids: SEQ, then SEQ:LIVE once a delta was sent; both parts only grow
    ids = [m["id"] for m in both if "id" in m]
    parts = [(int(i.split(":")[0]), tuple(map(int, i.split(":")[1].split("-"))) if ":" in i else (0, 0)) for i in ids]
    assert ":" not in ids[0] and any(":" in i for i in ids)
    assert parts == sorted(parts) and len(set(ids)) == len(ids)
    assert deltas[0]["data"]["run_id"] == run_id and deltas[0]["data"]["step_id"] == "ask"
    assert "".join(m["data"]["text"] for m in whole if m["event"] == "llm.delta") == ANSWER
    assert not any(m["event"].startswith("llm.") for m in quiet) and all(":" not in m.get("id", "") for m in quiet)
    assert bad.status_code == 400
