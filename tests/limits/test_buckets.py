"""The limiter's Lua scripts against a real Redis (GCRA requests, token reservations settled with the real use,
concurrency holders that expire, tightening by the provider's headers), and the local fallback's same rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from worker.limits import redis_buckets
from worker.limits.buckets import LocalBuckets, Settlement
from worker.limits.redis_buckets import RedisBuckets, limit_keys
from worker.limits.spec import Buckets, LimitSpec, buckets, parse_rate

HORIZON, GO_NOW = 2.0, 0.5


@pytest.fixture
async def store(redis_server: Any, redis_prefix: str) -> AsyncIterator[RedisBuckets]:
    client = aioredis.from_url(redis_server.url())
    yield RedisBuckets(client, redis_prefix)
    await client.aclose()


def limit(name: str, **kw: Any) -> Buckets:
    rates = {k: parse_rate(v) for k, v in kw.items() if k in ("requests", "tokens")}
    return buckets(name, LimitSpec(**{**kw, **rates}))


async def ask(store: Any, b: Buckets, *, cost: float = 0, holder: str = "h", waiter: str = "w",
              rate_done: bool = False) -> Any:
    return await store.acquire(b, cost=cost, holder=holder, waiter=waiter, not_before=0.0, rate_done=rate_done,
                               horizon=HORIZON, go_now=GO_NOW)


async def test_gcra_starts_empty_then_reserves_slots_at_the_rate(store: RedisBuckets) -> None:
    b = limit("gcra", requests="10/s")
    waits = [(await ask(store, b, waiter=f"w{i}")) for i in range(4)]
    assert [g.kind for g in waits] == ["ok"] * 4
    # a new bucket lets one request go at once, then one per interval: no burst from an empty (or lost) bucket
    assert [round(g.wait, 2) for g in waits] == pytest.approx([0.0, 0.1, 0.2, 0.3], abs=0.02)


async def test_a_full_bucket_allows_its_burst(store: RedisBuckets) -> None:
    b = limit("burst", requests="10/s", burst=3)
    await store.redis.hset(limit_keys(store.prefix, "burst")[0], "tat", "1")  # TAT long past: a full bucket
    waits = [round((await ask(store, b)).wait, 2) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2], abs=0.02)


async def test_beyond_the_horizon_nothing_is_reserved_and_waiters_queue(store: RedisBuckets) -> None:
    b = limit("far", requests="60/min")  # one a second
    assert [round((await ask(store, b)).wait) for _ in range(3)] == [0, 1, 2]
    first = await ask(store, b, waiter="late-1")
    assert first.kind == "wait" and first.wait == pytest.approx(3.0, abs=0.05)
    second = await ask(store, b, waiter="late-2")  # queued behind late-1's expected slot, not at the same one
    assert second.kind == "wait" and second.wait == pytest.approx(4.0, abs=0.05)
    again = await ask(store, b, waiter="late-1")  # asking again keeps its place
    assert again.kind == "wait" and again.wait == pytest.approx(3.0, abs=0.05)
    raw = await store.status("far")
    # waiting: the reserved steps that sleep for their slot (w, its latest slot) and the two queued ones
    assert raw.waiting == 3 and raw.granted == 3 and raw.throttled == 2 + 3


async def test_tokens_reserve_before_and_settle_after(store: RedisBuckets) -> None:
    b = limit("tok", tokens="6000/min")  # 100 tokens a second
    first = await ask(store, b, cost=50)
    assert first.kind == "ok" and first.wait == pytest.approx(0.5, abs=0.02)  # an empty bucket fills first
    second = await ask(store, b, cost=50)  # queued behind the first reservation
    assert second.wait == pytest.approx(1.0, abs=0.02)
    # the first call used 10 of its 50: 40 come back, and the next call's slot moves 0.4 s closer
    await store.settle(b, Settlement(token_delta=40, used_tokens=10))
    third = await ask(store, b, cost=50)
    assert third.wait == pytest.approx(1.1, abs=0.03)
    # a call that used more than it reserved is charged the difference
    await store.settle(b, Settlement(token_delta=-100, used_tokens=150))
    fourth = await ask(store, b, cost=10)
    assert fourth.wait == pytest.approx(2.2, abs=0.03)
    raw = await store.status("tok")
    assert raw.window_tokens == 160 and raw.level is not None and raw.level < 0


async def test_a_call_larger_than_the_bucket_waits_for_a_full_bucket_only(store: RedisBuckets) -> None:
    b = limit("small", tokens="100/s")  # capacity 95
    grant = await ask(store, b, cost=10_000)
    assert grant.kind == "ok" and grant.wait == pytest.approx(0.95, abs=0.02)


async def test_concurrency_holders_are_released_and_expire(store: RedisBuckets,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    b = limit("conc", concurrency=2)
    one, two = await ask(store, b, holder="a"), await ask(store, b, holder="b")
    assert one.held and two.held
    busy = await ask(store, b, holder="c")
    assert busy.kind == "busy" and 0 < busy.wait <= 30
    await store.settle(b, Settlement(holder="a"))
    assert (await ask(store, b, holder="c")).held
    # a dead worker's hold: never released, it stops counting when it expires
    monkeypatch.setattr(redis_buckets, "HOLD_TTL", 0.3)
    await store.settle(b, Settlement(holder="b"))
    await store.settle(b, Settlement(holder="c"))
    store = RedisBuckets(store.redis, store.prefix)  # holds of 0.3 s from here on
    assert (await ask(store, b, holder="dead-1")).held and (await ask(store, b, holder="dead-2")).held
    assert (await ask(store, b, holder="x")).kind == "busy"
    await asyncio.sleep(0.4)
    assert (await ask(store, b, holder="x")).held
    # a refreshed hold lives on
    await store.refresh(b, "x")
    assert (await store.status("conc")).holders == 1


async def test_the_providers_headers_tighten_the_buckets(store: RedisBuckets) -> None:
    b = limit("hdr", requests="10/s", tokens="1000/s", burst=10)
    keys = limit_keys(store.prefix, "hdr")
    await store.redis.hset(keys[0], mapping={"tat": "1", "level": "950", "ts": "1"})  # full
    # the provider says only 2 requests and 100 tokens are left: that is what may go now
    await store.settle(b, Settlement(remaining_requests=2, remaining_tokens=100))
    waits = [round((await ask(store, b, cost=10)).wait, 2) for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.0, 0.1], abs=0.02)
    raw = await store.status("hdr")
    assert raw.level == pytest.approx(70, abs=5)
    # it never loosens: a provider that says more than we allow changes nothing
    await store.settle(b, Settlement(remaining_requests=10, remaining_tokens=100_000))
    assert (await ask(store, b, cost=10)).wait == pytest.approx(0.2, abs=0.03)


async def test_a_429_blocks_the_limit_for_its_retry_after_and_is_counted(store: RedisBuckets) -> None:
    b = limit("blocked", requests="100/s", tokens="10000/s")
    await store.settle(b, Settlement(block=1.5, is_429=True))
    grant = await ask(store, b, cost=1)
    assert grant.kind == "ok" and grant.wait == pytest.approx(1.5, abs=0.03)
    raw = await store.status("blocked")
    assert raw.rejected_429 == 1 and raw.last_429 is not None


async def test_a_refund_gives_the_slot_back(store: RedisBuckets) -> None:
    b = limit("refund", requests="10/s")
    for _ in range(3):
        await ask(store, b)
    await store.settle(b, Settlement(refund_requests=1))
    assert (await ask(store, b)).wait == pytest.approx(0.2, abs=0.02)


async def test_a_lost_bucket_and_a_drained_one_start_empty(store: RedisBuckets) -> None:
    b = limit("lost", requests="10/s", burst=10)
    keys = limit_keys(store.prefix, "lost")
    await store.redis.hset(keys[0], "tat", "1")  # full
    await store.drain(b)  # after an outage: whatever Redis remembers, start from empty
    assert [round((await ask(store, b)).wait, 2) for _ in range(2)] == pytest.approx([0.0, 0.1], abs=0.02)
    await store.redis.delete(*keys)  # a flush
    assert [round((await ask(store, b)).wait, 2) for _ in range(2)] == pytest.approx([0.0, 0.1], abs=0.02)


async def test_the_local_fallback_follows_the_same_rules_with_its_share() -> None:
    local = LocalBuckets(share=0.5)
    b = limit("local", requests="10/s", tokens="200/s", concurrency=4)  # half: 5/s, 100 tokens/s, 2 at once
    waits = [await ask(local, b, cost=0, holder=f"h{i}") for i in range(3)]
    assert [(g.kind, round(g.wait, 2), g.held) for g in waits[:2]] == [("ok", 0.0, True), ("ok", 0.2, True)]
    assert waits[2].kind == "busy"  # concurrency 2: the third would go within 0.5 s, but both holds are taken
    await local.settle(b, Settlement(holder="h0"))
    third = await ask(local, b, cost=0, holder="h2")
    assert third.kind == "ok" and third.held and third.wait == pytest.approx(0.4, abs=0.02)
    tokens = await ask(local, limit("t", tokens="200/s"), cost=50)
    assert tokens.wait == pytest.approx(0.5, abs=0.02)
    slow = limit("f", requests="1/s")  # 0.5/s here: a slot every 2 s
    assert [(g.kind, round(g.wait)) for g in [await ask(local, slow) for _ in range(3)]] == [
        ("ok", 0), ("ok", 2), ("wait", 4)]


async def test_credits_are_taken_only_while_the_bucket_is_more_than_half_full(store: RedisBuckets) -> None:
    b = limit("room", requests="100/s", burst=20)
    await store.redis.hset(limit_keys(store.prefix, "room")[0], "tat", "1")  # full: 20 may go now
    extras = []
    for _ in range(3):
        grant = await store.acquire(b, cost=0, holder="h", waiter="w", not_before=0.0, rate_done=False,
                                    horizon=HORIZON, go_now=GO_NOW, want=5)
        assert grant.kind == "ok" and grant.wait == 0
        extras.append(grant.extra)
    assert extras == [5, 3, 0]  # 19 free after the first call: 5 taken; 13: 3 (10 stay free); 10: none
    assert (await store.status("room")).granted == 3 + 8
    await store.settle(b, Settlement(refund_requests=3))  # credits that were not used come back, uncounted
    assert (await store.status("room")).granted == 8
    conc = limit("capped", requests="100/s", concurrency=5)
    grant = await store.acquire(conc, cost=0, holder="h", waiter="w", not_before=0.0, rate_done=False,
                                horizon=HORIZON, go_now=GO_NOW, want=5)
    assert grant.extra == 0  # never under a concurrency cap: every call must hold its own slot


async def test_higher_priorities_queue_ahead_of_lower_ones_beyond_the_horizon(store: RedisBuckets) -> None:
    b = limit("ranked", requests="60/min")  # one a second; horizon 2 s: three reserved, the rest queue
    assert [(await ask(store, b)).kind for _ in range(3)] == ["ok"] * 3

    async def queue(waiter: str, priority: int) -> float:
        grant = await store.acquire(b, cost=0, holder="h", waiter=waiter, not_before=0.0, rate_done=False,
                                    horizon=HORIZON, go_now=GO_NOW, priority=priority)
        assert grant.kind == "wait"
        return round(grant.wait)

    lows = [await queue(f"low-{i}", 2) for i in range(3)]
    normals = [await queue(f"normal-{i}", 1) for i in range(3)]
    high = await queue("high-0", 0)
    assert lows == [3, 4, 5]
    assert normals == [3, 4, 5]  # not behind the low ones
    assert high == 3  # ahead of everyone who queued before it
    assert await queue("low-3", 2) == 6  # a low one queues behind every priority
    assert await queue("low-0", 2) == 3  # asking again keeps its place: delayed, never pushed back for ever
