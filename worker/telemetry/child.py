"""`child_span`: a span under a step attempt, for executors (HTTP calls, LLM calls, tool calls).

    with child_span(ctx.traceparent, "chat gpt-4o", {"gen_ai.operation.name": "chat"}) as span:
        ...
        span.set_attribute("gen_ai.usage.input_tokens", n)
    headers["traceparent"] = span_traceparent(span) or ctx.traceparent

With telemetry off (or a missing/invalid traceparent) the span is a no-op that accepts the same
calls. Spans carry the run, step and attempt ids, are exported like every other span and kept in the
span store. Never put secrets or raw payloads in attributes: sizes and keys only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context

from worker.telemetry import logging as tlog
from worker.telemetry.ids import parse_traceparent

_KINDS = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL, "producer": SpanKind.PRODUCER,
          "server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER}


def _resolve_sync(header: str | None) -> str | None:
    from worker.telemetry.current import current

    t = current()
    if t is None or header is None:
        return header
    ctx = parse_traceparent(header)
    if ctx is None:
        return header
    import uuid

    tracker = t._trackers.get(str(uuid.UUID(int=ctx.trace_id)))
    if tracker is None or tracker.trace_id == ctx.trace_id:
        return header
    return f"00-{tracker.trace_id:032x}-{ctx.span_id:016x}-{'01' if tracker.sampled else '00'}"


def _start(header: str | None, name: str, attributes: Mapping[str, Any] | None, kind: str) -> trace.Span:
    from worker.telemetry.current import current

    t = current()
    parent = parse_traceparent(header)
    if t is None or parent is None:
        return trace.INVALID_SPAN
    attrs: dict[str, Any] = dict(attributes or {})
    step = tlog.current_step.get()
    if step is not None:
        attrs.setdefault("agentrt.run.id", step.run_id)
        attrs.setdefault("agentrt.step.id", step.step_id)
        attrs.setdefault("agentrt.step.attempt", step.attempt)
        if step.item is not None:
            attrs.setdefault("agentrt.step.item", step.item)
    ctx = set_span_in_context(NonRecordingSpan(SpanContext(
        parent.trace_id, parent.span_id, True, TraceFlags(1 if parent.sampled else 0))))
    return t.tracing.tracer.start_span(name, context=ctx, kind=_KINDS.get(kind, SpanKind.INTERNAL),
                                       attributes=attrs)


@contextmanager
def child_span(traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None, *,
               kind: str = "client") -> Iterator[trace.Span]:
    """A span whose parent is `traceparent` (the attempt); ended (with error status on exception) on exit."""
    span = _start(_resolve_sync(traceparent), name, attributes, kind)
    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield span


@asynccontextmanager
async def achild_span(traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None, *,
                      kind: str = "client", record_exception: bool = True) -> AsyncIterator[trace.Span]:
    """`child_span` for coroutines: first waits (briefly) until the run's trace id is known for sure."""
    from worker.telemetry.current import current

    t = current()
    header = await t.resolve_traceparent(traceparent) if t is not None else traceparent
    span = _start(header, name, attributes, kind)
    with trace.use_span(span, end_on_exit=True, record_exception=record_exception, set_status_on_exception=True):
        yield span


def span_traceparent(span: trace.Span) -> str | None:
    """The W3C header naming `span` as the parent (for the callee), or None for a no-op span."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
