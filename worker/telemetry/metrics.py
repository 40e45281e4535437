"""OpenTelemetry metrics derived from committed events (same OTLP settings as traces).

Built only when an OTLP endpoint is configured for metrics (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`); the export interval is `OTEL_METRIC_EXPORT_INTERVAL`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from worker import runlog as ev
from worker.telemetry.export import SCOPE_NAME, endpoint_configured, protocol
from worker.telemetry.spans import SpanRecord

logger = logging.getLogger(__name__)


def _exporter() -> MetricExporter:
    if protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http()


class Metrics:
    """Instruments fed by the telemetry pipeline; gauges read values the pipeline refreshes."""

    def __init__(self, resource: Resource) -> None:
        # exemplars off unless asked for: the default (trace-based) filter inspects the current context
        # on every record, costly on this path, and the derived spans are never "current" anyway
        exemplars = None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
        self.provider = MeterProvider(resource=resource, exemplar_filter=exemplars,
                                      metric_readers=[PeriodicExportingMetricReader(_exporter())])
        m = self.provider.get_meter(SCOPE_NAME)
        self.runs_started = m.create_counter("agentrt.runs.started", "{run}", "Runs picked up by a worker")
        self.runs_finished = m.create_counter("agentrt.runs.finished", "{run}",
                                              "Runs that completed, failed or were cancelled (status)")
        self.runs_resumed = m.create_counter("agentrt.runs.resumed", "{run}", "Takeovers after a lost worker")
        self.step_duration = m.create_histogram("agentrt.step.duration", "s", "Duration of step attempts")
        self.queue_delay = m.create_histogram("agentrt.step.queue_delay", "s",
                                              "Time from a step (or run) being ready to its start")
        self.retries = m.create_counter("agentrt.step.retries", "{attempt}", "Failed attempts that will retry")
        self.crashed = m.create_counter("agentrt.step.crashed", "{attempt}", "Attempts lost with their worker")
        self.pending_approvals = 0
        self.spans_dropped: Callable[[], int] = lambda: 0
        m.create_observable_gauge("agentrt.approvals.pending", [self._observe_pending], "{task}",
                                  "Pending human tasks (all workers; refreshed periodically)")
        m.create_observable_counter("agentrt.telemetry.dropped", [self._observe_dropped], "{item}",
                                    "Spans and log lines dropped by this worker's telemetry")

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.pending_approvals)]

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.spans_dropped())]

    def record(self, workflow: str, events: Iterable[ev.Event], spans: Iterable[SpanRecord],
               first_pickup: bool) -> None:
        wf = {"agentrt.workflow": workflow}
        if first_pickup:
            self.runs_started.add(1, wf)
        for e in events:
            if e.type in ev.RUN_TERMINAL_EVENTS:
                self.runs_finished.add(1, {**wf, "agentrt.run.status": e.type.split(".", 1)[1]})
            elif e.type == ev.RUN_RESUMED:
                self.runs_resumed.add(1, wf)
            elif e.type == ev.STEP_FAILED and not e.data.get("final", True) and not e.data.get("cancelled"):
                self.retries.add(1, {**wf, "agentrt.step.id": e.step_id or ""})
            if e.type == ev.STEP_FAILED and e.data.get("crashed"):
                self.crashed.add(1, wf)
        for s in spans:
            a = s.attributes
            if "agentrt.step.attempt" in a and s.name != "queued" and "agentrt.wait.reason" not in a:
                attrs: dict[str, Any] = {**wf, "agentrt.step.kind": a.get("agentrt.step.kind", ""),
                                         "agentrt.attempt.outcome": a.get("agentrt.attempt.outcome", "")}
                self.step_duration.record(s.end - s.start, attrs)
                delay = a.get("agentrt.queue.delay_ms")
                if isinstance(delay, int | float):
                    self.queue_delay.record(delay / 1000, {**wf, "agentrt.queue.reason": "step"})
            elif s.name == "queued" and a.get("agentrt.queue.reason") == "run":
                self.queue_delay.record(s.end - s.start, {**wf, "agentrt.queue.reason": "run"})

    def shutdown(self) -> None:
        self.provider.shutdown()


def build_metrics(resource: Resource) -> Metrics | None:
    if not endpoint_configured("METRICS"):
        return None
    try:
        return Metrics(resource)
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must not keep the worker down
        logger.error("OTLP metric export disabled: %s: %s", type(exc).__name__, exc)
        return None
