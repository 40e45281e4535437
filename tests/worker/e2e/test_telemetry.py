"""Telemetry end to end: a real worker, a real OTLP receiver (gRPC and HTTP), the span store, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http_sink import HttpSink
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.runtime import client_for, eventually, pending_task, running_worker, write_workflow
from tests.support.services import WorkerProcs
from worker.config import Settings
from worker.store.spans import load_spans, load_step_logs
from worker.telemetry.ids import attempt_span_id, run_span_id, step_span_id
from worker.telemetry.logging import JsonFormatter

REPO = Path(__file__).resolve().parents[3]
SECRET = "s3cr3t-Token-9f8e7d"

FUNCS = '''
import logging

log = logging.getLogger("telemetry_funcs")


def chatty(n: int = 3):
    for i in range(n):
        log.info("line %d of the step", i)
    log.warning("careful: almost done")
    return {"lines": n}
'''

TRACED = """
name: traced
inputs:
  sink: {type: string}
  token: {type: string}
steps:
  - id: fetch
    uses: http
    with:
      method: POST
      url: "${{ inputs.sink }}/fetch?api_key=${{ inputs.token }}"
      headers: {Authorization: "Bearer ${{ inputs.token }}"}
      json: {token: "${{ inputs.token }}"}
  - id: approve
    uses: approval
    with: {prompt: "Ship it?"}
  - id: talk
    uses: python
    with: {function: "telemetry_funcs:chatty", args: {n: 3}}
