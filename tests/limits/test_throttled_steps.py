"""A step that must wait for capacity is waiting, not failing: it parks (the run shows `throttled: NAME (next slot
in …)`), burns no attempt, and starts again as the same attempt; an agent parked between two turns resumes from
its journal without repeating the first. Throttled time is its own span."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from tests.limits.support import sized_answer, write_limits
from tests.support.http_sink import HttpSink
from tests.support.llm_peer import LlmPeer
from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from worker import runlog as ev
from worker.config import Settings
from worker.models import StepStatus
from worker.telemetry.spans import RunTracer


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        p.responder = sized_answer
        yield p


async def test_a_throttled_step_parks_without_burning_an_attempt(settings: Settings, http_sink: HttpSink) -> None:
    write_limits(settings.workflows_dir, "limits:\n  slow: {requests: 12/min, burst: 1}\n")  # one every 5 s
    write_workflow(settings, "ping.yaml", """
        name: ping
        inputs: {sink: {type: string}}
        steps:
          - id: call
            uses: http
            limit: slow
            retry: {max_attempts: 1}
            with: {url: "${{ inputs.sink }}/ping"}
        """)
    async with running_worker(settings) as worker, client_for(settings) as client:
        first = await client.start_run("ping", {"sink": http_sink.url})
        await wait_status(client, first, "completed")
        second = await client.start_run("ping", {"sink": http_sink.url})
        await wait_status(client, second, "waiting", timeout=10)
        parked = await client.get_run(second)
        waiting_on = parked.summary.waiting_on or ""
        assert waiting_on.startswith("throttled: slow (next slot in "), waiting_on
        assert 3.0 <= float(waiting_on.rsplit("in ", 1)[1].rstrip("s)")) <= 5.5
        (step,) = parked.steps
        assert step.status == StepStatus.WAITING and len(step.attempts) == 1
        # parked beyond the horizon: no worker holds the run meanwhile
        await eventually(lambda: _not_held(worker, second), 5, what="the run released")
        assert http_sink.count("/ping") == 1
        await wait_status(client, second, "completed", timeout=15)
        done = await client.get_run(second)
    (step,) = done.steps
    assert len(step.attempts) == 1 and step.attempts[0].status == "completed"  # max_attempts 1: none was burnt
    types = [e.type for e in done.events]
    assert ev.STEP_FAILED not in types and types.count(ev.STEP_WAITING) >= 1
    waits = [e for e in done.events if e.type == ev.STEP_WAITING]
    assert all(e.data["reason"] == "throttled" and e.data["limit"] == "slow" and e.attempt == 1 for e in waits)
    gap = done.events[-2].ts - [e.ts for e in done.events if e.type == ev.STEP_WAITING][0]
    assert gap.total_seconds() >= 3.5  # the second call went out at its slot, not before
    assert http_sink.count("/ping") == 2


async def _not_held(worker: object, run_id: str) -> bool:
    return run_id not in getattr(worker, "actors", {})


async def test_an_agent_parked_between_turns_resumes_from_its_journal(settings: Settings, peer: LlmPeer) -> None:
    write_limits(settings.workflows_dir, "limits:\n  turns: {requests: 30/min, burst: 1}\n")  # one every 2 s
    write_workflow(settings, "triage.yaml", f"""
        name: triage
        steps:
          - id: agent
            uses: agent
            limit: turns
            retry: {{max_attempts: 1}}
            with: {{model: peer-model, base_url: "{peer.openai_url}", prompt: "agent: triage ticket 7", max_turns: 3}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        run = await client.start_run("triage")
        await wait_status(client, run, "completed", timeout=20)
        detail = await client.get_run(run)
    (step,) = detail.steps
    assert step.output["turns"] == 2 and step.output["stop_reason"] == "final_answer"
    assert len(step.attempts) == 1
    assert len(peer.requests) == 2  # the first turn was not asked again after the step waited
    assert [r.key for r in peer.requests] == [f"agentrt:{run}:agent", f"agentrt:{run}:agent.2"]
    assert peer.requests[1].at - peer.requests[0].at >= 1.8
    waits = [e for e in detail.events if e.type == ev.STEP_WAITING]
    assert waits and all(e.data["reason"] == "throttled" for e in waits)
    # throttled time is a span of its own, under the attempt
    spans = RunTracer(run, kinds={"agent": "agent"}).feed_all(_events(detail))
    throttled = [s for s in spans if s.name == "throttled"]
    assert throttled and all(s.attributes["agentrt.limit.name"] == "turns" for s in throttled)
    assert sum(s.end - s.start for s in throttled) >= 1.5
    assert len({s.span_id for s in throttled}) == len(throttled)


def _events(detail: object) -> list[ev.Event]:
    return [ev.Event(type=e.type, ts=e.ts.timestamp(), step_id=e.step_id, item=e.item, attempt=e.attempt,
                     data=dict(e.data), seq=e.seq) for e in detail.events]  # type: ignore[attr-defined]


async def test_a_concurrency_cap_holds_calls_until_a_slot_frees(settings: Settings, http_sink: HttpSink) -> None:
    write_limits(settings.workflows_dir, "limits:\n  one-at-a-time: {concurrency: 1}\n")
    http_sink.set_delay("/slow", 0.4)
    write_workflow(settings, "slow.yaml", """
        name: slow
        inputs: {sink: {type: string}}
        steps:
          - id: call
            uses: http
            limit: one-at-a-time
            with: {url: "${{ inputs.sink }}/slow"}
        """)
    async with running_worker(settings), client_for(settings) as client:
        runs = [await client.start_run("slow", {"sink": http_sink.url}) for _ in range(4)]
        for run in runs:
            await wait_status(client, run, "completed", timeout=20)
        details = [await client.get_run(r) for r in runs]
    calls = sorted((d.steps[0].attempts[-1].started_at, d.steps[0].attempts[-1].finished_at) for d in details)
    assert all(len(d.steps[0].attempts) == 1 for d in details)
    starts = sorted(r.at for r in http_sink.requests)
    assert all(b - a >= 0.35 for a, b in itertools.pairwise(starts)), starts  # never two at once
    assert len(calls) == 4
    await asyncio.sleep(0)


async def test_a_429_on_a_limited_http_call_waits_instead_of_burning_attempts(
        settings: Settings, http_sink: HttpSink) -> None:
    write_limits(settings.workflows_dir, "limits:\n  vendor: {requests: 20/s}\n")
    write_workflow(settings, "vendor.yaml", """
        name: vendor
        inputs: {sink: {type: string}}
        steps:
          - id: call
            uses: http
            limit: vendor
            retry: {max_attempts: 1}
            with: {url: "${{ inputs.sink }}/busy"}
        """)
    http_sink.script("/busy", [(429, {"Retry-After": "1"}, "slow down"), (429, {"Retry-After": "1"}, "slow down"),
                               (200, {}, {"ok": True})])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("vendor", {"sink": http_sink.url})
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error  # max_attempts 1: the 429s burnt none
    (step,) = detail.steps
    assert [a.status for a in step.attempts] == ["completed"]
    assert http_sink.count("/busy") == 3
    assert [e.type for e in detail.events].count(ev.STEP_WAITING) == 2  # throttled twice, the same attempt
