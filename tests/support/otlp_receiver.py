"""A real OTLP receiver for tests: gRPC (grpcio + opentelemetry-proto) and HTTP (stdlib server).

    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint}      # or rx.grpc_endpoint + protocol grpc
        ...
        spans = rx.wait_for_spans(lambda spans: any(s.name == "run hello" for s in spans))

Every received span is flattened into a `ReceivedSpan` (ids in hex, attributes as a plain dict).
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _hex_ids_to_base64(body: Any) -> Any:
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return body


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    via: str  # "grpc" | "http"


@dataclass
class OtlpReceiver:
    """See the module docstring. `fail_with` makes every export fail with that gRPC/HTTP status."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (metric name, resource)
    requests: int = 0
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _grpc: Any = None
    _http: http.server.ThreadingHTTPServer | None = None
    grpc_endpoint: str = ""
    http_endpoint: str = ""
    parse: bool = True  # False: only count requests and bytes (benchmarks: a cheap collector)
    bytes_received: int = 0

    # -- decoding ----------------------------------------------------------------------------
    def add_traces(self, req: trace_service_pb2.ExportTraceServiceRequest, via: str) -> None:
        out = []
        for rs in req.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex() or None, name=s.name, kind=s.kind,
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                        status_code=s.status.code, status_message=s.status.message,
                        attributes={kv.key: any_value(kv.value) for kv in s.attributes},
                        events=[(e.name, {kv.key: any_value(kv.value) for kv in e.attributes}) for e in s.events],
                        resource=resource, via=via))
        with self._lock:
            self.requests += 1
            self.spans.extend(out)
            self._lock.notify_all()

    def add_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._lock:
            for rm in req.resource_metrics:
                resource = {kv.key: any_value(kv.value) for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        self.metrics.append((m.name, resource))
            self._lock.notify_all()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> OtlpReceiver:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
                receiver.add_traces(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                receiver.add_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        self.grpc_endpoint = f"http://127.0.0.1:{port}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                is_json = "json" in (self.headers.get("content-type") or "")
                if not receiver.parse:
                    with receiver._lock:
                        receiver.requests += 1
                        receiver.bytes_received += len(body)
                    reply = b""
                elif self.path.endswith("/v1/traces"):
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    if is_json:  # OTLP/JSON: ids are hex, where protobuf's JSON mapping wants base64
                        ParseDict(_hex_ids_to_base64(json.loads(body)), req)
                    else:
                        req.ParseFromString(body)
                    receiver.add_traces(req, "http")
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path.endswith("/v1/metrics"):
                    mreq = metrics_service_pb2.ExportMetricsServiceRequest()
                    mreq.ParseFromString(body)
                    receiver.add_metrics(mreq)
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="otlp-http").start()
        self._http = httpd
        self.http_endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- queries -----------------------------------------------------------------------------
    def wait_for_spans(self, predicate: Callable[[list[ReceivedSpan]], bool],
                       timeout: float = 20.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self.spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({s.name for s in self.spans})
                    raise AssertionError(f"spans not received within {timeout}s; have {len(self.spans)}: {names}")
                self._lock.wait(min(left, 0.2))
            return list(self.spans)

    def wait_for_metrics(self, names: set[str], timeout: float = 20.0) -> set[str]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not names <= {n for n, _ in self.metrics}:
                left = deadline - time.monotonic()
                if left <= 0:
                    have = sorted({n for n, _ in self.metrics})
                    raise AssertionError(f"metrics {names} not all received; have {have}")
                self._lock.wait(min(left, 0.2))
            return {n for n, _ in self.metrics}
