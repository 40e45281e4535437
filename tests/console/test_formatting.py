"""Unit tests for the console's pure helpers: formatting, filtering, waterfall layout, feed mapping."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from console.feed import messages_for
from console.filtering import STATUS_CYCLE, TextFilter, cancellable, filter_runs, next_status
from console.formatting import (
    DASH,
    compact_json,
    deadline_style,
    describe_error,
    format_age,
    format_clock,
    format_countdown,
    format_duration,
    format_json,
    format_timestamp,
    is_connection_error,
    redact_url,
    run_elapsed,
    short_id,
    status_class,
    status_label,
    status_style,
    truncate,
)
from console.messages import RunChanged, TasksChanged, WorkersChanged, WorkflowsChanged
from console.widgets.waterfall import Span, axis_line, layout_waterfall
from console.workflow_text import truncate_left, workflow_location, workflow_summary
from tests.console.fakes import FIXED_NOW, ago, make_runs, make_workflows, rid
from worker.errors import Conflict, NotFound, StoreError
from worker.models import LiveEvent, RunStatus


@pytest.mark.parametrize(("seconds", "text"), [
    (None, DASH), (-3, "0ms"), (0.35, "350ms"), (4.25, "4.2s"), (42, "42s"), (245, "4m05s"),
    (3600 * 3 + 120, "3h02m"), (86400 * 2 + 3600 * 4, "2d04h"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_age_and_countdown() -> None:
    assert format_age(None, FIXED_NOW) == DASH
    assert format_age(FIXED_NOW, FIXED_NOW) == "now"
    assert format_age(ago(seconds=12), FIXED_NOW) == "12s ago"
    assert format_age(ago(minutes=4, seconds=50), FIXED_NOW) == "4m ago"
    assert format_age(ago(hours=3), FIXED_NOW) == "3h ago"
    assert format_age(ago(days=2), FIXED_NOW) == "2d ago"
    assert format_age(FIXED_NOW + timedelta(minutes=5), FIXED_NOW) == "in 5m"
    assert format_countdown(None, FIXED_NOW) == DASH
    assert format_countdown(FIXED_NOW + timedelta(hours=3, minutes=59), FIXED_NOW) == "in 3h59m"
    assert format_countdown(FIXED_NOW + timedelta(seconds=42), FIXED_NOW) == "in 42s"
    assert format_countdown(ago(minutes=2), FIXED_NOW) == "overdue 2m"
    assert deadline_style(ago(minutes=2), FIXED_NOW) == "bold red"
    assert deadline_style(FIXED_NOW + timedelta(minutes=5), FIXED_NOW) == "yellow"
    assert deadline_style(FIXED_NOW + timedelta(hours=5), FIXED_NOW) == ""
    assert deadline_style(None, FIXED_NOW) == "dim"


def test_clock_and_timestamps_are_utc() -> None:
    assert format_clock(FIXED_NOW) == "12:00:00"
    assert format_timestamp(FIXED_NOW) == "2025-03-14 12:00:00Z"
    assert format_clock(None) == DASH
    assert run_elapsed(ago(seconds=30), None, FIXED_NOW) == 30
    assert run_elapsed(ago(seconds=30), ago(seconds=10), FIXED_NOW) == 20


def test_status_label_style_and_class() -> None:
    assert status_label(RunStatus.COMPLETED) == "✓ completed"
    assert status_label(RunStatus.WAITING, waiting_on="human") == "⏸ human"
    assert status_label(RunStatus.WAITING, waiting_on="timer") == "◷ waiting"
    assert status_label("something-new") == "? something-new"
    assert status_style(RunStatus.FAILED) == "bold red"
    assert status_style("unknown") == ""
    assert status_class("timed_out") == "-timed-out"
    assert status_class("running") == "-running"


def test_truncate_and_ids() -> None:
    assert truncate("hello world", 20) == "hello world"
    assert truncate("hello world", 6) == "hello…"
    assert truncate("a\nb   c", 10) == "a b c"
    assert truncate(None, 5) == ""
    assert truncate("abc", 0) == ""
    assert short_id("0123456789") == "01234567"
    assert short_id(None) == DASH


def test_json_helpers() -> None:
    assert format_json(None) == "null"
    assert format_json({"a": 1}) == '{\n  "a": 1\n}'
    assert format_json({"when": FIXED_NOW}).startswith('{\n  "when": "2025-03-14')
    long = format_json({"x": "y" * 100}, max_chars=20)
    assert long.startswith('{\n  "x": "yyyy') and "more characters" in long
    assert compact_json({"a": [1, 2]}, 40) == '{"a":[1,2]}'
    assert compact_json({}, 40) == ""
    assert compact_json({"a": "b" * 50}, 10).endswith("…")


def test_workflow_location() -> None:
    broken = next(w for w in make_workflows() if w.name == "nightly-report")
    assert workflow_location(broken) == "workflows/nightly-report.yaml:12:5"
    ok = next(w for w in make_workflows() if w.name == "hello")
    assert workflow_location(ok) == "workflows/hello.yaml"
    assert workflow_summary(broken, 200) == ("nightly-report.yaml:12:5: unknown key 'retyr' in step 'render' "
                                             "(did you mean 'retry'?)")
    assert workflow_summary(ok, 12) == "…/hello.yaml"
    assert truncate_left("/srv/agentrt/workflows/fan-out.yaml", 16) == "…ws/fan-out.yaml"
    assert truncate_left("abc", 0) == ""


def test_connection_errors_are_told_from_bugs() -> None:
    assert is_connection_error(ConnectionRefusedError(111, "refused"))
    assert is_connection_error(TimeoutError())
    assert is_connection_error(StoreError("pool closed"))
    assert not is_connection_error(Conflict("already approved"))
    assert not is_connection_error(NotFound("no run"))
    assert not is_connection_error(ValueError("bug"))

    # asyncpg's errors are recognised by their class names, without importing asyncpg
    fake = type("ConnectionDoesNotExistError", (Exception,), {"__module__": "asyncpg.exceptions"})
    query = type("UndefinedColumnError", (Exception,), {"__module__": "asyncpg.exceptions"})
    assert is_connection_error(fake("connection was closed in the middle of operation"))
    assert not is_connection_error(query("column does not exist"))
    assert describe_error(ConnectionRefusedError("nope")) == "ConnectionRefusedError: nope"
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_redact_url() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/agentrt") == "postgresql://app:***@db:5432/agentrt"
    assert redact_url("postgresql://postgres@127.0.0.1:5432/agentrt") == "postgresql://postgres@127.0.0.1:5432/agentrt"
    assert "s3cret" not in redact_url("redis://:s3cret@cache:6379/0")


# -- filtering -----------------------------------------------------------------------------------
def test_text_filter() -> None:
    runs = make_runs()
    assert TextFilter.parse("").accepts(runs[0]) and not TextFilter.parse("").active
    by_name = filter_runs(runs, TextFilter.parse("FAN-out"))
    assert {r.workflow for r in by_name} == {"fan-out"} and len(by_name) == 3
    regex = TextFilter.parse("^(hello|nightly)")
    assert regex.is_regex and {r.workflow for r in filter_runs(runs, regex)} == {"hello", "nightly-report"}
    literal = TextFilter.parse("fan-out(")
    assert not literal.is_regex and filter_runs(runs, literal) == []
    assert [r.run_id for r in filter_runs(runs, TextFilter.parse(rid(5)[:8]))] == [rid(5)]
    assert {r.status for r in filter_runs(runs, TextFilter.parse("failed"))} == {RunStatus.FAILED}
    assert len(filter_runs(runs, TextFilter.parse("human"))) == 3  # waiting_on is searched too


def test_status_cycle_and_cancellable() -> None:
    assert next_status(None) is RunStatus.RUNNING
    assert next_status(STATUS_CYCLE[-1]) is None
    assert next_status(None, -1) is RunStatus.CANCELLED
    runs = make_runs()
    assert {r.status for r in cancellable(runs)} == {RunStatus.QUEUED, RunStatus.PENDING, RunStatus.RUNNING,
                                                      RunStatus.WAITING, RunStatus.PAUSED}


# -- waterfall -----------------------------------------------------------------------------------
def test_waterfall_layout() -> None:
    t0 = ago(seconds=10)
    spans = [
        Span("a #1", t0, t0 + timedelta(seconds=5), "completed"),
        Span("b #1", t0 + timedelta(seconds=5), None, "running"),  # still going: drawn up to now
        Span("c", None, None, "pending"),
    ]
    rows, total = layout_waterfall(spans, 20, FIXED_NOW)
    assert total == pytest.approx(10)
    assert (rows[0].offset, rows[0].length) == (0, 10)
    assert (rows[1].offset, rows[1].length) == (10, 10)
    assert rows[1].seconds == pytest.approx(5)
    assert (rows[2].length, rows[2].seconds) == (0, None)
    tiny = layout_waterfall([Span("x", t0, t0, "completed")], 20, FIXED_NOW)[0][0]
    assert tiny.length == 1  # an instant still shows
    assert layout_waterfall([], 20, FIXED_NOW) == ([], 0.0)
    line = axis_line(10, 30)
    assert len(line) == 30 and line.startswith("0s") and line.endswith("10s") and "5.0s" in line


# -- feed ------------------------------------------------------------------------------------------
def test_feed_maps_events_to_messages() -> None:
    def kinds(event: LiveEvent) -> list[type]:
        return [type(m) for m in messages_for(event)]

    run = rid(1)
    assert kinds(LiveEvent("step", "step.completed", run, {"status": "running"})) == [RunChanged]
    assert kinds(LiveEvent("step", "step.waiting", run, {"status": "waiting"})) == [RunChanged, TasksChanged]
    assert kinds(LiveEvent("run", "run.cancelled", run, {"status": "cancelled"})) == [RunChanged, TasksChanged]
    assert kinds(LiveEvent("workflow", "workflow.invalid", None, {})) == [WorkflowsChanged]
    assert kinds(LiveEvent("worker", "worker.started", None, {})) == [WorkersChanged]
    assert kinds(LiveEvent("task", "task.decided", run, None)) == [TasksChanged]
    message = messages_for(LiveEvent("step", "step.started", run, {"status": "running"}))[0]
    assert isinstance(message, RunChanged) and message.status == "running" and message.run_id == run


def test_messages_collapse_floods() -> None:
    a1, a2, b = RunChanged(rid(1), "step.started"), RunChanged(rid(1), "step.completed"), RunChanged(rid(2), "x")
    assert a2.can_replace(a1) and not b.can_replace(a1)
    assert TasksChanged().can_replace(TasksChanged()) and not TasksChanged().can_replace(a1)
    assert not RunChanged.bubble and not TasksChanged.bubble  # the app forwards copies; none come back up


def test_fake_data_has_every_status() -> None:
    assert {r.status for r in make_runs()} == set(RunStatus)
    assert re.fullmatch(r"[0-9a-f-]{36}", rid(1))


def test_step_inspector_shows_tokens_and_cost_finished_and_so_far() -> None:
    from console.widgets.inspector import inspect_step
    from worker.models import StepStatus, StepView

    done = StepView("plan", "llm", None, StepStatus.COMPLETED, (), {}, {
        "text": "ok", "usage": {"input_tokens": 1200, "output_tokens": 34, "total_tokens": 1234},
        "cost_usd": 0.0123}, None, "agentrt:r:plan")
    assert "tokens    1,234 (in 1,200, out 34) · cost $0.0123\n" in inspect_step(done, [], FIXED_NOW).plain
    running = StepView("agent", "agent", None, StepStatus.RUNNING, (), {}, None, None, None, progress={
        "usage": {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}, "cost_usd": None, "turns": 2})
    shown = inspect_step(running, [], FIXED_NOW).plain
    assert f"tokens    110 (in 100, out 10) · cost {DASH} so far (2 turns)\n" in shown
    plain = StepView("fetch", "http", None, StepStatus.COMPLETED, (), {}, {"status": 200}, None, None)
    assert "tokens" not in inspect_step(plain, [], FIXED_NOW).plain
