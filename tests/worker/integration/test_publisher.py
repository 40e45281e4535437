"""The publisher against a real Redis: live events go out in script batches, complete and in order, and
survive Redis losing its scripts (a restart) without losing or reordering an entry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from worker.bus.codec import decode_event
from worker.bus.publisher import EVENTS_PER_CALL, Publisher
from worker.bus.streams import Keys


@pytest.fixture
async def redis(redis_server, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:  # type: ignore[no-untyped-def]
    client = aioredis.from_url(redis_server.url())
    yield client
    await client.aclose()


async def _published(redis: aioredis.Redis, keys: Keys) -> list[tuple[str, int]]:
    entries = await redis.xrange(keys.events)
    out = []
    for sid, fields in entries:
        e = decode_event(sid, fields)
        out.append((e.type, int(e.data["n"])))
    return out


async def test_a_large_batch_arrives_whole_and_in_order(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    publisher = Publisher(redis, keys)
    count = EVENTS_PER_CALL * 2 + 7  # three script calls in one pipeline
    for n in range(count):
        publisher.event("step", "step.completed", f"00000000-0000-0000-0000-{n:012d}", {"n": n})
    await publisher.flush()
    assert await _published(redis, keys) == [("step.completed", n) for n in range(count)]
    assert publisher.dropped == 0


async def test_redis_without_the_script_still_gets_every_entry(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    publisher = Publisher(redis, keys)
    done = redis.pubsub()
    await done.subscribe(keys.done("r-1"))
    await done.get_message(timeout=1)  # the subscription's confirmation
    publisher.event("run", "run.created", "r-1", {"n": 0})
    await publisher.flush()
    await redis.script_flush()  # what a Redis restart does to loaded scripts
    for n in range(1, EVENTS_PER_CALL + 3):
        publisher.event("step", "step.started", "r-1", {"n": n})
    publisher.enqueue("r-2")
    publisher.finished("r-1")
    await publisher.flush()
    assert await _published(redis, keys) == [("run.created", 0)] + [
        ("step.started", n) for n in range(1, EVENTS_PER_CALL + 3)]
    assert publisher.dropped == 0
    message = await done.get_message(timeout=2)
    assert message is not None and message["data"] == b"1"  # the rest of the pipeline went out too
    lane = await redis.xrange(keys.work_lane(None))
    assert [f[b"run"] for _, f in lane] == [b"r-2"]
    await done.aclose()


async def test_an_unreachable_redis_drops_live_events_without_raising(redis_prefix: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    publisher = Publisher(dead, Keys(redis_prefix))
    publisher.event("step", "step.completed", "r-1", {"n": 1})
    publisher.event("step", "step.completed", "r-1", {"n": 2})
    await publisher.flush()
    assert publisher.dropped == 2
    await dead.aclose()
