"""Unit tests for the pure helpers behind triggers, waits, the runs rows, the send-event dialog and schedules."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from console.formatting import format_left, status_label, trigger_label, wait_kind, wait_text
from console.screens.run_rows import RunRows, activity
from console.screens.schedules import next_cell, paused_text, schedule_detail
from console.screens.send_event import delivery_text, parse_event_data, wait_line
from tests.console.fakes import EVENT_RUN, FIXED_NOW, make_runs, make_schedules, make_waits, rid
from worker.client.events import EventDelivery
from worker.models import RunStatus


def test_trigger_labels_long_and_short() -> None:
    assert [trigger_label(t) for t in (None, "api", "schedule", "event", "webhook", "parent")] == [
        "manual", "api", "schedule", "event", "webhook", "parent"]
    assert [trigger_label(t, short=True) for t in (None, "api", "schedule", "event", "webhook", "parent")] == [
        "manual", "api", "sched", "event", "hook", "parent"]
    assert trigger_label("carrier-pigeon") == "carrier-pigeon"
    assert trigger_label("carrier-pigeon", short=True) == "carri…"
    assert all(len(trigger_label(t, short=True)) <= 6 for t in (None, "api", "schedule", "event", "webhook", "parent"))


def test_status_label_names_what_a_waiting_run_waits_for() -> None:
    assert status_label(RunStatus.WAITING, waiting_on="event customer.replied key T-42") == "◷ event"
    assert status_label(RunStatus.WAITING, waiting_on="sleep") == "◷ sleep"
    assert status_label(RunStatus.WAITING, waiting_on="child") == "◷ child"
    assert status_label(RunStatus.WAITING, waiting_on="retry") == "↻ retrying"
    assert status_label(RunStatus.WAITING, waiting_on="human") == "⏸ human"
    assert status_label(RunStatus.WAITING) == "◷ waiting"
    assert status_label(RunStatus.RUNNING, waiting_on="event x") == "▶ running"
    assert wait_kind("event customer.replied key T-42") == "event" and wait_kind(None) is None


def test_format_left_and_wait_text() -> None:
    assert format_left(FIXED_NOW + timedelta(days=2, hours=3, minutes=5), FIXED_NOW) == "2d3h left"
    assert format_left(FIXED_NOW + timedelta(hours=3, minutes=46), FIXED_NOW) == "3h46m left"
    assert format_left(FIXED_NOW + timedelta(minutes=12, seconds=30), FIXED_NOW) == "12m left"
    assert format_left(FIXED_NOW + timedelta(seconds=42), FIXED_NOW) == "42s left"
    assert format_left(FIXED_NOW - timedelta(minutes=2), FIXED_NOW) == "overdue 2m"
    assert format_left(None, FIXED_NOW) == "—"
    deadline = FIXED_NOW + timedelta(days=2, hours=3)
    assert wait_text("event customer.replied key T-42", deadline, FIXED_NOW) == \
        "event customer.replied key T-42 · 2d3h left"
    assert wait_text("human", deadline, FIXED_NOW, human=False) == "2d3h left"
    assert wait_text("sleep", None, FIXED_NOW) == "sleep"


def test_the_runs_rows_last_field() -> None:
    runs = {r.run_id: r for r in make_runs()}
    event = runs[rid(EVENT_RUN)]
    assert activity(event, FIXED_NOW, wide=False) == "customer.replied key T-42 · 2d3h left"
    assert activity(event, FIXED_NOW, wide=True) == "await_reply · event customer.replied key T-42 · 2d3h left"
    human = runs[rid(2)]
    assert activity(human, FIXED_NOW, wide=False) == "approve"
    assert activity(human, FIXED_NOW, wide=True) == "approve · 3h46m left"
    assert activity(runs[rid(5)], FIXED_NOW, wide=True).startswith("step render: HTTP 503")
    assert activity(runs[rid(1)], FIXED_NOW, wide=False) == "refund"


def test_run_rows_layout_and_cache() -> None:
    rows = RunRows()
    assert rows.relayout(80)
    header = rows.header(80).plain
    assert "TRIG." in header and "VERSION" not in header and not rows.relayout(100) and rows.relayout(110)
    assert rows.last_width(80) == 17
    run = make_runs()[-1]
    cells = rows.cells(run, False, FIXED_NOW, 17)
    assert rows.cells(run, False, FIXED_NOW, 17) is cells  # unchanged: the same cells, the table skips them
    assert cells[0].plain == "  ◷ event     bd33815f refund-request hook   50m ago 50m00s customer.replied…"
    assert rows.cells(run, True, FIXED_NOW, 17) is not cells  # marked
    wide = rows.header(160).plain
    assert "TRIGGER" in wide and "VERSION" in wide
    moved = replace(run, status=RunStatus.RUNNING, waiting_on=None, wake_at=None)
    assert "▶ running" in rows.cells(moved, False, FIXED_NOW, 66)[0].plain
    rows.keep(set())
    assert rows.cells(run, False, FIXED_NOW, 66) is not cells


def test_parse_event_data() -> None:
    assert parse_event_data("") == ({}, None)
    assert parse_event_data('{"text": "thanks"}') == ({"text": "thanks"}, None)
    value, error = parse_event_data('{"text": ')
    assert value is None and error is not None and error.startswith("Data is not valid JSON")
    assert parse_event_data("[1]")[1] == 'Data must be a JSON object, like {"text": "thanks"}.'
    assert parse_event_data("42")[0] is None


def test_wait_line_and_delivery_text() -> None:
    wait = make_waits()[0]
    assert wait_line(wait, FIXED_NOW) == ("step await_reply waits for customer.replied key T-42 · "
                                          "deadline 2025-03-16 15:00:00Z (2d3h left)")
    assert "any key" in wait_line(replace(wait, key=None, deadline=None), FIXED_NOW)
    run = make_runs()[-1]
    text, reached = delivery_text(EventDelivery("e1", "customer.replied", "T-42", (), (), (run.run_id,)), run)
    assert reached and text == "Resumed 1 waiting run, started 0 runs."
    refused = ({"workflow": "fan-out", "reason": "input 'ticket' is required"},)
    text, reached = delivery_text(EventDelivery("e2", "customer.replied", "T-9", (rid(40), rid(41)), refused, (),
                                                replayed=True), run)
    assert not reached
    assert text.splitlines() == ["Resumed 0 waiting runs, started 2 runs.",
                                 "Not started: fan-out: input 'ticket' is required",
                                 f"Run {run.run_id[:8]} was not resumed: it waits for another name or key.",
                                 "(The same event was sent before: nothing new happened.)"]


def test_schedule_cells_and_detail() -> None:
    nightly, fan_out = make_schedules()
    assert next_cell(nightly, FIXED_NOW, False).plain == "in 21h00m"
    assert next_cell(nightly, FIXED_NOW, True).plain == "03-15 09:00:00  in 21h00m"
    assert next_cell(fan_out, FIXED_NOW, False).plain == "⏸ paused"
    assert next_cell(replace(nightly, next_fire_at=None), FIXED_NOW, False).plain == "—"
    assert paused_text(fan_out) == "alice@10.0.0.7: helpdesk API maintenance until Monday"
    assert paused_text(nightly) == ""
    detail = schedule_detail(fan_out, FIXED_NOW).plain
    assert "catch_up none" in detail and "paused by  alice@10.0.0.7 since 2025-03-14 07:10:00Z" in detail
    assert "skipped    2 due ticks" in detail and detail.endswith("p resume (reason optional)")
    detail = schedule_detail(replace(nightly, last_error="input 'day' is required"), FIXED_NOW).plain
    assert "last error input 'day' is required" in detail and detail.endswith("p pause (reason required)")
