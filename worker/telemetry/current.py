"""The process's telemetry and the attempt running in the current task: what helpers reach that only have a
traceparent (an executor's HTTP client, the LLM stream, `python` steps run inline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from worker.telemetry import logging as tlog
from worker.telemetry.ids import TraceContext

if TYPE_CHECKING:
    from worker.telemetry.setup import RuntimeTelemetry

_current: RuntimeTelemetry | None = None


def set_current(t: RuntimeTelemetry | None) -> None:
    global _current
    _current = t


def current() -> RuntimeTelemetry | None:
    return _current


def enter_step(run_id: str, step_id: str, item: int | None, attempt: int, ctx: TraceContext, *,
                otel: bool = True) -> None:
    """Make the attempt the current context of the executor's task (logs; the OpenTelemetry context too when
    its calls are made from this process)."""
    tlog.current_step.set(tlog.StepLogContext(run_id, step_id, item, attempt, f"{ctx.trace_id:032x}",
                                              f"{ctx.span_id:016x}"))
    if not otel:
        return
    span_ctx = SpanContext(ctx.trace_id, ctx.span_id, True, TraceFlags(1 if ctx.sampled else 0))
    otel_context.attach(set_span_in_context(NonRecordingSpan(span_ctx)))
