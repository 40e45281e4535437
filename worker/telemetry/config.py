"""Telemetry settings from the environment (AGENTRT_TELEMETRY, AGENTRT_SPAN_STORE, retention, flush interval)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", name, raw, default)
        return default


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    enabled: bool = True
    store_spans: bool = True
    span_retention_s: float = 7 * 86400
    log_retention_s: float = 7 * 86400
    max_spans_per_run: int = 10_000
    flush_interval: float = 0.5
    prune_interval: float = 300.0

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        env = os.environ
        mode = env.get("AGENTRT_TELEMETRY", "on").strip().lower()
        disabled = mode in ("off", "0", "false", "no") or env.get("OTEL_SDK_DISABLED", "").lower() == "true"
        return cls(
            enabled=not disabled,
            store_spans=env.get("AGENTRT_SPAN_STORE", "on").strip().lower() not in ("off", "0", "false", "no"),
            span_retention_s=_env_float("AGENTRT_SPAN_RETENTION", 7 * 86400),
            log_retention_s=_env_float("AGENTRT_STEP_LOG_RETENTION", 7 * 86400),
            max_spans_per_run=int(_env_float("AGENTRT_SPAN_MAX_PER_RUN", 10_000)),
            flush_interval=_env_float("AGENTRT_TELEMETRY_FLUSH_INTERVAL", 0.5),
        )
