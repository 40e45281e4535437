"""Trace context and span ids: W3C `traceparent` headers, and the deterministic ids of a run's spans.

trace id = the run's UUID (or the trace of the `traceparent` the run was started with); run span = hash(run),
step span = hash(run, step, item), attempt span = hash(run, step, item, attempt): whichever worker emits a span,
it has the same id (worker/telemetry/spans.py derives the spans).
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: int
    span_id: int
    sampled: bool = True

    def header(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """A W3C `traceparent` header, or None when absent or malformed (all-zero ids are invalid)."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceContext(trace_id, span_id, bool(int(m.group(4), 16) & 1))


def _hash_id(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") or 1


@functools.lru_cache(maxsize=65_536)
def span_id_for(*parts: object) -> int:
    """The id of a span named by `parts`: a hash of them joined by "/" (None as empty)."""
    return _hash_id("/".join("" if p is None else str(p) for p in parts))


def run_span_id(run_id: str) -> int:
    return span_id_for("run", run_id)


def step_span_id(run_id: str, step_id: str, item: int | None) -> int:
    # the text span_id_for("step", ...) hashes, built directly (a step's spans ask for it several times)
    return _hash_id(f"step/{run_id}/{step_id}/{'' if item is None else item}")


def attempt_span_id(run_id: str, step_id: str, item: int | None, attempt: int) -> int:
    return _hash_id(f"attempt/{run_id}/{step_id}/{'' if item is None else item}/{attempt}")


def trace_id_for(run_id: str, parent: TraceContext | None) -> int:
    return parent.trace_id if parent is not None else uuid.UUID(run_id).int
