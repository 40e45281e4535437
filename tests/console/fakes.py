"""FakeRuntimeClient: fixed data and a fixed clock for the console's snapshot and Pilot tests.

It answers like `worker.client.RuntimeClient`, records every command it receives (cancel, decide,
resolve, replay, send_event, pause_schedule, resume_schedule, and the on-call ones of
tests/console/fake_oncall.py: pause_run, resume_run, pause_workflow, resume_workflow, retry) in `commands`,
can be told to raise Conflict for a task or to be unreachable, and its `watch_events` yields scripted
events and then waits forever. Limits and budgets: tests/console/fake_limits.py; the live text of llm/agent
steps: tests/console/fake_live.py.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.console.fake_limits import FakeLimits
from tests.console.fake_live import FakeLive
from tests.console.fake_oncall import FakeOnCall
from tests.console.fake_search import FakeSearch, matching
from worker.client.events import EventDelivery, EventWait
from worker.client.replica import ReadReplica
from worker.client.runs import RunCounts
from worker.client.schedules import ScheduleInfo
from worker.definitions.versions import diff_pair, source_diff
from worker.errors import Conflict, NotFound, PermissionDenied, WorkerError
from worker.models import (
    AttemptView,
    EventView,
    HumanTask,
    LiveEvent,
    PauseInfo,
    RunDetail,
    RunId,
    RunStatus,
    RunSummary,
    SpanView,
    StepLogLine,
    StepStatus,
    StepView,
    TaskId,
    TaskStatus,
    WorkerInfo,
    WorkflowEvent,
    WorkflowInfo,
    WorkflowVersion,
)
from worker.oversight.replay import ExternalCall, ReplayPlan
from worker.search.filters import RunFilter

FIXED_NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)


def fixed_now() -> datetime:
    return FIXED_NOW


def ago(**kw: float) -> datetime:
    return FIXED_NOW - timedelta(**kw)


def rid(n: int) -> RunId:
    """Stable, distinct, UUID-shaped run ids: the first 8 characters differ for every run."""
    return RunId(str(uuid.uuid5(uuid.NAMESPACE_URL, f"agentrt-run-{n}")))


def tid(n: int) -> TaskId:
    return TaskId(str(uuid.uuid5(uuid.NAMESPACE_URL, f"agentrt-task-{n}")))


HASH = {
    "refund-request": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "fan-out": "2c26b46b68ffc68ff99b453c1d30413413422d70",
    "hello": "fcde2b2edba56bf408601fb721fe9b5c338d10ee",
    "nightly-report": "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f2",
}


def _run(n: int, workflow: str, status: RunStatus, *, created: datetime, finished: datetime | None = None,
         step: str | None = None, waiting_on: str | None = None, error: str | None = None,
         trigger: str | None = None, wake_at: datetime | None = None, version: str | None = None) -> RunSummary:
    return RunSummary(rid(n), workflow, version or HASH[workflow], status, created, finished or created, finished,
                      step, waiting_on, None, error, trigger, wake_at)


EVENT_RUN = 14
"""The run parked in a `wait` step (rid 14; 13 is the id the live-update tests give a new run)."""
QUEUED_RUN = 15
"""The run queued behind its concurrency key `customer-7`."""
EVENT_DEADLINE = FIXED_NOW + timedelta(days=2, hours=3)
PAUSED_RUN = 16
"""Paused by oscar (the run itself): parked, status paused."""
RETRYING_RUN = 17
"""Backing off between attempts of its step: `retry 2/3`, the last error, the next try in 12 s."""
PAUSING_RUN = 18
"""Paused while running: a worker is still finishing its step (status running, `paused` set)."""
OLD_HELLO_RUN = 10
"""Failed under the previous version of hello: the current one can take it over (retry default: current)."""
LEGACY_RUN = 8
"""Cancelled in the oldest version of refund-request at `legacy_refund`, a step the current version no longer
has: it can be retried only under its own version."""
RUN_NUMBERS = (*range(1, 13), 14, 15, 16, 17, 18)
"""The listed runs (rid 13 is the id the live-update tests give a new run)."""


def _older(name: str, back: int) -> str:
    return OLDER_HASHES[name][back]


def make_runs() -> list[RunSummary]:
    """Seventeen runs in every status, started by hand, the API, a schedule, an event or a webhook; one waits for
    an event, one is queued behind its concurrency key, one is paused, one is being paused while it finishes its
    step, one backs off between attempts; two were started under earlier versions of their workflow (newest first
    is the console's job, not this list's order; the event run is the last)."""
    return [
        _run(1, "refund-request", RunStatus.RUNNING, created=ago(minutes=2), step="refund", trigger="api"),
        _run(2, "refund-request", RunStatus.WAITING, created=ago(minutes=15), step="approve", waiting_on="human",
             wake_at=FIXED_NOW + timedelta(hours=3, minutes=46)),
        _run(3, "fan-out", RunStatus.RUNNING, created=ago(seconds=40), step="summarize", trigger="event"),
        _run(4, "hello", RunStatus.COMPLETED, created=ago(hours=1), finished=ago(minutes=59, seconds=57),
             trigger="webhook"),
        _run(5, "nightly-report", RunStatus.FAILED, created=ago(hours=3), finished=ago(hours=2, minutes=58),
             step="render", error="step render: HTTP 503 from reports.example (3 attempts)", trigger="schedule"),
        _run(6, "hello", RunStatus.PENDING, created=ago(seconds=5), trigger="api"),
        _run(7, "fan-out", RunStatus.COMPLETED, created=ago(hours=5), finished=ago(hours=4, minutes=59),
             trigger="schedule"),
        _run(LEGACY_RUN, "refund-request", RunStatus.CANCELLED, created=ago(hours=7), finished=ago(hours=6),
             step="legacy_refund", error="cancelled by alice@10.0.0.7: duplicate ticket",
             version=_older("refund-request", 1)),
        _run(9, "nightly-report", RunStatus.COMPLETED, created=ago(days=1), finished=ago(hours=23, minutes=50),
             trigger="schedule"),
        _run(OLD_HELLO_RUN, "hello", RunStatus.FAILED, created=ago(days=2), finished=ago(days=2),
             step="greet", error="step greet: expression `inputs.nme` failed: no such key", version=_older("hello", 0)),
        _run(11, "refund-request", RunStatus.WAITING, created=ago(minutes=48), step="approve", waiting_on="human",
             trigger="api", wake_at=FIXED_NOW + timedelta(minutes=12)),
        _run(12, "fan-out", RunStatus.WAITING, created=ago(minutes=31), step="notify", waiting_on="human"),
        replace(_run(QUEUED_RUN, "refund-request", RunStatus.QUEUED, created=ago(hours=2), trigger="api"),
                concurrency_key="customer-7"),  # behind run 2, which waits on a human
        replace(_run(PAUSED_RUN, "refund-request", RunStatus.PAUSED, created=ago(hours=1, minutes=20), step="refund",
                     trigger="api"),
                paused=PauseInfo("oscar@10.0.0.8", ago(minutes=3), "payments incident INC-4411: hold refunds")),
        _run(RETRYING_RUN, "nightly-report", RunStatus.WAITING, created=ago(hours=1, minutes=30), step="render",
             waiting_on="retry 2/3", error="HTTP 503 Service Unavailable from reports.example", trigger="api",
             wake_at=FIXED_NOW + timedelta(seconds=12)),
        replace(_run(PAUSING_RUN, "hello", RunStatus.RUNNING, created=ago(hours=1, minutes=40), step="greet"),
                paused=PauseInfo("oscar@10.0.0.8", ago(seconds=8), "checking the greeting copy")),
        _run(EVENT_RUN, "refund-request", RunStatus.WAITING, created=ago(minutes=50), step="await_reply",
             waiting_on="event customer.replied key T-42", trigger="webhook", wake_at=EVENT_DEADLINE),
    ]


def make_waits() -> list[EventWait]:
    """The open `wait` steps: run 14's, for customer.replied with key T-42."""
    return [EventWait(rid(EVENT_RUN), "refund-request", "await_reply", None, "customer.replied", "T-42",
                      EVENT_DEADLINE, ago(minutes=49))]