"""


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture
def otel_env(otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.http_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "agentrt-test",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test", "OTEL_METRIC_EXPORT_INTERVAL": "500",
           "AGENTRT_TELEMETRY_FLUSH_INTERVAL": "0.1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


async def test_run_is_one_trace_with_steps_attempts_http_and_approval_spans(
        settings: Settings, http_sink: HttpSink, otlp: OtlpReceiver, otel_env: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    write_workflow(settings, "traced.yaml", TRACED)
    (settings.workflows_dir / "telemetry_funcs.py").write_text(FUNCS)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("traced", {"sink": http_sink.url, "token": SECRET})
        task = await pending_task(client, run_id)
        await client.decide(task.task_id, approve=True, reason="fine")
        summary = await client.wait_for_run(run_id, timeout=30)
        assert summary.status.value == "completed", summary.error
        spans = await asyncio.to_thread(otlp.wait_for_spans, lambda s: any(x.name == "run traced" for x in s))

        async def stored() -> bool:
            return len(await load_spans(client.pool, run_id)) >= len([s for s in spans if s.name != "queued"])

        await eventually(stored, timeout=10, what="spans in the span store")
        rows = await load_spans(client.pool, run_id)
        step_lines = await load_step_logs(client.pool, run_id)
    trace = uuid.UUID(run_id).hex
    assert {s.trace_id for s in spans} == {trace}
    run = _by_name(spans, "run traced")
    assert run.parent_id is None and run.span_id == f"{run_span_id(run_id):016x}"
    assert run.resource["service.name"] == "agentrt-test"
    assert run.resource["deployment.environment"] == "test"
    assert run.status_code == 1 and run.attributes["agentrt.run.status"] == "completed"
    for step in ("fetch", "approve", "talk"):
        s = _by_name(spans, f"step {step}")
        assert s.parent_id == run.span_id and s.span_id == f"{step_span_id(run_id, step, None):016x}"
        a = _by_name(spans, f"{step} attempt 1")
        assert a.parent_id == s.span_id and a.span_id == f"{attempt_span_id(run_id, step, None, 1):016x}"
        assert a.start_ns >= s.start_ns and a.end_ns <= s.end_ns
    assert _by_name(spans, "step fetch").attributes["agentrt.step.kind"] == "http"
    fetch_attempt = _by_name(spans, "fetch attempt 1")
    assert fetch_attempt.attributes["agentrt.step.input.keys"] == ["headers", "json", "method", "url"]
    assert "agentrt.queue.delay_ms" in fetch_attempt.attributes
    http = _by_name(spans, "POST")
    assert http.kind == 3 and http.parent_id == fetch_attempt.span_id  # SPAN_KIND_CLIENT
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["url.full"] == f"{http_sink.url}/fetch"  # no query: it may hold secrets
    assert http.attributes["server.address"] == "127.0.0.1"
    sent = http_sink.requests[0].headers["traceparent"]
    assert sent == f"00-{trace}-{http.span_id}-01"  # the callee's parent is the HTTP client span
    wait = _by_name(spans, "approval wait")
    assert wait.parent_id == _by_name(spans, "approve attempt 1").span_id
    assert wait.attributes["agentrt.wait.outcome"] == "approved"
    run_queue = [s for s in spans if s.name == "queued" and s.attributes["agentrt.queue.reason"] == "run"]
    assert len(run_queue) == 1 and run_queue[0].parent_id == run.span_id  # the run's queue delay
    # nothing secret anywhere in what was exported or stored
    assert SECRET not in repr(spans) and SECRET not in json.dumps(rows)
    formatter = JsonFormatter()
    leaked = [(r.name, r.getMessage()[:200]) for r in caplog.records if SECRET in formatter.format(r)]
    assert caplog.records and not leaked
    assert [line.message for line in step_lines if line.step_id == "talk"][-1] == "careful: almost done"
    assert all(SECRET not in line.message for line in step_lines)
    assert {r["span_id"] for r in rows} >= {s.span_id for s in spans}


async def test_grpc_export_metrics_and_caller_trace(settings: Settings, otlp: OtlpReceiver,
                                                    monkeypatch: pytest.MonkeyPatch, http_sink: HttpSink,
                                                    worker_env: dict[str, str]) -> None:
    for k, v in {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                 "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300",
                 "AGENTRT_TELEMETRY_FLUSH_INTERVAL": "0.1"}.items():
        monkeypatch.setenv(k, v)
    write_workflow(settings, "two.yaml", """
        name: two
        inputs:
          sink: {type: string, default: ""}
        steps:
          - {id: a, uses: http, with: {url: "${{ inputs.sink }}/a"}}
          - {id: b, uses: set, with: {y: 2}}
    """)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("two", {"sink": http_sink.url},
                                        traceparent=f"00-{caller_trace}-{caller_span}-01")
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "completed"
        spans = await asyncio.to_thread(otlp.wait_for_spans, lambda s: any(x.name == "run two" for x in s))
        await asyncio.to_thread(otlp.wait_for_metrics, {"agentrt.runs.finished", "agentrt.step.duration"})
        # the CLI flag stores the caller's context with the run; a malformed one is refused
        out = await asyncio.to_thread(_agentrt, worker_env, "run", "two", "--json", "--input",
                                      json.dumps({"sink": http_sink.url}), "--traceparent",
                                      f"00-{caller_trace}-{caller_span}-01")
        assert out.returncode == 0, out.stderr
        cli_run = json.loads(out.stdout)["run_id"]
        stored = await client.pool.fetchval("SELECT traceparent FROM runs WHERE run_id = $1", cli_run)
        assert stored == f"00-{caller_trace}-{caller_span}-01"
        bad = await asyncio.to_thread(_agentrt, worker_env, "run", "two", "--traceparent", "nope")
        assert bad.returncode == 1 and "not a valid W3C trace context" in bad.stderr
    assert all(s.via == "grpc" for s in spans)
    assert {s.trace_id for s in spans} == {caller_trace}
    assert _by_name(spans, "run two").parent_id == caller_span
    assert _by_name(spans, "step b").parent_id == _by_name(spans, "run two").span_id
    # the very first HTTP call of the run already carries the caller's trace id
    get = _by_name(spans, "GET")
    assert get.parent_id == _by_name(spans, "a attempt 1").span_id
    assert http_sink.requests[0].headers["traceparent"] == f"00-{caller_trace}-{get.span_id}-01"


async def test_collector_down_runs_are_unaffected(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "50",
                 "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
                 "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}.items():
        monkeypatch.setenv(k, v)
    write_workflow(settings, "many.yaml", """
        name: many
        steps:
          - {id: a, uses: set, with: {x: 1}}
          - {id: b, uses: set, with: {y: 2}}
          - {id: c, uses: set, with: {z: 3}}
    """)
    async with running_worker(settings) as service, client_for(settings) as client:
        ids = await client.start_runs("many", [{} for _ in range(60)])
        for run_id in ids:
            assert (await client.wait_for_run(run_id, timeout=30)).status.value == "completed"
        exporting = service.telemetry.tracing.exporting  # type: ignore[attr-defined]
        assert exporting is not None
        # the batch processor's queue is bounded by OTEL_BSP_MAX_QUEUE_SIZE: excess spans are dropped
        assert len(exporting._batch_processor._queue) <= 64
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Queue full, dropping" in w for w in warnings), warnings
    assert len(warnings) < 40  # rate limited: not one line per dropped span


async def test_no_endpoint_exports_nothing_but_stores_spans(settings: Settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AGENTRT_TELEMETRY_FLUSH_INTERVAL", "0.1")
    write_workflow(settings, "one.yaml", "name: one\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    async with running_worker(settings) as service, client_for(settings) as client:
        assert service.telemetry.tracing.exporting is None  # type: ignore[attr-defined]
        assert service.telemetry.metrics is None  # type: ignore[attr-defined]
        run_id = await client.start_run("one", {})
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "completed"

        async def stored() -> bool:
            return {r["name"] for r in await load_spans(client.pool, run_id)} >= {"run one", "step a",
                                                                                   "a attempt 1"}

        await eventually(stored, timeout=10, what="spans stored without an exporter")
        # ... and announced on the live event stream, for the console's waterfall
        from worker.bus.codec import decode_event

        live = [decode_event(i, f) for i, f in await client.redis.xrange(client.keys.events)]
        announced = [e for e in live if e.kind == "span" and e.run_id == run_id]
        assert announced and {s["name"] for e in announced for s in e.data["spans"]} >= {"run one", "step a"}


def _agentrt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


async def test_kill9_resume_is_one_trace_with_the_crashed_attempt_marked_and_cli(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs, otlp: OtlpReceiver,
        worker_env: dict[str, str]) -> None:
    write_workflow(settings, "slow.yaml", """
        name: slow
        inputs:
          sink: {type: string}
        steps:
          - id: first
            uses: python
            with: {function: "telemetry_funcs:chatty", args: {n: 2}}
          - id: call
            uses: http
            with: {method: POST, url: "${{ inputs.sink }}/slow"}
            retry: {max_attempts: 3, initial_interval: 100ms}
    """)
    (settings.workflows_dir / "telemetry_funcs.py").write_text(FUNCS)
    http_sink.set_delay("/slow", 2.0)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "AGENTRT_TELEMETRY_FLUSH_INTERVAL": "0.1"}
    first = worker_procs.start(extra_env=otel, name="first")
    first.wait_for_log("worker test-first")
    async with client_for(settings) as client:
        run_id = await client.start_run("slow", {"sink": http_sink.url})
        assert await asyncio.to_thread(http_sink.wait_for, lambda s: s.count("/slow") >= 1, 20)
        await asyncio.sleep(0.8)  # let the first worker flush what it finished (step `first`)
        first.kill()
        http_sink.set_delay("/slow", 0.0)
        worker_procs.start(extra_env=otel, name="second")
        summary = await client.wait_for_run(run_id, timeout=40)
        assert summary.status.value == "completed", summary.error
        spans = await asyncio.to_thread(otlp.wait_for_spans, lambda s: any(x.name == "run slow" for x in s))
        await asyncio.sleep(0.5)
    trace = uuid.UUID(run_id).hex
    assert {s.trace_id for s in spans} == {trace}
    crashed = _by_name(spans, "call attempt 1")
    assert crashed.attributes["agentrt.attempt.crashed"] is True and crashed.status_code == 2
    retried = _by_name(spans, "call attempt 2")
    step = _by_name(spans, "step call")
    assert crashed.parent_id == retried.parent_id == step.span_id
    assert step.parent_id == _by_name(spans, "run slow").span_id
    run = _by_name(spans, "run slow")
    assert run.attributes["agentrt.run.resumes"] == 1
    assert [name for name, _ in run.events] == ["run.resumed"]
    # both workers' HTTP calls hang under their own attempt
    posts = [s for s in spans if s.name == "POST"]
    assert retried.span_id in {p.parent_id for p in posts}

    env = {**worker_env, "AGENTRT_LOG_FORMAT": "text"}

    async def logged() -> bool:
        async with client_for(settings) as c:
            return len(await load_step_logs(c.pool, run_id, step_id="first")) >= 3

    await eventually(logged, timeout=10, what="step log lines stored")
    out = await asyncio.to_thread(_agentrt, env, "logs", run_id[:8], "--step", "first")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and "line 0 of the step" in lines[0] and "first#1" in lines[0]
    assert "WARNING" in lines[2] and "careful" in lines[2]
    js = await asyncio.to_thread(_agentrt, env, "logs", run_id, "--json", "--follow")
    assert js.returncode == 0, js.stderr
    first_line = json.loads(js.stdout.splitlines()[0])
    assert first_line["trace_id"] == trace
    assert first_line["span_id"] == f"{attempt_span_id(run_id, 'first', None, 1):016x}"

    exported = await asyncio.to_thread(_agentrt, env, "export", run_id, "--format", "otlp-json")
    assert exported.returncode == 0, exported.stderr
    body = json.loads(exported.stdout)
    names = {s["name"]: s for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
    assert {"run slow", "step call", "call attempt 1", "call attempt 2", "POST"} <= set(names)
    assert names["run slow"]["traceId"] == trace and len(names["call attempt 1"]["spanId"]) == 16
    # another OTLP tool loads it: POST it as OTLP/JSON to a receiver
    import urllib.request

    with OtlpReceiver() as loader:
        request = urllib.request.Request(f"{loader.http_endpoint}/v1/traces", data=exported.stdout.encode(),
                                         headers={"content-type": "application/json"}, method="POST")
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).status)
        assert status == 200
        loaded = {s.name: s for s in loader.spans}
    assert loaded["call attempt 1"].attributes["agentrt.attempt.crashed"] is True
    assert loaded["call attempt 1"].parent_id == loaded["step call"].span_id
    assert loaded["run slow"].trace_id == trace
    events = await asyncio.to_thread(_agentrt, env, "export", run_id, "--format", "events")
    assert events.returncode == 0, events.stderr
    ev = json.loads(events.stdout)
    assert ev["run_id"] == run_id and next(e["type"] for e in ev["events"]) == "run.created"
    assert "run.resumed" in [e["type"] for e in ev["events"]]
    tr = await asyncio.to_thread(_agentrt, env, "trace", run_id)
    assert tr.returncode == 0 and "(crashed)" in tr.stdout, tr.stdout + tr.stderr
    # JSON log lines of the worker carry run/step/attempt/trace/span ids
    log_lines = [json.loads(line) for line in first.log_text().splitlines() if line.startswith("{")]
    stepped = [r for r in log_lines if r.get("step_id") == "first"]
    assert stepped and stepped[0]["trace_id"] == trace and stepped[0]["attempt"] == 1
    assert all(SECRET not in line for line in first.log_text().splitlines())


@pytest.mark.parametrize("mode", ["on", "off"])
async def test_worker_with_telemetry_stops_promptly(settings: Settings, worker_procs: WorkerProcs,
                                                    mode: str) -> None:
    import time

    write_workflow(settings, "one.yaml", "name: one\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    proc = worker_procs.start(extra_env={"AGENTRT_TELEMETRY": mode}, name="w")
    proc.wait_for_log("worker test-w")
    async with client_for(settings) as client:
        run_id = await client.start_run("one", {})
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "completed"
    started = time.monotonic()
    code = await asyncio.to_thread(proc.stop, 20)
    assert code == 0 and time.monotonic() - started < 10, proc.log_tail(30)
