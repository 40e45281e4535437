"""The pure parts: what a provider's headers say, what a call is expected to cost, and what the engine records
for a throttled step (its event, the run's `waiting_on`, when it starts again). No services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker import runlog as ev
from worker.definitions.loader import load_text
from worker.engine.attempt import Outcome
from worker.engine.commands import Start
from worker.engine.outcomes import record_outcome
from worker.engine.parking import run_update
from worker.engine.scheduler import decide
from worker.engine.state import RunState
from worker.errors import StepThrottled
from worker.limits.provider import DEFAULT_OUTPUT_TOKENS, estimate_tokens, observe
from worker.steps.providers import ChatRequest, ToolSpec

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_openai_headers() -> None:
    said = observe({"X-RateLimit-Remaining-Requests": "59", "x-ratelimit-remaining-tokens": "149000",
                    "x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0.5s"}, NOW)
    assert said.remaining_requests == 59 and said.remaining_tokens == 149000
    assert said.reset_requests == 1.0 and said.reset_tokens == 360.5 and said.retry_after is None
    said = observe({"retry-after": "2", "retry-after-ms": "1250", "x-ratelimit-reset-requests": "20ms"}, NOW)
    assert said.retry_after == 1.25 and said.reset_requests == pytest.approx(0.02) and said.remaining_requests == -1


def test_anthropic_headers() -> None:
    reset = (NOW + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    said = observe({"anthropic-ratelimit-requests-remaining": "4", "anthropic-ratelimit-requests-reset": reset,
                    "anthropic-ratelimit-input-tokens-remaining": "900", "anthropic-ratelimit-output-tokens-remaining":
                    "300", "anthropic-ratelimit-tokens-reset": reset, "retry-after": "7"}, NOW)
    assert said.remaining_requests == 4 and said.remaining_tokens == 300  # the tightest token count
    assert said.reset_requests == 30 and said.reset_tokens == 30 and said.retry_after == 7


def test_garbage_headers_say_nothing() -> None:
    said = observe({"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-tokens": "soon"}, NOW)
    assert said.remaining_requests == -1 and said.reset_tokens is None


def test_estimated_tokens_cover_the_prompt_and_the_answer() -> None:
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "x" * 400}], max_tokens=100)
    assert estimate_tokens(request) == 100 + 4 + 100
    with_tools = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                             tools=[ToolSpec("lookup", "find a ticket", {"type": "object"})])
    assert estimate_tokens(with_tools) > DEFAULT_OUTPUT_TOKENS


SPEC = load_text("""
name: t
steps:
  - {id: ask, uses: http, with: {url: "https://example.com"}}
""")


def _state() -> RunState:
    state = RunState("r1")
    state.apply(ev.Event(ev.RUN_CREATED, 1.0, data={"workflow": "t", "def_hash": SPEC.def_hash, "inputs": {}}, seq=1))
    state.apply(ev.Event(ev.STEP_STARTED, 2.0, step_id="ask", attempt=1, data={"inputs": {"url": "u"}}, seq=2))
    return state


def test_a_throttled_attempt_waits_and_starts_again_as_the_same_attempt() -> None:
    state = _state()
    outcome = Outcome(("ask", None), 1, throttle=StepThrottled("helpdesk-api", 12.0, 2.1))
    found = record_outcome(SPEC, state, "r1", outcome, now=9.9, rand=0.5)
    assert found.event.type == ev.STEP_WAITING and found.task is None and found.note is None
    assert found.event.data == {"reason": "throttled", "limit": "helpdesk-api", "wake_at": 12.0,
                                "next_slot_in": 2.1, "cause": "rate"}
    e = found.event
    state.apply(ev.Event(e.type, 9.9, step_id=e.step_id, item=e.item, attempt=e.attempt, data=e.data, seq=3))
    update = run_update(state)
    assert update.status == "waiting" and update.waiting_on == "throttled: helpdesk-api (next slot in 2.1s)"
    early = decide(SPEC, state, 11.0)
    assert early.commands == [] and early.wake_at == 12.0
    (start,) = decide(SPEC, state, 12.0).commands
    assert start == Start("ask", None, 1, "http", {"url": "u"})  # no attempt burnt, the same inputs
    assert state.instances[("ask", None)].failures == 0