def make_schedules() -> list[ScheduleInfo]:
    """Two schedules: nightly-report's cron (its last tick started the failed run 5), fan-out's interval (paused)."""
    return [
        ScheduleInfo(workflow="nightly-report", schedule="cron 0 10 * * * (Europe/Berlin)", catch_up="latest",
                     timezone="Europe/Berlin", next_fire_at=FIXED_NOW + timedelta(hours=21), last_fire_at=ago(hours=3),
                     last_run_id=rid(5), last_run_status="failed", paused=False, paused_by=None, paused_reason=None,
                     paused_at=None, skipped_ticks=0, last_error=None, def_hash=HASH["nightly-report"]),
        ScheduleInfo(workflow="fan-out", schedule="every 15m", catch_up="none", timezone="UTC",
                     next_fire_at=ago(hours=4, minutes=45), last_fire_at=ago(hours=5), last_run_id=rid(7),
                     last_run_status="completed", paused=True, paused_by="alice@10.0.0.7",
                     paused_reason="helpdesk API maintenance until Monday", paused_at=ago(hours=4, minutes=50),
                     skipped_ticks=2, last_error=None, def_hash=HASH["fan-out"]),
    ]


def _a(n: int, start: datetime, end: datetime | None, status: str, error: str | None = None) -> AttemptView:
    return AttemptView(n, start, end, status, error)


