"""Structured logs: the step context of the running attempt, a JSON formatter, step log capture.

`traceparent()` (called by the engine right before an executor runs, inside the attempt's task) sets
`current_step`; anything logged while that attempt runs (the executor, a `python` step's own
`logging` calls, in its thread too: `asyncio.to_thread` copies the context) carries its run, step,
attempt, trace and span ids, and is captured as the step's log lines.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

MESSAGE_CHARS = 4000
STEP_LINES_MAX = 1000  # per attempt; more are counted and dropped
BUFFER_MAX = 20_000  # lines waiting to be written; more are dropped (Postgres down)


@dataclass(slots=True)
class StepLogContext:
    run_id: str
    step_id: str
    item: int | None
    attempt: int
    trace_id: str
    span_id: str
    lines: int = 0
    dropped: int = 0
    secrets: tuple[str, ...] = field(default_factory=tuple)


current_step: contextvars.ContextVar[StepLogContext | None] = contextvars.ContextVar("agentrt_step", default=None)
# run id -> trace id (hex) of runs this process traces, for run-level log lines
run_traces: dict[str, str] = {}


def register_step_secrets(values: list[str]) -> None:
    """Secret values the running step holds: redacted from its log lines (for the secrets module)."""
    ctx = current_step.get()
    if ctx is not None:
        ctx.secrets = tuple(v for v in values if v and len(v) >= 4)


def _redact(text: str, ctx: StepLogContext | None) -> str:
    if ctx is not None:
        for secret in ctx.secrets:
            if secret in text:
                text = text.replace(secret, "***")
    return text


def _trace_for_run(run_id: str) -> str | None:
    found = run_traces.get(run_id)
    if found is not None:
        return found
    try:
        import uuid

        return uuid.UUID(run_id).hex
    except ValueError:
        return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and run/step/attempt/trace/span where known."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = current_step.get()
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _redact(record.getMessage(), ctx),
        }
        run_id = getattr(record, "run_id", None)
        if ctx is not None and (run_id is None or run_id == ctx.run_id):
            out.update(run_id=ctx.run_id, step_id=ctx.step_id, attempt=ctx.attempt, trace_id=ctx.trace_id,
                       span_id=ctx.span_id)
            if ctx.item is not None:
                out["item"] = ctx.item
        elif isinstance(run_id, str):
            out["run_id"] = run_id
            trace = _trace_for_run(run_id)
            if trace:
                out["trace_id"] = trace
        if record.exc_info:
            out["exc"] = _redact(self.formatException(record.exc_info), ctx)
        return orjson.dumps(out, default=str).decode()


class StepLogCapture(logging.Handler):
    """Keeps the log lines emitted inside a step attempt, for batched writes to `step_logs`."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.buffer: deque[tuple[Any, ...]] = deque()
        self.dropped = 0
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        ctx = current_step.get()
        if ctx is None:
            return
        run_id = getattr(record, "run_id", None)
        if run_id is not None and run_id != ctx.run_id:
            return
        if ctx.lines >= STEP_LINES_MAX or len(self.buffer) >= BUFFER_MAX:
            ctx.dropped += 1
            self.dropped += 1
            return
        ctx.lines += 1
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break the step
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
        # Postgres text cannot hold NUL: a step that prints binary noise keeps its log line
        message = _redact(message, ctx)[:MESSAGE_CHARS].replace("\x00", "\ufffd")
        self.buffer.append((ctx.run_id, ctx.step_id, ctx.item, ctx.attempt, record.created, record.levelname,
                            record.name, message, ctx.trace_id, ctx.span_id))

    def drain(self, limit: int = 5000) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while self.buffer and len(out) < limit:
            out.append(self.buffer.popleft())
        return out


def install_json_logging(level: int) -> None:
    """Replace the root handlers' formatter with JSON (the worker's stderr)."""
    install_redaction_filters()
    root = logging.getLogger()
    for handler in root.handlers:
        if not isinstance(handler, StepLogCapture):
            handler.setFormatter(JsonFormatter())
    root.setLevel(level)


class RateLimit(logging.Filter):
    """At most one record per message template every `interval` seconds (the SDK warns per dropped span)."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        if skipped:
            record.msg = f"{record.msg} ({skipped} similar messages suppressed)"
        return True


def rate_limit_sdk_warnings() -> None:
    for name in ("opentelemetry.sdk._shared_internal", "opentelemetry.exporter.otlp.proto.grpc.exporter",
                 "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.http.metric_exporter", "opentelemetry.sdk.metrics"):
        log = logging.getLogger(name)
        if not any(isinstance(f, RateLimit) for f in log.filters):
            log.addFilter(RateLimit())


class UrlQueryRedaction(logging.Filter):
    """httpx logs every request's full URL: its query and userinfo may hold secrets (`?api_key=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_safe(a) for a in record.args)
        return True


def _safe(value: Any) -> Any:
    url_type = type(value).__name__
    if url_type == "URL" and hasattr(value, "copy_with"):
        try:
            return str(value.copy_with(query=None, fragment=None, username=None, password=None))
        except Exception:  # noqa: BLE001 - never break logging
            return "<url>"
    return value


def install_redaction_filters() -> None:
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if not any(isinstance(f, UrlQueryRedaction) for f in log.filters):
            log.addFilter(UrlQueryRedaction())
