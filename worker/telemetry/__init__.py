"""Tracing hooks the engine calls; `build_telemetry` picks the implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from worker.config import Settings
from worker.engine.events import Event


class Telemetry(Protocol):
    def committed(self, run_id: str, workflow: str, events: Sequence[Event]) -> None:
        """Events of a run were committed (spans are derived from them)."""
        ...

    def traceparent(self, run_id: str, step_id: str, item: int | None, attempt: int) -> str | None:
        """W3C trace context of an attempt's span, for the executor's outgoing calls."""
        ...

    async def aclose(self) -> None: ...


class NoTelemetry:
    def committed(self, run_id: str, workflow: str, events: Sequence[Event]) -> None:
        return None

    def traceparent(self, run_id: str, step_id: str, item: int | None, attempt: int) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def build_telemetry(settings: Settings) -> Telemetry:
    return NoTelemetry()
