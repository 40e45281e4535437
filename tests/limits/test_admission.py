"""The gate of one worker against a real Redis: credits (a limit with room costs no round trip per call), a call
under several limits (all or nothing), reservations kept for a parked step, the pre-call checks (the budgets'
hook), and the mode when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from tests.limits.support import write_limits
from worker.config import Settings
from worker.errors import StepFailed, StepThrottled
from worker.limits.gate import CallInfo, Limiter
from worker.limits.redis_buckets import RedisBuckets, limit_keys


async def full(limiter: Limiter, name: str) -> None:
    await limiter.shared.redis.hset(limit_keys(limiter.settings.redis_prefix, name)[0], "tat", "1")


async def test_a_limit_with_room_admits_from_credits(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    write_limits(settings.workflows_dir, "limits:\n  roomy: {requests: 1000/s}\n")
    limiter = Limiter(settings)
    asked: list[str] = []
    acquire = RedisBuckets.acquire

    async def counting(self: RedisBuckets, b: Any, **kw: Any) -> Any:
        asked.append(b.name)
        return await acquire(self, b, **kw)

    monkeypatch.setattr(RedisBuckets, "acquire", counting)
    await full(limiter, "roomy")
    gate = limiter.gate(run_id="r", workflow="w", step_id="s", item=None, kind="http", names=("roomy",))
    permits = [await gate.before_step(f"k{i}") for i in range(10)]
    assert all(p is not None for p in permits) and asked == ["roomy"]  # one round trip, 9 calls from credits
    await limiter.aclose()  # the credits not used go back
    status = await RedisBuckets(limiter.shared.redis, settings.redis_prefix).status("roomy")
    assert status.granted == 10


async def test_a_call_under_several_limits_takes_all_or_none(settings: Settings) -> None:
    write_limits(settings.workflows_dir, "limits:\n  wide: {requests: 100/s}\n  narrow: {requests: 1/min}\n")
    limiter = Limiter(settings)
    gate = limiter.gate(run_id="r", workflow="w", step_id="s", item=None, kind="tool", names=("wide", "narrow"))
    first = await gate.before_step("k1")
    assert first is not None and first.limits == ("narrow", "wide")
    with pytest.raises(StepThrottled) as waited:
        await gate.before_step("k2")  # narrow: a minute away, beyond the horizon
    assert waited.value.limit == "narrow" and waited.value.next_slot_in > 50
    assert waited.value.wake_at - time.time() < waited.value.next_slot_in  # it asks again before its turn
    status = await limiter.shared.status("wide")
    assert status.granted == 1  # what `wide` gave the second call was handed back
    await limiter.aclose()


async def test_a_parked_step_finds_its_reserved_slot(settings: Settings) -> None:
    write_limits(settings.workflows_dir, "limits:\n  paced: {requests: 1/s, burst: 1}\n")
    limiter = Limiter(replace(settings, lease_ttl=6.0))  # horizon 3 s
    gate = limiter.gate(run_id="r", workflow="w", step_id="s", item=None, kind="http", names=("paced",))
    assert await gate.before_step("a") is not None
    with pytest.raises(StepThrottled) as waited:
        await gate.before_step("b")  # one second away: reserved, the run waits for it in memory
    assert waited.value.next_slot_in == pytest.approx(1.0, abs=0.05)
    assert "b" in limiter.admission.reserved()
    granted = (await limiter.shared.status("paced")).granted
    await asyncio.sleep(max(0.0, waited.value.wake_at - time.time()))
    assert await gate.before_step("b") is not None  # the same call again: its slot, not a new one
    assert (await limiter.shared.status("paced")).granted == granted
    await limiter.aclose()


async def test_pre_call_checks_run_first_and_may_refuse(settings: Settings) -> None:
    write_limits(settings.workflows_dir, "limits:\n  turns: {requests: 10/s, tokens: 100000/min}\n")
    limiter = Limiter(settings)
    seen: list[CallInfo] = []

    async def budget(call: CallInfo) -> None:
        seen.append(call)
        if call.cost_usd is not None and call.cost_usd > 1.0:
            raise StepFailed(f"budget exceeded: ${call.cost_usd:.2f} for one call", retryable=False)

    limiter.checks.append(budget)
    gate = limiter.gate(run_id="r", workflow="w", step_id="s", item=None, kind="llm", names=("turns",))
    ok = await gate.before_llm(call_key="k1", provider="openai", model="m", host="h", tokens=500, cost_usd=0.01)
    assert ok is not None
    with pytest.raises(StepFailed):
        await gate.before_llm(call_key="k2", provider="openai", model="m", host="h", tokens=500, cost_usd=5.0)
    assert [c.call_key for c in seen] == ["k1", "k2"] and seen[0].limits == ("turns",) and seen[0].tokens == 500
    assert (await limiter.shared.status("turns")).granted == 1  # the refused call held no capacity
    # an unlimited step is checked too
    free = limiter.gate(run_id="r", workflow="w", step_id="t", item=None, kind="http", names=())
    assert free.matters and await free.before_step("k3") is None and seen[-1].limits == ()
    await limiter.aclose()


async def test_without_redis_the_worker_keeps_limiting_on_its_own_share(settings: Settings) -> None:
    write_limits(settings.workflows_dir, "limits:\n  api: {requests: 10/s}\n")
    limiter = Limiter(replace(settings, redis_url="redis://127.0.0.1:9/0"))  # nothing listens there
    limiter.live_workers = 2
    gate = limiter.gate(run_id="r", workflow="w", step_id="s", item=None, kind="http", names=("api",))
    started = time.monotonic()
    with pytest.raises(StepThrottled) as waited:
        await gate.before_step("a")  # the fleet's reserved slots go first: nothing new for one horizon
    assert limiter.mode == "fallback" and "ConnectionError" in (limiter.mode_reason or "")
    assert waited.value.next_slot_in == pytest.approx(limiter.horizon, abs=0.1)
    assert time.monotonic() - started < 2.0
    await asyncio.sleep(limiter.horizon)
    permits = [await gate.before_step(f"k{i}") for i in range(3)]  # then 5/s: half of the limit
    assert all(p is not None for p in permits)
    assert time.monotonic() - started >= limiter.horizon + 0.35
    await limiter.aclose()
