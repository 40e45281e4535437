"""The worker's intake against a real Redis: per-priority work streams, weighted reads, held entries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from worker.bus.intake import WorkIntake
from worker.bus.publisher import Publisher
from worker.bus.streams import WORK_GROUP, Keys


@pytest.fixture
async def redis(redis_server, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:  # type: ignore[no-untyped-def]
    client = aioredis.from_url(redis_server.url())
    yield client
    await client.aclose()


async def _publish(redis: aioredis.Redis, keys: Keys, runs: list[tuple[str, str | None]]) -> None:
    publisher = Publisher(redis, keys)
    for run_id, priority in runs:
        publisher.enqueue(run_id, priority)
    await publisher.flush()


def _runs(batch: dict[str, list]) -> list[str]:  # type: ignore[type-arg]
    return [fields[b"run"].decode() for found in batch.values() for _, fields in found]


async def test_reads_follow_the_weights_while_every_lane_has_work(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    intake = WorkIntake(redis, keys, "w1")
    assert await intake.ensure_groups() is True
    assert await intake.ensure_groups() is False
    await _publish(redis, keys, [(f"{p[0]}{i}", p) for p in ("low", "normal", "high") for i in range(20)])
    assert await redis.xlen(keys.work) == 20 and await redis.xlen(f"{keys.work}:high") == 20
    taken: list[str] = []
    for _ in range(14):
        taken += _runs(await intake.read(1, block_ms=10))
    assert [t[0] for t in taken] == list("hnhlhnh" * 2)
    seven = _runs(await intake.read(7, block_ms=10))
    assert sorted(t[0] for t in seven) == sorted("hhhhnnl")
    # within a lane, entries keep their order
    highs = [t for t in taken + seven if t.startswith("h")]
    assert highs == [f"h{i}" for i in range(len(highs))]


async def test_an_idle_lane_gives_its_share_away_and_held_entries_go_back_on_stop(
        redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    intake = WorkIntake(redis, keys, "w1")
    await intake.ensure_groups()
    await _publish(redis, keys, [(f"l{i}", "low") for i in range(5)])
    assert _runs(await intake.read(3, block_ms=10)) == ["l0", "l1", "l2"]  # only low has work: all of it
    assert _runs(await intake.read(5, block_ms=10)) == ["l3", "l4"]
    assert _runs(await intake.read(5, block_ms=50)) == []  # nothing: the blocking read times out
    # one slot for entries of two lanes: one now, the other next
    await _publish(redis, keys, [("h0", "high"), ("n0", None)])
    got = _runs(await intake.read(1, block_ms=10))
    assert len(got) == 1
    rest = _runs(await intake.read(1, block_ms=10))
    assert sorted(got + rest) == ["h0", "n0"]
    # a stopping worker hands held entries back: another consumer reads them at once
    await _publish(redis, keys, [("h1", "high"), ("l9", "low")])
    intake._held["low"].extend((await redis.xreadgroup(WORK_GROUP, "w1", {f"{keys.work}:low": ">"}))[0][1])
    before = (await redis.xpending(f"{keys.work}:low", WORK_GROUP))["pending"]
    assert await intake.hand_back() == 1
    assert (await redis.xpending(f"{keys.work}:low", WORK_GROUP))["pending"] == before - 1  # the original: acked
    other = WorkIntake(redis, keys, "w2")
    assert sorted(_runs(await other.read(5, block_ms=10))) == ["h1", "l9"]
