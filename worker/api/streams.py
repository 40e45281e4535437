"""`GET /v1/runs/{id}/events`: a run's committed events, and its live LLM output, as Server-Sent Events.

Postgres's event log is the source of the committed events; the live events stream only wakes the reader
up early, and a 1 s poll covers a Redis outage. The live output of `llm`/`agent` steps (`llm.delta`,
`llm.done`, `llm.abandoned`: worker/streams) comes from the run's live stream in Redis, followed by one
reader per open SSE stream. The stream ends with an `end` event once the run has finished and every event
of it was sent.

Event ids: each SSE `id` is the reader's position in BOTH sources: `SEQ` (the last committed event sent, a
number) while no live entry has been sent, then `SEQ:LIVE` (LIVE: the last live entry sent, a Redis stream
id such as `1718000000000-3`). A client that reconnects with `Last-Event-ID` gets the committed events after
SEQ and the live entries after LIVE: no gap, no repeat, in either (`SEQ` alone: the live stream from its
start). `?deltas=false` leaves the live output out.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import orjson
from fastapi import Request
from fastapi.responses import StreamingResponse

from worker import output as o
from worker.client import RuntimeClient
from worker.client.live import LiveEntry
from worker.streams.entries import parse_stream_id

POLL_SECONDS = 1.0  # the longest a committed event waits to be sent when no live event woke the stream
KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing an idle stream
BATCH = 500


def parse_last_event_id(value: str | None) -> tuple[int, str | None]:
    """(committed events seen up to, live stream id seen up to or None) of a `Last-Event-ID`; ValueError if it
    is not an id of this stream."""
    if not value:
        return 0, None
    head, colon, live = value.strip().partition(":")
    seq = max(0, int(head))
    if colon and parse_stream_id(live) is None:
        raise ValueError(value)
    return seq, (live if colon else None)


def event_id(seq: int, live: str | None) -> str:
    return str(seq) if live is None else f"{seq}:{live}"


def _frame(event_id: int | str | None, event: str, data: object) -> bytes:
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


def run_events_response(client: RuntimeClient, hub: LiveHub, run_id: str, after: int, request: Request, *,
                        live_after: str | None = None, deltas: bool = True) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        last, cursor = after, live_after
        entries: asyncio.Queue[LiveEntry] = asyncio.Queue(maxsize=2000)
        more = asyncio.Event()  # live entries arrived
        pump = asyncio.create_task(_pump(client, run_id, cursor, entries, more)) if deltas else None
        if pump is not None:  # its end is not awaited: what it ended with is collected here
            pump.add_done_callback(lambda t: t.cancelled() or t.exception())
        sent_at = polled_at = time.monotonic()
        poll = True
        try:
            with hub.subscription(run_id) as wake:
                yield b"retry: 1000\n\n"
                while True:
                    # live entries first: what a step wrote reaches Redis before its end is committed
                    more.clear()
                    for entry in _drain(entries, cursor):
                        cursor = entry.id
                        sent_at = time.monotonic()
                        yield _frame(event_id(last, cursor), entry.type, entry.to_json())
                    if poll or wake.is_set() or time.monotonic() - polled_at >= POLL_SECONDS:
                        wake.clear()
                        polled_at = time.monotonic()
                        summary, events = await client.events_after(run_id, last, limit=BATCH)
                        for event in events:
                            last = event.seq
                            yield _frame(event_id(last, cursor), event.type, o.to_jsonable(event))
                        if events:
                            sent_at = time.monotonic()
                        if len(events) == BATCH:
                            continue
                        if summary.status.terminal:
                            if deltas:  # what the run's steps wrote last is in Redis before their end commits
                                rest = await client.live_entries(run_id, cursor, count=100_000, checked=True)
                                for entry in [*_drain(entries, cursor), *rest]:
                                    if _newer(entry.id, cursor):
                                        cursor = entry.id
                                        yield _frame(event_id(last, cursor), entry.type, entry.to_json())
                            yield _frame(None, "end", {"run_id": run_id, "status": summary.status.value,
                                                       "last_event_id": last if cursor is None else
                                                       event_id(last, cursor)})
                            return
                    poll = False
                    await _either(wake, more, max(0.0, POLL_SECONDS - (time.monotonic() - polled_at)))
                    if await request.is_disconnected():
                        return
                    if time.monotonic() - sent_at > KEEPALIVE_SECONDS:
                        yield b": keepalive\n\n"
                        sent_at = time.monotonic()
        finally:
            if pump is not None:
                pump.cancel()  # not awaited long: a blocked read of redis-py may take its time to notice
                await asyncio.wait({pump}, timeout=1.0)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _pump(client: RuntimeClient, run_id: str, after: str | None, entries: asyncio.Queue[LiveEntry],
                more: asyncio.Event) -> None:
    """Follows the run's live stream into `entries` (one blocking reader per SSE stream)."""
    async for entry in client.follow_live(run_id, after=after, until_finished=False):
        await entries.put(entry)
        more.set()


def _drain(entries: asyncio.Queue[LiveEntry], cursor: str | None) -> list[LiveEntry]:
    out: list[LiveEntry] = []
    while not entries.empty():
        entry = entries.get_nowait()
        if _newer(entry.id, cursor):
            out.append(entry)
            cursor = entry.id
    return out


def _newer(entry_id: str, cursor: str | None) -> bool:
    if cursor is None:
        return True
    mine, seen = parse_stream_id(entry_id), parse_stream_id(cursor)
    return mine is not None and (seen is None or mine > seen)


async def _either(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109 - a bound
    if a.is_set() or b.is_set():
        return
    waiters = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
