"""`GET /v1/runs/{id}/events`: a run's committed events as Server-Sent Events.

Postgres's event log is the source (each SSE `id` is the event's sequence number, so `Last-Event-ID`
resumes exactly after what the client saw: no gap, no repeat); the live events stream only wakes the
reader up early, and a 1 s poll covers a Redis outage. The stream ends with an `end` event once the run
has finished and every event of it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse

from worker import output as o
from worker.client import RuntimeClient

POLL_SECONDS = 1.0  # the longest a committed event waits to be sent when no live event woke the stream
KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream
BATCH = 500


def _frame(event_id: int | None, event: str, data: object) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


class LiveHub:
    """One reader of the live events stream per API process; wakes the SSE streams of the runs it names
    (one XREAD for every open stream, not one each)."""

    def __init__(self, client: RuntimeClient) -> None:
        self._client = client
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="api-live-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read(self) -> None:
        async for event in self._client.watch_events("$", block_ms=1000):
            for wake in self._waiting.get(event.run_id or "", ()):
                wake.set()

    @contextlib.contextmanager
    def subscription(self, run_id: str) -> Iterator[asyncio.Event]:
        wake = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(wake)
        try:
            yield wake
        finally:
            waiting = self._waiting.get(run_id)
            if waiting is not None:
                waiting.discard(wake)
                if not waiting:
                    del self._waiting[run_id]


def run_events_response(client: RuntimeClient, hub: LiveHub, run_id: str, after: int,
                        request: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        last = after
        sent_at = time.monotonic()
        with hub.subscription(run_id) as wake:
            yield b"retry: 1000\n\n"
            while True:
                wake.clear()
                summary, events = await client.events_after(run_id, last, limit=BATCH)
                for event in events:
                    yield _frame(event.seq, event.type, o.to_jsonable(event))
                    last = event.seq
                if events:
                    sent_at = time.monotonic()
                if len(events) == BATCH:
                    continue
                if summary.status.terminal:
                    yield _frame(None, "end", {"run_id": run_id, "status": summary.status.value,
                                               "last_event_id": last})
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await wake.wait()
                if await request.is_disconnected():
                    return
                if time.monotonic() - sent_at > KEEPALIVE_SECONDS:
                    yield b": keepalive\n\n"
                    sent_at = time.monotonic()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
