"""RuntimeClient, part live: what `llm` and `agent` steps are writing, as it is written (worker/streams).

    entries = await client.live_entries(run_id)                   # what the run's live stream holds now
    async for entry in client.follow_live(run_id, after=cursor):  # then follow it, until the run finishes
        text.feed(entry)                                          # LiveText: text per call, abandoned marked

Each entry's `id` is its place in the run's live stream: give the last one you saw as `after` to go on
where you stopped (after a disconnect, in another process): nothing is skipped and nothing repeated, as
long as the stream still holds it (it keeps AGENTRT_LIVE_MAXLEN entries, for AGENTRT_LIVE_TTL seconds after
the last one). Reading needs the `view` permission on the run's workflow, like its events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from worker import runlog as ev
from worker.bus.connect import REDIS_ERRORS
from worker.client.base import ClientBase
from worker.errors import NotFound, WorkerError
from worker.store.runs import RUN_EVENTS, history_of
from worker.streams.entries import FIRST_ID, LiveEntry, decode_entry, parse_stream_id
from worker.streams.fold import CallText, LiveText

__all__ = ["CallText", "LiveApi", "LiveEntry", "LiveText"]

FINISH_GRACE = 0.3
"""After the run (or step) is seen finished, how long a follower keeps reading while entries still come."""
CHECK_EVERY = 1.0  # seconds between looks at the run's committed events while the stream is quiet


def _cursor(after: str | None) -> str:
    after = after or FIRST_ID
    if parse_stream_id(after) is None:
        raise WorkerError(f"{after!r} is not a live stream id (like 1718000000000-0)")
    return after


class LiveApi(ClientBase):
    """Reading a run's live stream: `live_entries` (what it holds) and `follow_live` (and what comes)."""

    async def _live_run(self, run_id: str) -> tuple[str, str]:
        """(run id, workflow) of a run the acting identity may view."""
        run_id = await self.resolve_run_id(run_id)
        row = await self.pool.fetchrow("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        return run_id, str(row["workflow"])

    async def live_entries(self, run_id: str, after: str | None = None, *, count: int = 1000,
                           checked: bool = False) -> list[LiveEntry]:
        """The run's live entries after stream id `after` (default: from the start), oldest first, at most
        `count`. Empty (not an error) when Redis is down or the stream has expired. `checked`: the caller
        already resolved and authorized `run_id`."""
        cursor = _cursor(after)
        if not checked:
            run_id, _ = await self._live_run(run_id)
        try:
            rows: Any = await self.redis.xrange(self.keys.live(run_id), min=f"({cursor}", max="+", count=count)
        except REDIS_ERRORS:
            return []
        return [e for e in (decode_entry(i, f) for i, f in rows or []) if e is not None]

    async def follow_live(self, run_id: str, *, after: str | None = None, step_id: str | None = None,
                          block_ms: int = 500, until_finished: bool = True) -> AsyncIterator[LiveEntry]:
        """The run's live entries after `after`, then each as it is written (of one step with `step_id`).

        With `until_finished`, it ends once the run has finished (or, with `step_id`, once that step has) and
        the stream has been read to its end; otherwise it goes on until the caller stops. While Redis is down
        it waits and tries again (the committed outputs have the whole answers in any case)."""
        cursor = _cursor(after)
        run_id, _ = await self._live_run(run_id)
        key = self.keys.live(run_id)
        seq = 0
        finished_at: float | None = None
        checked_at = 0.0
        while True:
            try:
                block = block_ms if finished_at is None else min(block_ms, 100)
                reply: Any = await self.redis.xread({key: cursor}, count=500, block=block)
            except REDIS_ERRORS:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None  # redis-py turned the cancellation into an error
                reply = None
                await asyncio.sleep(min(1.0, block_ms / 1000))
            got = 0
            for _stream, rows in list(reply or []):  # redis-py types replies loosely
                for entry_id, fields in rows:
                    entry = decode_entry(entry_id, fields)
                    cursor = entry.id if entry is not None else (
                        entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
                    got += 1
                    if entry is not None and (step_id is None or entry.step_id == step_id):
                        yield entry
            if not until_finished:
                continue
            now = time.monotonic()
            if finished_at is not None:
                if not got and now - finished_at >= FINISH_GRACE:
                    return
                continue
            if got and now - checked_at < CHECK_EVERY:
                continue
            checked_at = now
            seq, done = await self._finished(run_id, seq, step_id)
            if done:
                finished_at = now

    async def _finished(self, run_id: str, after_seq: int, step_id: str | None) -> tuple[int, bool]:
        """Whether the run (or its step `step_id`) has finished, from its committed events after `after_seq`."""
        at = await history_of(self.pool, run_id)
        rows = [] if at is None else await self.pool.fetch(
            f"""SELECT seq, type, step_id, item, data FROM events WHERE {RUN_EVENTS} AND seq > $3 AND (
                   type = ANY($4::text[]) OR (step_id = $5 AND item IS NULL
                                              AND type = ANY($6::text[]))) ORDER BY seq""",
            run_id, at, after_seq, sorted(ev.RUN_TERMINAL_EVENTS), step_id or "",
            [ev.STEP_COMPLETED, ev.STEP_SKIPPED, ev.STEP_FAILED])
        last = after_seq
        for r in rows:
            last = max(last, int(r["seq"]))
            if r["type"] in ev.RUN_TERMINAL_EVENTS:
                return last, True
            if step_id is not None and r["type"] != ev.STEP_FAILED:
                return last, True
            if step_id is not None and r["type"] == ev.STEP_FAILED and _final(r["data"]):
                return last, True
        return last, False


def _final(data: object) -> bool:
    if isinstance(data, str):
        import orjson

        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
    return not isinstance(data, dict) or bool(data.get("final", True))
