"""A worker's intake: which work-stream entries it reads when it has free slots. Weighted fair across priorities.

Each priority has a work stream (`Keys.work_lanes`: `work:high`, `work`, `work:low`, one consumer group on
each). A worker with `free` slots reads at most `free` entries, split among the lanes by smooth weighted
round-robin with the weights of LANE_WEIGHTS (4, 2, 1): while all three have work, of every 7 runs it takes 4
are high, 2 normal and 1 low, interleaved (h n h l h n h), so no lane starves however long another's
backlog. Slots a lane's turn would get but it has no entry for go to the other lanes, so an idle lane costs
nothing. The round-robin state lives across reads: a worker that takes one run at a time still follows the
ratio (more than 16 free slots are shared in proportion at once). Without contention (more free slots than
entries) every entry is taken at once, whatever its lane.

Reads are non-blocking first (one pipelined XREADGROUP per lane that has a share; a lane that comes back short
is empty for the rest of this read and its share moves on); only when every lane is empty does the worker
block on all of them at once, and after a read that found them all empty it goes straight to that wait (which
returns at once if entries came meanwhile: an idle worker pays no extra round trip per run). The wait reads
at most a third of the free slots per lane; when it returns entries of several lanes at the same moment, what
does not fit is *held* (read, not acknowledged) and taken first by the next reads in the same weighted order;
a worker that stops hands held entries back to the streams (`hand_back`).

The intake is also the rest of the consumer side of the work streams: their consumer groups
(`ensure_groups`), taking over what a dead consumer read (`claim_stale`), forgetting consumers long gone
(`forget_idle_consumers`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from worker.bus.streams import LANE_WEIGHTS, LANES, WORK_GROUP, WORK_MAXLEN, Keys

Entry = tuple[bytes, dict[bytes, bytes]]
"""A stream entry as redis-py returns it: (entry id, fields)."""

_PICKED_ONE_BY_ONE = 16
"""Up to this many free slots are shared out pick by pick; more, in proportion at once (O(lanes), not O(slots))."""


class WorkIntake:
    """Reads work-stream entries for one consumer, at most `free` at a time, weighted fair by priority."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, consumer: str) -> None:
        self._redis = redis
        self._consumer = consumer
        self.streams: dict[str, str] = keys.work_lanes
        self._held: dict[str, deque[Entry]] = {lane: deque() for lane in LANES}
        self._current: dict[str, int] = dict.fromkeys(LANES, 0)
        self._drained = False
        """Every lane came back short at the last read: the next one may go straight to the blocking wait."""

    async def ensure_groups(self) -> bool:
        """Create the consumer group on every lane's stream; True when one had to be created (Redis lost it)."""
        created = False
        for stream in self.streams.values():
            try:
                await self._redis.xgroup_create(stream, WORK_GROUP, id="0", mkstream=True)
                created = True
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        return created

    def pick(self, lanes: list[str]) -> str:
        """The next lane by smooth weighted round-robin among `lanes`."""
        total = sum(LANE_WEIGHTS[lane] for lane in lanes)
        for lane in lanes:
            self._current[lane] += LANE_WEIGHTS[lane]
        best = max(lanes, key=lambda lane: self._current[lane])  # ties: the higher priority (LANES order)
        self._current[best] -= total
        return best

    def _shares(self, n: int, lanes: list[str]) -> dict[str, int]:
        """How many of `n` slots each lane gets: pick by pick while few (the round-robin interleaves a worker
        that takes one run at a time), else in proportion to the weights at once (largest remainders first)."""
        if n <= _PICKED_ONE_BY_ONE:
            shares: dict[str, int] = {}
            for _ in range(n):
                lane = self.pick(lanes)
                shares[lane] = shares.get(lane, 0) + 1
            return shares
        total = sum(LANE_WEIGHTS[lane] for lane in lanes)
        shares = {lane: n * LANE_WEIGHTS[lane] // total for lane in lanes}
        by_remainder = sorted(lanes, key=lambda lane: -(n * LANE_WEIGHTS[lane] % total))  # stable: LANES order
        for lane in by_remainder[: n - sum(shares.values())]:
            shares[lane] += 1
        return shares

    async def read(self, free: int, block_ms: int = 1000) -> dict[str, list[Entry]]:
        """Up to `free` entries, by stream; blocks up to `block_ms` only when no lane has any."""
        if not self._drained or free < len(LANES):
            taken = await self._take(free, reads=True)
            if any(taken.values()):
                return taken
        # every lane was empty at the last look: wait for any of them (no extra round trip first; this returns
        # at once when entries came meanwhile). Each lane gives at most a third of the free slots, so a burst
        # is not read ahead of what fits (what does is held and taken first, in the weighted order).
        per_lane = max(1, free // len(LANES))
        reply: Any = await self._redis.xreadgroup(WORK_GROUP, self._consumer, dict.fromkeys(self.streams.values(), ">"),
                                                  count=per_lane, block=block_ms)
        lane_of = {stream: lane for lane, stream in self.streams.items()}
        self._drained = True
        for stream, entries in list(reply or []):
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            found = [e for e in entries if e and e[1] is not None]
            self._held[lane_of[name]].extend(found)
            self._drained = self._drained and len(entries) < per_lane
        # a lane that filled its count may have more: read on (weighted) in this same batch
        return await self._take(free, reads=not self._drained)

    async def _take(self, free: int, *, reads: bool) -> dict[str, list[Entry]]:
        taken: dict[str, list[Entry]] = {stream: [] for stream in self.streams.values()}
        if not reads and sum(len(held) for held in self._held.values()) <= free:  # no contention: all of it
            for lane, held in self._held.items():
                taken[self.streams[lane]].extend(held)
                held.clear()
            return taken
        open_lanes = [lane for lane in LANES if reads or self._held[lane]]
        need = free
        while need > 0 and open_lanes:
            wanted: dict[str, int] = {}
            for lane, n in self._shares(need, open_lanes).items():
                held = self._held[lane]
                while n and held:
                    taken[self.streams[lane]].append(held.popleft())
                    n -= 1
                if n:
                    wanted[lane] = n
            got = await self._read_now(wanted) if reads and wanted else {}
            need = 0
            for lane, n in wanted.items():
                entries = got.get(lane, [])
                taken[self.streams[lane]].extend(entries)
                if len(entries) < n:  # empty for now: its remaining share goes to the other lanes
                    open_lanes.remove(lane)
                    need += n - len(entries)
        if reads:
            self._drained = not open_lanes
        return taken

    async def _read_now(self, wanted: dict[str, int]) -> dict[str, list[Entry]]:
        """One pipelined, non-blocking XREADGROUP per lane."""
        lanes = list(wanted)
        async with self._redis.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.xreadgroup(WORK_GROUP, self._consumer, {self.streams[lane]: ">"}, count=wanted[lane])
            replies = await pipe.execute()
        out: dict[str, list[Entry]] = {}
        for lane, reply in zip(lanes, replies, strict=True):
            entries: list[Entry] = []
            for _stream, found in list(reply or []):
                entries.extend(e for e in found if e and e[1] is not None)
            out[lane] = entries
        return out

    async def claim_stale(self, min_idle_ms: int, count: int = 100) -> dict[str, list[Entry]]:
        """Entries that other consumers (dead workers) read but did not acknowledge for `min_idle_ms`, claimed for
        this one, by stream."""
        found: dict[str, list[Entry]] = {}
        for stream in self.streams.values():
            try:
                reply: Any = await self._redis.xautoclaim(stream, WORK_GROUP, self._consumer,
                                                          min_idle_time=min_idle_ms, count=count)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # recreated by the consume loop
                    continue
                raise
            entries = [e for e in (reply[1] if reply else []) if e and e[1] is not None]
            if entries:
                found[stream] = entries
        return found

    async def forget_consumer(self, name: str) -> None:
        """Remove a dead worker's consumer from every lane's group (what it had read but not taken is work the
        reconciler re-derives from Postgres: the caller asks for a full pass)."""
        for stream in self.streams.values():
            try:
                await self._redis.xgroup_delconsumer(stream, WORK_GROUP, name)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise

    async def forget_idle_consumers(self, idle_ms: int) -> None:
        """Remove other consumers silent for `idle_ms` that hold no entries (workers that are gone)."""
        for stream in self.streams.values():
            for c in await self._redis.xinfo_consumers(stream, WORK_GROUP):
                name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
                if name != self._consumer and c["pending"] == 0 and c["idle"] > idle_ms:
                    await self._redis.xgroup_delconsumer(stream, WORK_GROUP, name)

    async def hand_back(self) -> int:
        """Put held entries back on their streams (acknowledging the originals): a stopping worker's reads
        go to the other workers at once instead of after the reclaim delay. Returns how many."""
        count = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for lane, held in self._held.items():
                stream = self.streams[lane]
                while held:
                    entry_id, fields = held.popleft()
                    pipe.xadd(stream, fields, maxlen=WORK_MAXLEN, approximate=True)  # type: ignore[arg-type]
                    pipe.xack(stream, WORK_GROUP, entry_id)
                    count += 1
            if count:
                await pipe.execute()
        return count
