"""Tracing hooks the engine calls; `build_telemetry` picks the implementation.

`RuntimeTelemetry` (worker/telemetry/setup.py) derives spans from committed events, exports them
over OTLP when `OTEL_*` says so, keeps them in Postgres for the console, captures step logs and
records metrics. `AGENTRT_TELEMETRY=off` (or `OTEL_SDK_DISABLED=true`) selects `NoTelemetry`.
Executors make child spans with `child_span` / `achild_span` (worker/telemetry/child.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from worker.config import Settings
from worker.runlog import Event
from worker.telemetry.child import achild_span, child_span, span_traceparent

__all__ = ["NoTelemetry", "Telemetry", "achild_span", "build_telemetry", "child_span", "span_traceparent"]


class Telemetry(Protocol):
    def committed(self, run_id: str, workflow: str, events: Sequence[Event]) -> None:
        """Events of a run were committed (spans are derived from them)."""
        ...

    def traceparent(self, run_id: str, step_id: str, item: int | None, attempt: int, *,
                    in_process: bool = True) -> str | None:
        """W3C trace context of an attempt's span, for the executor's outgoing calls. `in_process`: the
        attempt's calls are made from this process (its HTTP client spans need the OpenTelemetry context);
        False for a sandboxed `python` step, whose process gets the header instead."""
        ...

    async def aclose(self) -> None: ...


class NoTelemetry:
    def committed(self, run_id: str, workflow: str, events: Sequence[Event]) -> None:
        return None

    def traceparent(self, run_id: str, step_id: str, item: int | None, attempt: int, *,
                    in_process: bool = True) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def build_telemetry(settings: Settings) -> Telemetry:
    """RuntimeTelemetry unless disabled; must be called inside the worker's event loop."""
    from worker.telemetry.setup import RuntimeTelemetry, TelemetryConfig

    config = TelemetryConfig.from_env()
    if not config.enabled:
        return NoTelemetry()
    return RuntimeTelemetry(settings, config)
