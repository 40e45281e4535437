"""OpenTelemetry SDK setup (the one place it happens) and span conversion.

Configured only by the standard `OTEL_*` variables: with no `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, nothing is exported. The protocol is
`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the specification's default, or `grpc`);
the exporters read endpoint, headers, timeout, compression and certificates themselves; the resource
comes from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, the sampler from `OTEL_TRACES_SAMPLER`
(+ `_ARG`), batching from `OTEL_BSP_*` (a bounded queue: when the collector is down, spans are
dropped with a warning, never buffered without bound).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from worker.telemetry.ids import TraceContext
from worker.telemetry.spans import SpanRecord

logger = logging.getLogger(__name__)

SCOPE_NAME = "agentrt"
_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER,
          "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
_STATUS = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}


def _version() -> str:
    try:
        return metadata.version("agentruntime")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


SCOPE = InstrumentationScope(SCOPE_NAME, _version())


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def sdk_disabled() -> bool:
    return _env("OTEL_SDK_DISABLED").lower() == "true"


def endpoint_configured(signal: str = "TRACES") -> bool:
    exporter = _env(f"OTEL_{signal}_EXPORTER").lower()
    if exporter in ("none", "console"):
        return False
    return bool(_env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def protocol(signal: str = "TRACES") -> str:
    return (_env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf").lower()


def build_resource(service_name: str = "agentrt-worker") -> Resource:
    explicit = _env("OTEL_SERVICE_NAME") or "service.name=" in _env("OTEL_RESOURCE_ATTRIBUTES")
    return Resource.create({} if explicit else {"service.name": service_name})


def build_span_exporter() -> SpanExporter:
    proto = protocol("TRACES")
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if proto not in ("http/protobuf", "http/json"):
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http/protobuf", proto)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class StoreProcessor(SpanProcessor):
    """Hands every finished SDK span (HTTP client spans, LLM spans...) to the span store."""

    def __init__(self, sink: Callable[[SpanRecord], None]) -> None:
        self._sink = sink

    def on_end(self, span: ReadableSpan) -> None:
        record = from_readable(span)
        if record is not None:
            self._sink(record)


class Tracing:
    """The SDK objects of one worker: a provider for live child spans and the OTLP batch processor."""

    def __init__(self, store_sink: Callable[[SpanRecord], None] | None) -> None:
        from worker.telemetry.logging import rate_limit_sdk_warnings

        rate_limit_sdk_warnings()
        self.resource = build_resource()
        self.provider = TracerProvider(resource=self.resource)
        self.exporting: BatchSpanProcessor | None = None
        if endpoint_configured("TRACES"):
            try:
                # a bigger default queue than the SDK's 2,048: a burst of 500 concurrent runs makes
                # ~10k spans in a second (still bounded: ~16k spans, a few tens of MB at most)
                queue = None if _env("OTEL_BSP_MAX_QUEUE_SIZE") else 16_384
                self.exporting = BatchSpanProcessor(build_span_exporter(), max_queue_size=queue)
            except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must not keep the worker down
                logger.error("OTLP trace export disabled: %s: %s", type(exc).__name__, exc)
            else:
                self.provider.add_span_processor(self.exporting)
        if store_sink is not None:
            self.provider.add_span_processor(StoreProcessor(store_sink))
        self.tracer = self.provider.get_tracer(SCOPE_NAME, _version())
        _install_global(self.provider)

    def is_sampled(self, trace_id: int, parent: TraceContext | None) -> bool:
        ctx = None
        if parent is not None:
            ctx = set_span_in_context(NonRecordingSpan(SpanContext(
                parent.trace_id, parent.span_id, True, TraceFlags(1 if parent.sampled else 0))))
        decision = self.provider.sampler.should_sample(ctx, trace_id, "run").decision
        return bool(decision.is_sampled())  # type: ignore[no-untyped-call]

    def export(self, records: Iterable[SpanRecord]) -> None:
        if self.exporting is None:
            return
        for r in records:
            self.exporting.on_end(to_readable(r, self.resource))

    def shutdown(self) -> None:
        self.provider.shutdown()


_global_installed = False


def _install_global(provider: TracerProvider) -> None:
    """The first worker in a process becomes OpenTelemetry's global provider (for a step's own spans)."""
    global _global_installed
    if _global_installed:
        return
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    _global_installed = True


def to_readable(r: SpanRecord, resource: Resource | None = None) -> ReadableSpan:
    flags = TraceFlags(1)
    ctx = SpanContext(r.trace_id, r.span_id, False, flags)
    parent = None if r.parent_id is None else SpanContext(r.trace_id, r.parent_id, r.remote_parent, flags)
    events = [SdkEvent(name, _attrs(attrs), timestamp=int(ts * 1e9)) for name, ts, attrs in r.events]
    status = Status(_STATUS.get(r.status, StatusCode.UNSET),
                    r.status_message if r.status == "error" else None)
    return ReadableSpan(name=r.name, context=ctx, parent=parent, resource=resource or Resource.get_empty(),
                        attributes=_attrs(r.attributes), events=events, kind=_KINDS.get(r.kind, SpanKind.INTERNAL),
                        status=status, start_time=int(r.start * 1e9), end_time=int(r.end * 1e9),
                        instrumentation_scope=SCOPE)


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, str | bool | int | float):
            out[k] = v
        elif isinstance(v, list | tuple):
            out[k] = [str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def from_readable(span: ReadableSpan) -> SpanRecord | None:
    ctx = span.context
    if ctx is None or span.start_time is None or span.end_time is None:
        return None
    attrs = dict(span.attributes or {})
    run_id = attrs.get("agentrt.run.id")
    if not isinstance(run_id, str):
        return None
    parent = span.parent
    return SpanRecord(
        run_id=run_id, trace_id=ctx.trace_id, span_id=ctx.span_id,
        parent_id=parent.span_id if parent is not None else None, name=span.name,
        start=span.start_time / 1e9, end=span.end_time / 1e9, kind=_KIND_NAMES.get(span.kind, "internal"),
        status={StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}[span.status.status_code],
        status_message=span.status.description,
        attributes={k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()},
        events=[(e.name, e.timestamp / 1e9, dict(e.attributes or {})) for e in span.events],
        remote_parent=bool(parent is not None and parent.is_remote))


def from_row(run_id: str, row: dict[str, Any]) -> SpanRecord:
    """A stored span (see `worker.store.spans.load_spans`) back into a record."""
    return SpanRecord(run_id=run_id, trace_id=int(row["trace_id"], 16), span_id=int(row["span_id"], 16),
                      parent_id=int(row["parent_id"], 16) if row.get("parent_id") else None, name=row["name"],
                      start=float(row["start"]), end=float(row["end"]), kind=row.get("kind") or "internal",
                      status=row.get("status") or "unset", status_message=row.get("status_message"),
                      attributes=dict(row.get("attributes") or {}),
                      events=[(e[0], float(e[1]), dict(e[2])) for e in row.get("events") or []])


def otlp_json(records: Sequence[SpanRecord], resource: Resource | None = None) -> dict[str, Any]:
    """An OTLP/JSON `ExportTraceServiceRequest` (ids in hex, as the OTLP/JSON encoding requires)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = encode_spans([to_readable(r, resource or build_resource()) for r in records])
    body: dict[str, Any] = MessageToDict(request, use_integers_for_enums=True)
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in link:
                            link[key] = base64.b64decode(link[key]).hex()
    return body
