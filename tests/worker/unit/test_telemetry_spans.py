"""Span derivation from events (pure), trace context parsing, OTLP JSON, JSON log lines."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from worker import runlog as ev
from worker.runlog import Event
from worker.telemetry import logging as tlog
from worker.telemetry.export import otlp_json
from worker.telemetry.ids import attempt_span_id, parse_traceparent, run_span_id, step_span_id
from worker.telemetry.spans import RunTracer, SpanRecord

RUN = str(uuid.UUID(int=0x1234))


def _log(*events: tuple[str, float, dict[str, object]]) -> list[Event]:
    out = []
    for seq, (type_, ts, kw) in enumerate(events, start=1):
        data = dict(kw)
        step = data.pop("step", None)
        item = data.pop("item", None)
        attempt = data.pop("attempt", None)
        out.append(Event(type_, ts, step_id=step, item=item, attempt=attempt, data=data, seq=seq))  # type: ignore[arg-type]
    return out


def _names(spans: list[SpanRecord]) -> list[str]:
    return [s.name for s in spans]


def test_parse_traceparent() -> None:
    ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert ctx is not None and ctx.sampled and ctx.span_id == 0x00F067AA0BA902B7
    assert ctx.header() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        assert parse_traceparent(bad) is None


CRASHED_RUN = _log(
    (ev.RUN_CREATED, 100.0, {"workflow": "w"}),
    (ev.STEP_STARTED, 100.5, {"step": "a", "attempt": 1, "inputs": {"url": "x", "token": "SECRET"}, "key": "k"}),
    (ev.STEP_COMPLETED, 101.0, {"step": "a", "attempt": 1, "output": {"ok": True}}),
    (ev.STEP_STARTED, 101.0, {"step": "b", "attempt": 1, "inputs": {}}),
    # the worker dies here; another one takes over
    (ev.RUN_RESUMED, 120.0, {"worker": "w2", "previous_owner": "w1", "orphans": 1}),
    (ev.STEP_FAILED, 120.0, {"step": "b", "attempt": 1, "error": "worker lost during attempt 1", "crashed": True,
                             "retryable": True, "retry_at": 120.0, "final": False}),
    (ev.STEP_STARTED, 120.2, {"step": "b", "attempt": 2, "inputs": {}}),
    (ev.STEP_COMPLETED, 121.0, {"step": "b", "attempt": 2, "output": 1}),
    (ev.RUN_COMPLETED, 121.0, {"output": 1}),
)


def test_spans_of_a_crashed_and_resumed_run() -> None:
    spans = RunTracer(RUN, kinds={"a": "http", "b": "python"}).feed_all(CRASHED_RUN)
    by = {s.name: s for s in spans}
    assert set(by) == {"queued", "a attempt 1", "step a", "b attempt 1", "b attempt 2", "step b", "run w"}
    trace = uuid.UUID(RUN).int
    assert {s.trace_id for s in spans} == {trace}
    run = by["run w"]
    assert run.span_id == run_span_id(RUN) and run.parent_id is None
    assert (run.start, run.end, run.status) == (100.0, 121.0, "ok")
    assert run.attributes["agentrt.run.resumes"] == 1 and run.events[0][0] == "run.resumed"
    queued = {s.attributes["agentrt.queue.reason"]: s for s in spans if s.name == "queued"}
    assert queued["run"].parent_id == run.span_id and (queued["run"].start, queued["run"].end) == (100.0, 100.5)
    assert queued["retry"].parent_id == step_span_id(RUN, "b", None)
    crashed = by["b attempt 1"]
    assert crashed.span_id == attempt_span_id(RUN, "b", None, 1)
    assert crashed.attributes["agentrt.attempt.crashed"] is True and crashed.status == "error"
    assert (crashed.start, crashed.end) == (101.0, 120.0)
    assert by["b attempt 2"].attributes["agentrt.queue.delay_ms"] == 200.0  # retry_at 120.0 -> started 120.2
    assert by["step b"].span_id == step_span_id(RUN, "b", None) and by["step b"].start == 101.0
    a = by["a attempt 1"]
    assert a.attributes["agentrt.step.kind"] == "http"
    assert a.attributes["agentrt.step.input.keys"] == ["token", "url"]
    assert "SECRET" not in json.dumps([s.to_row() for s in spans])


def test_a_resumed_worker_emits_exactly_the_rest_with_the_same_ids() -> None:
    whole = RunTracer(RUN).feed_all(CRASHED_RUN)
    first = RunTracer(RUN).feed_all(CRASHED_RUN[:4])  # what the dead worker emitted
    resumed = RunTracer(RUN)
    resumed.feed_all(CRASHED_RUN[:4])  # bootstrap from Postgres (not exported again)
    rest = resumed.feed_all(CRASHED_RUN[4:])
    key = [(s.span_id, s.parent_id, s.start, s.end) for s in whole]
    assert [(s.span_id, s.parent_id, s.start, s.end) for s in first + rest] == key


def test_caller_trace_and_foreach_and_approval() -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    events = _log(
        (ev.RUN_CREATED, 1.0, {"workflow": "f"}),
        (ev.STEP_EXPANDED, 1.0, {"step": "each", "count": 2}),
        (ev.STEP_STARTED, 1.0, {"step": "each", "item": 0, "attempt": 1}),
        (ev.STEP_STARTED, 1.0, {"step": "each", "item": 1, "attempt": 1}),
        (ev.STEP_COMPLETED, 2.0, {"step": "each", "item": 0, "attempt": 1, "output": 0}),
        (ev.STEP_COMPLETED, 2.5, {"step": "each", "item": 1, "attempt": 1, "output": 1}),
        (ev.STEP_COMPLETED, 2.5, {"step": "each", "output": [0, 1]}),
        (ev.STEP_WAITING, 3.0, {"step": "ok", "attempt": 1, "reason": "approval", "task_id": "t1", "prompt": "?"}),
        (ev.TASK_DECIDED, 9.0, {"step": "ok", "attempt": 1, "task_id": "t1", "status": "rejected", "by": "ann"}),
        (ev.STEP_FAILED, 9.0, {"step": "ok", "attempt": 1, "error": "rejected by ann", "final": True}),
        (ev.RUN_FAILED, 9.0, {"error": "step ok failed"}),
    )
    tracer = RunTracer(RUN, traceparent=caller)
    spans = tracer.feed_all(events)
    by = {s.name: s for s in spans}
    assert {s.trace_id for s in spans} == {0x4BF92F3577B34DA6A3CE929D0E0E4736}
    assert by["run f"].parent_id == 0x00F067AA0BA902B7 and by["run f"].remote_parent
    assert by["step each[0]"].parent_id == by["step each"].span_id
    assert by["step each"].parent_id == by["run f"].span_id
    wait = by["approval wait"]
    assert wait.parent_id == by["ok attempt 1"].span_id and (wait.start, wait.end) == (3.0, 9.0)
    assert wait.attributes["agentrt.wait.outcome"] == "rejected"
    assert by["run f"].status == "error" and by["step ok"].status == "error"
    assert tracer.context_of("x", None, 2).header().startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")


def test_open_spans_for_a_live_export() -> None:
    tracer = RunTracer(RUN)
    tracer.feed_all(CRASHED_RUN[:4])
    open_ = tracer.open_spans(50.0)
    assert {s.name for s in open_} == {"b attempt 1", "step b", "run w"}
    assert all(s.attributes["agentrt.in_progress"] for s in open_)


def test_otlp_json_uses_hex_ids() -> None:
    spans = RunTracer(RUN).feed_all(CRASHED_RUN)
    body = otlp_json(spans)
    got = [s for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(got) == len(spans)
    run = next(s for s in got if s["name"] == "run w")
    assert run["traceId"] == uuid.UUID(RUN).hex and run["spanId"] == f"{run_span_id(RUN):016x}"
    assert "parentSpanId" not in run
    assert run["startTimeUnixNano"] == str(100 * 10**9)


def test_json_log_lines_carry_step_context_and_redact_registered_secrets() -> None:
    formatter = tlog.JsonFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("hunter22",), None)
    token = tlog.current_step.set(tlog.StepLogContext(RUN, "s", 3, 2, "ab" * 16, "cd" * 8))
    try:
        tlog.register_step_secrets(["hunter22"])
        line = json.loads(formatter.format(record))
    finally:
        tlog.current_step.reset(token)
    assert line["msg"] == "token is ***"
    assert (line["run_id"], line["step_id"], line["item"], line["attempt"]) == (RUN, "s", 3, 2)
    assert (line["trace_id"], line["span_id"]) == ("ab" * 16, "cd" * 8)
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "run level", (), None)
    plain.run_id = RUN
    assert json.loads(formatter.format(plain))["trace_id"] == uuid.UUID(RUN).hex


def test_step_log_capture_is_bounded_per_attempt() -> None:
    capture = tlog.StepLogCapture()
    token = tlog.current_step.set(tlog.StepLogContext(RUN, "s", None, 1, "ab" * 16, "cd" * 8))
    try:
        for i in range(tlog.STEP_LINES_MAX + 5):
            capture.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "line %d", (i,), None))
    finally:
        tlog.current_step.reset(token)
    capture.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "outside a step", (), None))
    assert len(capture.buffer) == tlog.STEP_LINES_MAX and capture.dropped == 5


def test_export_is_configured_only_by_otel_variables(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from worker.telemetry.export import build_resource, endpoint_configured, protocol
    from worker.telemetry.setup import TelemetryConfig

    for k in [k for k in os.environ if k.startswith(("OTEL_", "AGENTRT_"))]:
        monkeypatch.delenv(k)
    assert not endpoint_configured() and protocol() == "http/protobuf"
    assert build_resource().attributes["service.name"] == "agentrt-worker"
    assert TelemetryConfig.from_env().enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    assert endpoint_configured("TRACES") and not endpoint_configured("METRICS")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not endpoint_configured("TRACES")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert protocol("TRACES") == "grpc"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-workers")
    assert build_resource().attributes["service.name"] == "billing-workers"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not TelemetryConfig.from_env().enabled


@pytest.mark.parametrize("item", [None, 0, 7])
def test_step_and_attempt_ids_are_the_generic_hash_of_their_parts(item: int | None) -> None:
    """The fast paths hash the same text as span_id_for: ids stay stable across versions of the worker
    (a run resumed by an upgraded worker continues the same spans)."""
    from worker.telemetry.ids import span_id_for

    assert step_span_id(RUN, "fetch", item) == span_id_for("step", RUN, "fetch", item)
    assert attempt_span_id(RUN, "fetch", item, 3) == span_id_for("attempt", RUN, "fetch", item, 3)


def test_a_ready_step_gets_a_queued_span_only_when_it_waited_noticeably() -> None:
    """The commit between two steps (a millisecond or two) is an attribute; a worker too busy to start a ready
    step for 80 ms shows as a `queued` span."""
    log = _log(
        (ev.RUN_CREATED, 100.0, {"workflow": "w"}),
        (ev.STEP_STARTED, 100.0, {"step": "a", "attempt": 1}),
        (ev.STEP_COMPLETED, 100.010, {"step": "a", "attempt": 1, "output": 1}),
        (ev.STEP_STARTED, 100.012, {"step": "b", "attempt": 1}),  # 2 ms after a completed
        (ev.STEP_COMPLETED, 100.020, {"step": "b", "attempt": 1, "output": 1}),
        (ev.STEP_STARTED, 100.100, {"step": "c", "attempt": 1}),  # 80 ms after b completed
        (ev.STEP_COMPLETED, 100.110, {"step": "c", "attempt": 1, "output": 1}),
        (ev.RUN_COMPLETED, 100.110, {"output": 1}),
    )
    spans = RunTracer(RUN).feed_all(log)
    queued = [s for s in spans if s.name == "queued"]
    assert [(s.parent_id, s.attributes["agentrt.queue.reason"]) for s in queued] == [
        (step_span_id(RUN, "c", None), "ready")]
    b = next(s for s in spans if s.name == "b attempt 1")
    assert b.attributes["agentrt.queue.delay_ms"] == 2.0