def fan_out_detail(summary: RunSummary) -> RunDetail:
    """Run 3: a foreach step with a retried item, a failed attempt, and a step still running."""
    t0 = summary.created_at

    def s(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    key = f"{summary.run_id}:fetch"
    steps = (
        StepView("list", "python", None, StepStatus.COMPLETED, (_a(1, s(0.2), s(0.5), "completed"),),
                 {"source": "tickets"}, {"ids": ["T-1", "T-2", "T-3"]}, None, None),
        StepView("fetch", "http", None, StepStatus.COMPLETED, (), None, [{"status": 200}] * 3, None, None),
        StepView("fetch", "http", 0, StepStatus.COMPLETED, (_a(1, s(1), s(3), "completed"),),
                 {"url": "https://helpdesk.example/api/tickets/T-1"}, {"status": 200}, None, f"{key}:0:0"),
        StepView("fetch", "http", 1, StepStatus.COMPLETED,
                 (_a(1, s(1), s(4), "failed", "HTTP 502 Bad Gateway (retryable)"), _a(2, s(6), s(8), "completed")),
                 {"url": "https://helpdesk.example/api/tickets/T-2"}, {"status": 200}, None, f"{key}:1:0"),
        StepView("fetch", "http", 2, StepStatus.COMPLETED,
                 (_a(1, s(1), s(11), "failed", "timed out after 10s"), _a(2, s(13), s(15), "failed", "HTTP 502"),
                  _a(3, s(17), s(19), "completed")),
                 {"url": "https://helpdesk.example/api/tickets/T-3"}, {"status": 200}, None, f"{key}:2:0"),
        StepView("summarize", "llm", None, StepStatus.RUNNING, (_a(1, s(20), None, "running"),),
                 {"model": "small", "prompt": "Summarize 3 tickets"}, None, None, f"{summary.run_id}:summarize:0"),
        StepView("notify", "tool", None, StepStatus.PENDING, (), None, None, None, None),
    )
    events: list[EventView] = [EventView(1, t0, "run.created", None, None, None, {"inputs": {"source": "tickets"}})]
    for view in steps:
        for a in view.attempts:
            events.append(EventView(0, a.started_at or t0, "step.started", view.step_id, view.item, a.attempt, {}))
            if a.finished_at is not None:
                kind = "step.completed" if a.status == "completed" else "step.failed"
                events.append(EventView(0, a.finished_at, kind, view.step_id, view.item, a.attempt,
                                        {"error": a.error} if a.error else {}))
    events.sort(key=lambda e: e.ts)
    numbered = tuple(replace(e, seq=i + 1) for i, e in enumerate(events))
    return RunDetail(summary, {"source": "tickets"}, None, steps, numbered)


def simple_detail(summary: RunSummary) -> RunDetail:
    """Any other run: two steps shaped by its status."""
    t0 = summary.created_at
    first = StepView("start", "set", None, StepStatus.COMPLETED,
                     (_a(1, t0 + timedelta(seconds=0.1), t0 + timedelta(seconds=0.3), "completed"),),
                     {"ticket_id": "T-1042"}, {"ok": True}, None, None)
    status_map = {
        RunStatus.COMPLETED: StepStatus.COMPLETED, RunStatus.FAILED: StepStatus.FAILED,
        RunStatus.RUNNING: StepStatus.RUNNING, RunStatus.WAITING: StepStatus.WAITING,
        RunStatus.CANCELLED: StepStatus.CANCELLED, RunStatus.PENDING: StepStatus.PENDING,
        RunStatus.QUEUED: StepStatus.PENDING, RunStatus.PAUSED: StepStatus.PENDING,
    }
    step_status = status_map[summary.status]
    end = summary.finished_at
    attempts: tuple[AttemptView, ...] = ()
    if summary.status is RunStatus.FAILED:
        attempts = tuple(_a(i, t0 + timedelta(seconds=i * 10), t0 + timedelta(seconds=i * 10 + 5), "failed",
                            "HTTP 503 Service Unavailable") for i in (1, 2, 3))
    elif summary.status not in (RunStatus.PENDING, RunStatus.QUEUED):
        attempts = (_a(1, t0 + timedelta(seconds=1), end, str(step_status)),)
    second = StepView(summary.current_step or "main", "http", None, step_status, attempts, {"n": 1},
                      {"done": True} if summary.status is RunStatus.COMPLETED else None,
                      summary.error if summary.status is RunStatus.FAILED else None,
                      f"{summary.run_id}:main:0" if attempts else None)
    events = (EventView(1, t0, "run.created", None, None, None, {}),
              EventView(2, t0 + timedelta(seconds=0.1), "step.started", "start", None, 1, {}))
    return RunDetail(summary, {"ticket_id": "T-1042"}, None, (first, second), events)


AGENT_HASH = {"refund-agent": "3f79bb7b435b05321651daefd374cdc681dc06fa",
              "refund-check": "6b86b273ff34fce19d6b804eff5a3f5747ada4ea"}


def unlisted_runs() -> list[RunSummary]:
    """Runs that `get_run` finds but `list_runs` does not show, so the runs screen stays as it is: an agent
    run parked on a tool approval (rid 20), and the child run its workflow step started (rid 21)."""
    return [
        RunSummary(rid(20), "refund-agent", AGENT_HASH["refund-agent"], RunStatus.WAITING, ago(minutes=6),
                   ago(minutes=1), None, "resolve", "human", None, None),
        RunSummary(rid(21), "refund-check", AGENT_HASH["refund-check"], RunStatus.COMPLETED, ago(minutes=5, seconds=50),
                   ago(minutes=5, seconds=25), ago(minutes=5, seconds=25), None, None, rid(20), None, "parent"),
    ]


def agent_detail(summary: RunSummary) -> RunDetail:
    """Run 20: a finished agent step (one tool call rejected), a workflow step with a child run, and an
    agent step parked on a tool approval (its turns so far from the journal: `progress["calls"]`)."""
    t0 = summary.created_at

    def s(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    def usage(i: int, o: int) -> dict[str, int]:
        return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}

    lookup = {"id": "call_0", "name": "lookup", "arguments": {"ticket": "T-1042"}}
    refund = {"id": "call_1", "name": "refund", "arguments": {"ticket": "T-1042", "amount": 250.0}}
    rejected = {"status": "rejected", "by": "alice", "reason": "over the 100 EUR limit"}
    answer = "I could not refund T-1042: alice rejected it (over the 100 EUR limit). Escalating to a manager."
    transcript = [
        {"role": "system", "content": "You resolve refund tickets."},
        {"role": "user", "content": "Refund ticket T-1042"},
        {"role": "assistant", "content": "Looking the ticket up, then refunding it.", "tool_calls": [refund, lookup],
         "usage": usage(100, 10), "model": "gpt-4o-mini", "finish_reason": "tool_calls"},
        {"role": "tool", "tool_call_id": "call_1", "name": "refund", "arguments": refund["arguments"],
         "content": "The call to refund was not made: alice rejected it: over the 100 EUR limit.",
         "structuredContent": None, "isError": True, "approval": rejected},
        {"role": "tool", "tool_call_id": "call_0", "name": "lookup", "arguments": lookup["arguments"],
         "content": '{"ticket": "T-1042", "customer": "ACME", "paid": 250.0}', "structuredContent": None,
         "isError": False, "approval": None},
        {"role": "assistant", "content": answer, "tool_calls": [], "usage": usage(150, 30), "model": "gpt-4o-mini",
         "finish_reason": "stop"},
    ]
    triage_out = {"answer": answer, "json": None, "stop_reason": "final_answer", "turns": 2, "tool_calls": 2,
                  "usage": usage(250, 40), "cost_usd": 0.00065, "model": "gpt-4o-mini", "transcript": transcript}
    order = {"id": "call_0", "name": "lookup", "arguments": {"order": "O-77"}}
    pay = {"id": "call_1", "name": "refund", "arguments": {"ticket": "T-1042", "amount": 120.0}}
    progress = {"usage": usage(120, 12), "cost_usd": 0.00036, "turns": 1, "calls": [
        {"index": 0, "type": "llm", "text": "Checking the order first.", "tool_calls": [order, pay],
         "usage": usage(120, 12), "model": "gpt-4o-mini", "finish_reason": "tool_calls", "cost_usd": 0.00036},
        {"index": 1, "type": "tool", "name": "lookup", "arguments": order["arguments"],
         "text": '{"order": "O-77", "status": "shipped", "amount": 120.0}', "isError": False, "approval": None},
    ]}
    child = rid(21)
    steps = (
        StepView("triage", "agent", None, StepStatus.COMPLETED, (_a(1, s(1), s(9), "completed"),),
                 {"model": "gpt-4o-mini", "prompt": "Refund ticket T-1042"}, triage_out, None,
                 f"{summary.run_id}:triage:0"),
        StepView("check", "workflow", None, StepStatus.COMPLETED, (_a(1, s(10), s(35), "completed"),),
                 {"workflow": "refund-check", "inputs": {"ticket": "T-1042"}}, {"ok": True}, None, None),
        StepView("resolve", "agent", None, StepStatus.WAITING, (_a(1, s(36), None, "waiting"),),
                 {"model": "gpt-4o-mini", "prompt": "Refund order O-77"}, None, None,
                 f"{summary.run_id}:resolve:0", progress=progress),
    )
    rows: list[tuple[float, str, str | None, dict[str, Any]]] = [
        (0, "run.created", None, {"inputs": {"ticket": "T-1042"}}),
        (1, "step.started", "triage", {}), (9, "step.completed", "triage", {"output": {"answer": answer}}),
        (10, "step.started", "check", {}),
        (10.2, "step.waiting", "check", {"reason": "child", "child_run_id": child, "workflow": "refund-check"}),
        (34.8, "child.finished", "check", {"child_run_id": child, "status": "completed", "output": {"ok": True},
                                          "error": None}),
        (35, "step.completed", "check", {"output": {"ok": True}}),
        (36, "step.started", "resolve", {}),
        (41, "step.waiting", "resolve", {"reason": "approval", "key": "tool-2",
                                         "prompt": "Agent step 'resolve' wants to call helpdesk/refund"}),
    ]
    events = tuple(EventView(i + 1, s(sec), kind, step, None, None if step is None else 1, data)
                   for i, (sec, kind, step, data) in enumerate(rows))
    return RunDetail(summary, {"ticket": "T-1042"}, None, steps, events, (child,))


def event_wait_detail(summary: RunSummary) -> RunDetail:
    """Run 14: started by a webhook, parked in a `wait` step for customer.replied with key T-42."""
    t0 = summary.created_at

    def s(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    wait = {"event": "customer.replied", "key": "T-42", "timeout": "2d4h"}
    steps = (
        StepView("lookup", "set", None, StepStatus.COMPLETED, (_a(1, s(0.1), s(0.2), "completed"),),
                 {"ticket": "T-42"}, {"ticket": "T-42", "asked": "Which order?"}, None, None),
        StepView("await_reply", "wait", None, StepStatus.WAITING, (_a(1, s(0.3), None, "waiting"),), wait, None,
                 None, None),
        StepView("refund", "tool", None, StepStatus.PENDING, (), None, None, None, None),
    )
    rows: list[tuple[float, str, str | None, dict[str, Any]]] = [
        (0, "run.created", None, {"inputs": {"ticket_id": "T-42"},
                                  "trigger": {"kind": "webhook", "path": "helpdesk"}}),
        (0.1, "step.started", "lookup", {}), (0.2, "step.completed", "lookup", {}),
        (0.3, "step.started", "await_reply", {}),
        (0.35, "step.waiting", "await_reply", {"reason": "event", "event": "customer.replied", "key": "T-42",
                                               "deadline": EVENT_DEADLINE.isoformat()}),
    ]
    events = tuple(EventView(i + 1, s(sec), kind, step, None, None if step is None else 1, data)
                   for i, (sec, kind, step, data) in enumerate(rows))
    return RunDetail(summary, {"ticket_id": "T-42"}, None, steps, events)


def fan_out_spans(summary: RunSummary) -> list[SpanView]:
    """Run 3's stored spans: queue delays, a failed and a crashed attempt, retries, an HTTP client span."""
    t0 = summary.created_at

    def s(sec: float) -> datetime:
        return t0 + timedelta(seconds=sec)

    def span(sid: str, parent: str | None, name: str, a: float, b: float, status: str = "ok",
             message: str | None = None, kind: str = "internal", attrs: dict[str, Any] | None = None) -> SpanView:
        return SpanView(sid, parent, name, kind, s(a), s(b), status, message, attrs or {})

    return [
        span("q0", "run", "queued", 0, 0.2, "unset", attrs={"agentrt.queue.reason": "run"}),
        span("s-list", "run", "step list", 0.2, 0.5, attrs={"agentrt.step.id": "list"}),
        span("a-list-1", "s-list", "list attempt 1", 0.2, 0.5, attrs={"agentrt.step.attempt": 1}),
        span("s-fetch", "run", "step fetch", 1, 19, attrs={"agentrt.step.id": "fetch"}),
        span("s-fetch-0", "s-fetch", "step fetch[0]", 1, 3),
        span("a-fetch-0-1", "s-fetch-0", "fetch[0] attempt 1", 1, 3),
        span("h-fetch-0-1", "a-fetch-0-1", "GET helpdesk.example", 1.1, 2.9, kind="client",
             attrs={"http.response.status_code": 200}),
        span("s-fetch-1", "s-fetch", "step fetch[1]", 1, 8),
        span("a-fetch-1-1", "s-fetch-1", "fetch[1] attempt 1", 1, 4, "error", "HTTP 502 Bad Gateway (retryable)",
             attrs={"agentrt.attempt.outcome": "failed"}),
        span("q-fetch-1-2", "s-fetch-1", "queued", 4, 6, "unset", attrs={"agentrt.queue.reason": "retry"}),
        span("a-fetch-1-2", "s-fetch-1", "fetch[1] attempt 2", 6, 8),
        span("s-fetch-2", "s-fetch", "step fetch[2]", 1, 19),
        span("a-fetch-2-1", "s-fetch-2", "fetch[2] attempt 1", 1, 11, "error", "worker lost during attempt",
             attrs={"agentrt.attempt.crashed": True, "agentrt.attempt.outcome": "crashed"}),
        span("q-fetch-2-2", "s-fetch-2", "queued", 11, 13, "unset", attrs={"agentrt.queue.reason": "retry"}),
        span("a-fetch-2-2", "s-fetch-2", "fetch[2] attempt 2", 13, 15, "error", "HTTP 502",
             attrs={"agentrt.attempt.outcome": "failed"}),
        span("a-fetch-2-3", "s-fetch-2", "fetch[2] attempt 3", 17, 19),
        span("w-summ", "run", "approval wait", 19.2, 19.8, "unset", attrs={"agentrt.wait.reason": "approval"}),
    ]


def many_spans(summary: RunSummary, n: int) -> list[SpanView]:
    """`n` spans: steps of ten attempts each (the waterfall's virtualisation test and benchmark)."""
    t0 = summary.created_at
    out: list[SpanView] = []
    step = 0
    while len(out) < n:
        sid = f"s{step}"
        base = step * 2.0
        out.append(SpanView(sid, None, f"step s{step}", "internal", t0 + timedelta(seconds=base),
                            t0 + timedelta(seconds=base + 2), "ok", None, {}))
        for a in range(min(9, n - len(out))):
            out.append(SpanView(f"{sid}-{a}", sid, f"s{step} attempt {a + 1}", "internal",
                                t0 + timedelta(seconds=base + a * 0.2), t0 + timedelta(seconds=base + a * 0.2 + 0.15),
                                "error" if a % 4 == 3 else "ok", None, {}))
        step += 1
    return out[:n]


def fan_out_logs(summary: RunSummary) -> list[StepLogLine]:
    t0 = summary.created_at
    rows = [
        ("list", None, 1, 0.3, "INFO", "listing tickets from helpdesk"),
        ("fetch", 0, 1, 1.2, "INFO", "GET https://helpdesk.example/api/tickets/T-1"),
        ("fetch", 1, 1, 3.9, "WARNING", "HTTP 502 Bad Gateway, will retry in 2s"),
        ("fetch", 1, 2, 7.5, "INFO", "GET https://helpdesk.example/api/tickets/T-2 -> 200"),
        ("fetch", 2, 2, 14.9, "ERROR", "HTTP 502 from helpdesk.example"),
        ("fetch", 2, 3, 18.8, "INFO", "GET https://helpdesk.example/api/tickets/T-3 -> 200"),
    ]
    return [StepLogLine(i + 1, sid, item, att, t0 + timedelta(seconds=sec), level, msg)
            for i, (sid, item, att, sec, level, msg) in enumerate(rows)]


def make_tasks() -> list[HumanTask]:
    return [
        HumanTask(tid(1), rid(2), "refund-request", "approve", "approval", TaskStatus.PENDING,
                  "Refund 250.00 EUR to ticket T-1042?", {"ticket": "T-1042", "amount": 250.0, "customer": "ACME"},
                  ago(minutes=14), FIXED_NOW + timedelta(hours=3, minutes=46), "reject",
                  requested_by="api:checkout-service"),
        HumanTask(tid(2), rid(11), "refund-request", "approve", "approval", TaskStatus.PENDING,
                  "Refund 1200.00 EUR to ticket T-0977?", {"ticket": "T-0977", "amount": 1200.0},
                  ago(minutes=47), FIXED_NOW + timedelta(minutes=12), "reject", requested_by="bob@10.0.0.9",
                  approvers=("group:payments-leads",), min_approvals=2, approved_by=("alice",)),
        HumanTask(tid(3), rid(12), "fan-out", "notify", "uncertain", TaskStatus.PENDING,
                  "payments.refund may have run: the worker died before its result was recorded",
                  {"tool": "payments.refund", "idempotency_key": f"{rid(12)}:notify:0"},
                  ago(minutes=30), None, None),
    ]


def make_workflows() -> list[WorkflowInfo]:
    return [
        WorkflowInfo("workflows/hello.yaml", "hello", HASH["hello"], "active", None, None, None, ago(days=3), 2),
        WorkflowInfo("workflows/refund-request.yaml", "refund-request", HASH["refund-request"], "active", None,
                     None, None, ago(hours=20), 3),
        WorkflowInfo("workflows/fan-out.yaml", "fan-out", HASH["fan-out"], "active", None, None, None,
                     ago(days=1), 1),
        WorkflowInfo("workflows/nightly-report.yaml", "nightly-report", HASH["nightly-report"], "invalid",
                     "unknown key 'retyr' in step 'render' (did you mean 'retry'?)", 12, 5, ago(minutes=3), 4,
                     "    retyr: {max_attempts: 4}"),
        WorkflowInfo("workflows/scratch.yaml", None, None, "invalid", "mapping values are not allowed here", 3, 9,
                     ago(minutes=1), 0, "steps: a: b"),
    ]


OLDER_HASHES = {  # earlier versions of each workflow, newest first (the active one is HASH[name])
    "hello": ["60303ae22b998861bce3b28f33eec1be758a213c"],
    "refund-request": ["fd61a03af4f77d870fc21e05e7e80678095c92d8", "a4e624d686e03ed2767c0abd85c14426b0b1157d"],
    "fan-out": [],
    "nightly-report": ["7d865e959b2466918c9863afca942d0fb89d7c9a", "ec5e2fb3ccbf4b4ba7ba7b1e8d2c3a3c0a9c5b7b",
                       "1fbd3d2bfd44f5a5a2bfa3bb7d2d0e37c0e8d1e5"],
}

_HELLO = """\
name: hello
inputs:
  name: {{type: string, default: world}}
steps:
  - id: greet
    uses: set
    with: {{message: "{greeting}, ${{{{ inputs.name }}}}!"}}
output: "${{{{ steps.greet.output.message }}}}"
"""

_REFUND = """\
name: refund-request
inputs:
  ticket_id: {{type: string}}
  amount: {{type: number}}
steps:
  - id: lookup
    uses: http
    with: {{url: "https://helpdesk.example/api/tickets/${{{{ inputs.ticket_id }}}}"}}
  - id: approve
    uses: approval
    if: "${{{{ inputs.amount > {limit} }}}}"
    with: {{prompt: "Refund ${{{{ inputs.amount }}}} EUR to ticket ${{{{ inputs.ticket_id }}}}?"}}
  - id: refund
    uses: tool
    with: {{tool: payments.refund, args: {{ticket: "${{{{ inputs.ticket_id }}}}"}}}}
"""

_FAN_OUT = """\
name: fan-out
steps:
  - id: list
    uses: python
    with: {function: "tasks:list_tickets"}
  - id: fetch
    uses: http
    foreach: "${{ steps.list.output.ids }}"
    with: {url: "https://helpdesk.example/api/tickets/${{ item }}"}
  - id: summarize
    uses: llm
    with: {model: small, prompt: "Summarize ${{ steps.fetch.output }}"}
"""

_NIGHTLY = """\
name: nightly-report
inputs:
  day: {{type: string}}
steps:
  - id: fetch
    uses: http
    with: {{url: "https://reports.example/api/${{{{ inputs.day }}}}"}}
  - id: render
    uses: http
    with: {{method: POST, url: "https://reports.example/render", timeout: {timeout}}}
    retry: {{max_attempts: {attempts}}}
{notify}"""

_NOTIFY = """\
  - id: notify
    uses: tool
    with: {tool: chat.post, args: {channel: "#reports"}}
"""


_LEGACY_REFUND = """\
  - id: legacy_refund
    uses: http
    with: {method: POST, url: "https://payments-v1.example/refund"}
"""


def make_sources() -> dict[str, str]:
    """def_hash -> the stored YAML source of that version (every version of every fixed workflow). The oldest
    refund-request had a `legacy_refund` step, since removed."""
    hello = [_HELLO.format(greeting=g) for g in ("Hello", "Hi")]
    refund = [_REFUND.format(limit=500) + _LEGACY_REFUND, *(_REFUND.format(limit=n) for n in (100, 200))]
    nightly = [_NIGHTLY.format(timeout=t, attempts=a, notify=n)
               for t, a, n in (("10s", 1, ""), ("30s", 2, ""), ("30s", 3, _NOTIFY), ("60s", 3, _NOTIFY))]
    out: dict[str, str] = {}
    for name, sources in (("hello", hello), ("refund-request", refund), ("fan-out", [_FAN_OUT]),
                          ("nightly-report", nightly)):
        hashes = [HASH[name], *OLDER_HASHES[name]]  # newest first; the sources are oldest first
        out.update(zip(hashes, reversed(sources), strict=True))
    return out


def make_versions() -> dict[str, list[WorkflowVersion]]:
    """Every version of every named workflow, newest first, with the runs pinned to it."""
    first_loaded = {"hello": ago(days=3), "refund-request": ago(hours=20), "fan-out": ago(days=1),
                    "nightly-report": ago(days=1, hours=2)}
    runs_by_hash: dict[str, int] = {}
    for r in make_runs():
        runs_by_hash[r.def_hash] = runs_by_hash.get(r.def_hash, 0) + 1
    out: dict[str, list[WorkflowVersion]] = {}
    for name, older in OLDER_HASHES.items():
        versions = [WorkflowVersion(HASH[name], name, first_loaded[name], f"workflows/{name}.yaml", True,
                                    runs_by_hash.get(HASH[name], 0))]
        for i, h in enumerate(older):
            versions.append(WorkflowVersion(h, name, first_loaded[name] - timedelta(days=2 * (i + 1), hours=i),
                                            f"workflows/{name}.yaml", False, 17 * (i + 1) % 23))
        out[name] = versions
    return out


def make_workflow_events() -> list[WorkflowEvent]:
    """The hot-reload history, newest first."""
    rows = [
        (ago(minutes=1), "invalid", "workflows/scratch.yaml", None, None,
         "workflows/scratch.yaml:3:9: mapping values are not allowed here"),
        (ago(minutes=3), "invalid", "workflows/nightly-report.yaml", "nightly-report", None,
         "workflows/nightly-report.yaml:12:5: unknown key 'retyr' in step 'render' (did you mean 'retry'?)"),
        (ago(hours=20), "loaded", "workflows/refund-request.yaml", "refund-request", HASH["refund-request"], None),
        (ago(days=1), "loaded", "workflows/fan-out.yaml", "fan-out", HASH["fan-out"], None),
        (ago(days=1, hours=2), "loaded", "workflows/nightly-report.yaml", "nightly-report", HASH["nightly-report"],
         None),
        (ago(days=2), "deleted", "workflows/old-digest.yaml", "old-digest", None, None),
        (ago(days=2, hours=20), "loaded", "workflows/refund-request.yaml", "refund-request",
         OLDER_HASHES["refund-request"][0], None),
        (ago(days=3), "loaded", "workflows/hello.yaml", "hello", HASH["hello"], None),
        (ago(days=3, hours=2), "loaded", "workflows/nightly-report.yaml", "nightly-report",
         OLDER_HASHES["nightly-report"][0], None),
    ]
    return [WorkflowEvent(len(rows) - i, at, kind, path, name, h, err)
            for i, (at, kind, path, name, h, err) in enumerate(rows)]


def make_workers() -> list[WorkerInfo]:
    return [
        WorkerInfo("web-1-4711-a1b2c3", "web-1", 4711, ago(hours=6), ago(seconds=2), True, (rid(1), rid(3)), 200),
        WorkerInfo("web-2-5120-d4e5f6", "web-2", 5120, ago(days=1), ago(minutes=3), False, (), 200),
    ]


def make_events() -> list[LiveEvent]:
    return [
        LiveEvent("run", "run.created", rid(6), {"seq": 1, "step": None, "status": "pending", "ts": 0},
                  "1710417600000-0"),
        LiveEvent("step", "step.started", rid(3), {"seq": 14, "step": "summarize", "item": None, "attempt": 1,
                                                   "status": "running", "ts": 0}, "1710417600001-0"),
        LiveEvent("workflow", "workflow.invalid", None, {"path": "workflows/nightly-report.yaml"},
                  "1710417600002-0"),
        LiveEvent("worker", "worker.started", None, {"worker": "web-1-4711-a1b2c3"}, "1710417600003-0"),
    ]


class FakeRuntimeClient(FakeOnCall, FakeLimits, FakeLive, FakeSearch):
    """Answers like RuntimeClient from in-memory data; records commands."""

    def __init__(self, *, events: list[LiveEvent] | None = None) -> None:
        FakeOnCall.__init__(self)
        self.clock = FIXED_NOW
        FakeLimits.__init__(self)
        self.runs = make_runs()
        self.tasks = make_tasks()
        self.workflows = make_workflows()
        self.versions = make_versions()
        self.sources = make_sources()
        self.workflow_history = make_workflow_events()
        """The hot-reload history, newest first (a test may insert at 0, then push a workflow event)."""
        self.workers = make_workers()
        self.events = make_events() if events is None else events
        self.commands: list[tuple[Any, ...]] = []
        self.conflicts: dict[str, str] = {}
        self.offline = False
        self.calls = 0
        self.closed = False
        self._live: asyncio.Queue[LiveEvent] | None = None
        self.denied: set[str] = set()
        """Actions the policy forbids ("replay", "cancel", ...): they raise PermissionDenied."""
        self.redis_down = False
        self.span_counts: dict[str, int] = {}
        """run id -> how many synthetic spans `spans()` returns instead of the fixed ones."""
        self.replays: list[RunId] = []
        self.searches: list[str] = []
        self.orders: list[str] = []
        self.filters: list[RunFilter] = []
        """What each list_runs was asked for (its arguments merged, like RuntimeClient)."""
        self.unlisted = unlisted_runs()
        """Runs `get_run` finds that `list_runs` does not show."""
        self.details: dict[str, RunDetail] = {rid(20): agent_detail(self.unlisted[0]),
                                              rid(EVENT_RUN): event_wait_detail(self.runs[-1])}
        """Fixed details by run id (a test may replace one, then push a live event for it)."""
        self.waits = make_waits()
        self.schedules = make_schedules()
        self.subscribers: dict[str, list[str]] = {"ticket.created": ["fan-out"]}
        """Event name -> the workflows `on: {event}` starts a run of."""
        FakeLive.__init__(self, rid)
        FakeSearch.__init__(self)
        self.replica: ReadReplica | None = None
        """What `read_replica` answers (None: no read URL, as by default)."""

    # -- knobs for tests ---------------------------------------------------------------------
    def raise_conflict_for(self, task_id: str, by: str = "alice@10.0.0.7") -> None:
        self.conflicts[task_id] = by

    def _check(self) -> None:
        self.calls += 1
        if self.offline:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    def _deny(self, action: str, run_id: str) -> None:
        if action in self.denied:
            raise PermissionDenied(f"tester may not {action} runs of {self._find_run(run_id).workflow} "
                                   "(policy file)")

    def _find_run(self, run_id: str) -> RunSummary:
        matches = [r for r in [*self.runs, *self.unlisted] if r.run_id.startswith(run_id)]
        if len(matches) != 1:
            raise NotFound(f"no run {run_id!r}")
        return matches[0]

    # -- RuntimeClient surface ---------------------------------------------------------------
    async def close(self) -> None:
        self.closed = True

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, search: str | None = None, order: str = "newest",
                        filters: RunFilter | None = None) -> list[RunSummary]:
        self._check()
        f = (filters or RunFilter()).merged(RunFilter(workflow=workflow, status=status, search=search))
        if f.search is not None:
            self.searches.append(f.search)
        self.filters.append(f)
        runs = matching(self.runs, f, self.tasks, self.clock)  # fake_search.py
        self.orders.append(order)
        newest = sorted(runs, key=lambda r: r.created_at, reverse=True)
        if order == "oldest":
            return newest[::-1][:limit]
        if order == "longest":  # like the SQL: unfinished runs last until now (the fixed clock here)
            return sorted(newest, key=lambda r: r.created_at - (r.finished_at or fixed_now()))[:limit]
        if order == "workflow":
            return sorted(newest, key=lambda r: r.workflow)[:limit]
        return newest[:limit]

    async def count_runs(self) -> RunCounts:
        self._check()
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        return RunCounts(counts)  # a few runs: every count exact, like the runtime's under COUNT_EXACT_UPTO

    async def get_run(self, run_id: str) -> RunDetail:
        self._check()
        summary = self._find_run(run_id)
        if summary.run_id in self.details:
            return self.details[summary.run_id]
        return fan_out_detail(summary) if summary.run_id == rid(3) else simple_detail(summary)

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunSummary:
        self._check()
        self.commands.append(("cancel", run_id, reason))
        self._deny("cancel", run_id)
        summary = self._find_run(run_id)
        if summary.status.terminal:
            raise Conflict(f"run {run_id} is already {summary.status.value}")
        updated = replace(summary, status=RunStatus.CANCELLED, finished_at=FIXED_NOW)
        self.runs = [updated if r.run_id == summary.run_id else r for r in self.runs]
        return updated

    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None) -> RunId:
        self._check()
        self.commands.append(("start", workflow, inputs))
        return rid(100 + len(self.commands))

    async def replay(self, run_id: str, *, from_step: str | None = None, inputs: dict[str, Any] | None = None,
                     latest: bool = False, dry_run: bool = False) -> tuple[ReplayPlan, RunId | None]:
        self._check()
        self.commands.append(("replay", run_id, from_step, inputs, dry_run) + (("latest",) if latest else ()))
        return await self._replay(run_id, from_step=from_step, inputs=inputs, latest=latest, dry_run=dry_run)

    async def start_replay(self, run_id: str, *, latest: bool) -> tuple[ReplayPlan, RunId | None]:
        return await self._replay(run_id, latest=latest)

    async def _replay(self, run_id: str, *, from_step: str | None = None, inputs: dict[str, Any] | None = None,
                      latest: bool = False, dry_run: bool = False) -> tuple[ReplayPlan, RunId | None]:
        summary = self._find_run(run_id)
        self._deny("replay", run_id)
        def_hash = await self.check_latest(summary, from_step) if latest else summary.def_hash
        detail = await self.get_run(run_id)
        order = list(dict.fromkeys(v.step_id for v in detail.steps))
        if from_step is not None and from_step not in order:
            raise WorkerError(f"{summary.workflow}: no step {from_step!r}")
        start = order.index(from_step) if from_step else 0
        if inputs is not None and "ticket_id" in inputs and not isinstance(inputs["ticket_id"], str):
            raise WorkerError(f"{summary.workflow}: input 'ticket_id' must be a string")
        calls = []
        for sid in order[start:]:
            views = [v for v in detail.steps if v.step_id == sid]
            kind = views[0].kind
            if kind in ("http", "llm", "tool", "python"):
                items = [v for v in views if v.item is not None]
                detail_text = {"http": "GET https://helpdesk.example/api/tickets/{id}", "llm": "openai small",
                               "tool": "payments.refund", "python": "tasks:run"}[kind]
                calls.append(ExternalCall(sid, kind, detail_text, len(items) or None))
        notes = ["new idempotency keys: every external call above is a new effect"]
        if summary.status is RunStatus.RUNNING:
            notes.append("the source run is still running; its outputs so far are reused")
        if def_hash != summary.def_hash:
            notes.append(f"runs under the current version {def_hash[:12]} (the run had {summary.def_hash[:12]})")
        plan = ReplayPlan(summary.run_id, summary.workflow, def_hash, from_step, order[:start],
                          order[start:], calls, dict(inputs if inputs is not None else detail.inputs), latest,
                          notes=notes)
        if dry_run:
            return plan, None
        new = rid(200 + len(self.replays))
        self.replays.append(new)
        wf_pause = self.workflow_pauses.get(summary.workflow)  # created, and waits while its workflow is paused
        self.runs.append(replace(summary, run_id=new, def_hash=def_hash, status=RunStatus.PENDING,
                                 created_at=FIXED_NOW, updated_at=FIXED_NOW, finished_at=None, error=None,
                                 current_step=None, waiting_on=None, parent_run_id=None, wake_at=None,
                                 paused=wf_pause.info() if wf_pause else None))
        return plan, new

    async def spans(self, run_id: str) -> list[SpanView]:
        self._check()
        summary = self._find_run(run_id)
        if summary.run_id in self.span_counts:
            return many_spans(summary, self.span_counts[summary.run_id])
        return fan_out_spans(summary) if summary.run_id == rid(3) else []

    async def step_logs(self, run_id: str, *, step_id: str | None = None, after_id: int = 0,
                        limit: int = 2000) -> list[StepLogLine]:
        self._check()
        summary = self._find_run(run_id)
        lines = fan_out_logs(summary) if summary.run_id == rid(3) else []
        return [x for x in lines if (step_id is None or x.step_id == step_id) and x.id > after_id][:limit]

    async def read_replica(self) -> ReadReplica | None:
        return self.replica

    async def health(self) -> dict[str, str | None]:
        return {"postgres": "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)"
                if self.offline else None,
                "redis": "ConnectionError: Error 111 connecting to 127.0.0.1:6379" if self.redis_down else None}

    async def list_tasks(self, *, status: str | None = "pending") -> list[HumanTask]:
        self._check()
        return [t for t in self.tasks if status is None or t.status == status]

    async def get_task(self, task_id: str) -> HumanTask:
        self._check()
        for t in self.tasks:
            if t.task_id == task_id:
                return t
        raise NotFound(f"no task {task_id!r}")

    def _settle(self, task_id: str, kind: str, status: TaskStatus, reason: str | None) -> HumanTask:
        task = next((t for t in self.tasks if t.task_id == task_id), None)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        if task.kind != kind:
            raise WorkerError(f"task {task_id} is an {task.kind} task, not {kind}")
        if task_id in self.conflicts:
            raise Conflict(f"task {task_id} was already approved by {self.conflicts[task_id]} "
                           f"at 2025-03-14 11:59:58 UTC")
        if task.status != TaskStatus.PENDING:  # first decision wins, as in RuntimeClient
            raise Conflict(f"task {task_id} was already {task.status.value} by {task.decided_by}")
        settled = replace(task, status=status, decided_by="tester", decided_at=FIXED_NOW, reason=reason)
        self.tasks = [settled if t.task_id == task_id else t for t in self.tasks]
        return settled

    async def decide(self, task_id: str, *, approve: bool, reason: str | None = None) -> HumanTask:
        self._check()
        self.commands.append(("decide", task_id, approve, reason))
        if not approve and not (reason and reason.strip()):
            raise WorkerError("a rejection needs a reason")
        return self._settle(task_id, "approval", TaskStatus.APPROVED if approve else TaskStatus.REJECTED, reason)

    async def resolve(self, task_id: str, *, action: str, output: Any = None,
                      reason: str | None = None) -> HumanTask:
        self._check()
        self.commands.append(("resolve", task_id, action, output, reason))
        if action not in ("retry", "done", "fail"):
            raise WorkerError("action must be retry, done or fail")
        return self._settle(task_id, "uncertain", TaskStatus.RESOLVED, reason)

    async def list_workflows(self) -> list[WorkflowInfo]:
        self._check()
        return list(self.workflows)

    async def workflow_versions(self, name: str, *, limit: int = 50) -> list[WorkflowVersion]:
        self._check()
        if name not in self.versions:
            raise NotFound(f"no workflow named {name!r} (see `agentrt workflows`)")
        return self.versions[name][:limit]

    async def workflow_diff(self, name: str, old_hash: str | None = None, new_hash: str | None = None, *,
                            context: int = 3) -> str:
        self._check()
        self.commands.append(("diff", name, old_hash, new_hash))
        versions = self.versions.get(name, [])
        active = next((v.def_hash for v in versions if v.active), None)
        old, new = diff_pair(name, [v.def_hash for v in versions], active, old_hash, new_hash)
        return source_diff(self.sources[old], self.sources[new], f"{name}@{old[:12]}", f"{name}@{new[:12]}",
                           context=context)

    async def workflow_events(self, limit: int = 200) -> list[WorkflowEvent]:
        self._check()
        return self.workflow_history[:limit]

    async def list_workers(self) -> list[WorkerInfo]:
        self._check()
        return list(self.workers)

    # -- events and schedules ---------------------------------------------------------------------
    async def open_waits(self, *, name: str | None = None, key: str | None = None, run_id: str | None = None,
                         limit: int = 200) -> list[EventWait]:
        self._check()
        if run_id is not None:
            run_id = self._find_run(run_id).run_id
        return [w for w in self.waits if (name is None or w.name == name) and (key is None or w.key == key)
                and (run_id is None or w.run_id == run_id)][:limit]

    async def send_event(self, name: str, key: str | None = None, data: dict[str, Any] | None = None, *,
                         idempotency_key: str | None = None) -> EventDelivery:
        """Resumes the runs waiting for the name (and key; a wait without a key takes any), which then run."""
        self._check()
        self.commands.append(("send_event", name, key, data))
        if "send_event" in self.denied:
            raise PermissionDenied("tester may not send events (policy file)")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", name):
            raise WorkerError(f"event name {name!r}: 1-200 characters, letters, digits and _ . : - "
                              "(e.g. ticket.created)")
        taken = [w for w in self.waits if w.name == name and (w.key is None or w.key == key)]
        self.waits = [w for w in self.waits if w not in taken]
        resumed = {w.run_id for w in taken}
        self.runs = [replace(r, status=RunStatus.RUNNING, waiting_on=None, wake_at=None) if r.run_id in resumed
                     else r for r in self.runs]
        for run in self.runs:
            if run.run_id in resumed and run.run_id in self.details:
                self.details[run.run_id] = replace(self.details[run.run_id], summary=run)
        started = tuple(rid(300 + len(self.commands) * 10 + i) for i, _ in enumerate(self.subscribers.get(name, [])))
        return EventDelivery(str(uuid.uuid5(uuid.NAMESPACE_URL, f"event-{len(self.commands)}")), name, key, started,
                             (), tuple(w.run_id for w in taken))

    async def list_schedules(self) -> list[ScheduleInfo]:
        self._check()
        return list(self.schedules)

    def _set_paused(self, workflow: str, paused: bool, reason: str | None) -> ScheduleInfo:
        if "pause" in self.denied:
            raise PermissionDenied(f"tester may not cancel runs of {workflow} (policy file)")
        found = next((s for s in self.schedules if s.workflow == workflow), None)
        if found is None:
            raise NotFound(f"workflow {workflow!r} has no schedule (see `agentrt schedules`)")
        if found.paused == paused:
            raise Conflict(f"the schedule of {workflow} is already paused" if paused
                           else f"the schedule of {workflow} is not paused")
        changed = replace(found, paused=paused, paused_by="tester" if paused else None,
                          paused_reason=reason if paused else None, paused_at=FIXED_NOW if paused else None)
        self.schedules = [changed if s.workflow == workflow else s for s in self.schedules]
        return changed

    async def pause_schedule(self, workflow: str, reason: str, *, by: str | None = None) -> ScheduleInfo:
        self._check()
        self.commands.append(("pause_schedule", workflow, reason))
        if not reason or not reason.strip():
            raise WorkerError("pausing a schedule needs a reason (it is recorded in the audit trail)")
        return self._set_paused(workflow, True, reason)

    async def resume_schedule(self, workflow: str, reason: str | None = None, *,
                              by: str | None = None) -> ScheduleInfo:
        self._check()
        self.commands.append(("resume_schedule", workflow, reason))
        return self._set_paused(workflow, False, reason)

    def push_event(self, event: LiveEvent) -> None:
        """Deliver one more live event to a running `watch_events` (after the scripted ones)."""
        if self._live is None:
            self._live = asyncio.Queue()
        self._live.put_nowait(event)

    async def watch_events(self, last_id: str = "$") -> AsyncIterator[LiveEvent]:
        for event in self.events:
            yield event
        if self._live is None:
            self._live = asyncio.Queue()
        while True:  # then only what a test pushes, forever (cancelled when the app exits)
            yield await self._live.get()
