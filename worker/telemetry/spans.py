"""Pure derivation of a run's spans from its committed events (no I/O, no clock, no SDK).

Ids are deterministic, so whichever worker commits an end event emits the same span a crashed
worker would have: trace id = the run's UUID (or the trace of the `traceparent` the run was started
with), run span = hash(run), step span = hash(run, step, item), attempt span = hash(run, step, item,
attempt). A span is emitted when its end event is committed, with the start and end times of the
events. Step inputs and outputs never become attributes: only their keys and sizes do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker import runlog as ev
from worker.telemetry.ids import (
    TraceContext,
    attempt_span_id,
    parse_traceparent,
    run_span_id,
    span_id_for,
    step_span_id,
    trace_id_for,
)

ERROR_CHARS = 200
QUEUE_SPAN_MIN = 0.001  # seconds: shorter queue delays (a run's, a retry's) are only an attribute
READY_SPAN_MIN = 0.05
"""Seconds a step that was ready waited before it started, below which that wait is only an attribute of its
attempt (`agentrt.queue.delay_ms`) and not a `queued` span of its own: between two steps of a run there is
always the commit (a millisecond or two), which made every step a third span to derive, store and send."""
WAIT_NAMES = {"approval": "approval wait", "sleep": "sleep", "child": "child workflow", "event": "event wait",
              "uncertain": "uncertain effect: waiting for a human", "throttled": "throttled"}


@dataclass(slots=True)
class SpanRecord:
    """A finished span, independent of any SDK (times are unix seconds)."""

    run_id: str
    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start: float
    end: float
    kind: str = "internal"  # internal | client | server | producer | consumer
    status: str = "unset"  # unset | ok | error
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    remote_parent: bool = False

    def to_row(self) -> dict[str, Any]:
        """The JSON shape used by the span store and the live stream (ids in hex)."""
        return {"trace_id": f"{self.trace_id:032x}", "span_id": f"{self.span_id:016x}",
                "parent_id": None if self.parent_id is None else f"{self.parent_id:016x}", "name": self.name,
                "kind": self.kind, "start": self.start, "end": self.end, "status": self.status,
                "status_message": self.status_message, "attributes": self.attributes,
                "events": [[n, t, a] for n, t, a in self.events]}


def json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return -1


def _shape(prefix: str, value: Any) -> dict[str, Any]:
    """Keys and size of an input/output: never the values."""
    attrs: dict[str, Any] = {f"{prefix}.size": json_size(value)}
    if isinstance(value, dict):
        attrs[f"{prefix}.keys"] = sorted(str(k) for k in value)[:50]
    return attrs


@dataclass(slots=True)
class _Attempt:
    number: int
    start: float
    attrs: dict[str, Any]


@dataclass(slots=True)
class _Wait:
    reason: str
    start: float
    parent_id: int
    span_id: int
    attrs: dict[str, Any]


Key = tuple[str, int | None]


class RunTracer:
    """Folds one run's events in order; `feed` returns the spans that the event finished."""

    def __init__(self, run_id: str, *, traceparent: str | None = None, kinds: dict[str, str] | None = None,
                 workflow: str = "") -> None:
        self.run_id = run_id
        self.parent = parse_traceparent(traceparent)
        self.trace_id = trace_id_for(run_id, self.parent)
        self.root_id = run_span_id(run_id)
        self.kinds = kinds or {}
        self.workflow = workflow
        self.created: float | None = None
        self.picked_up: float | None = None
        self.last_seq = 0
        self.last_progress: float | None = None
        self.finished = False
        self.resumes = 0
        self._steps: dict[Key, float] = {}
        self._expanded: set[str] = set()
        self._attempts: dict[Key, _Attempt] = {}
        self._waits: dict[Key, _Wait] = {}
        self._retry_at: dict[Key, float] = {}
        self._run_events: list[tuple[str, float, dict[str, Any]]] = []
        self.counters: dict[str, int] = {"attempts": 0, "retries": 0, "crashed": 0}
        self.sampled = self.parent.sampled if self.parent is not None else True  # the exporter may decide
        self.stored = 0  # spans this process stored for the run (a per-run cap)
        self.annotations: dict[tuple[str, int | None, int], dict[str, Any]] = {}
        """(step, item, attempt) -> attributes an executor measured (e.g. an LLM's time to first token)."""
        self._step_ids: dict[Key, int] = {}
        self._attempt_ids: dict[tuple[str, int | None, int], int] = {}
        """Span ids asked for while the step runs (launch, open, close): hashed once. Dropped when it ends."""

    def context_of(self, step_id: str, item: int | None, attempt: int) -> TraceContext:
        return TraceContext(self.trace_id, self._attempt_id(step_id, item, attempt), self.sampled)

    def _step_id(self, step_id: str, item: int | None) -> int:
        key = (step_id, item)
        found = self._step_ids.get(key)
        if found is None:
            found = self._step_ids[key] = step_span_id(self.run_id, step_id, item)
        return found

    def _attempt_id(self, step_id: str, item: int | None, attempt: int) -> int:
        key = (step_id, item, attempt)
        found = self._attempt_ids.get(key)
        if found is None:
            found = self._attempt_ids[key] = attempt_span_id(self.run_id, step_id, item, attempt)
        return found

    # -- helpers -----------------------------------------------------------------------------
    def _span(self, span_id: int, parent_id: int | None, name: str, start: float, end: float,
              **kw: Any) -> SpanRecord:
        attrs = {"agentrt.run.id": self.run_id, "agentrt.workflow": self.workflow}
        attrs.update(kw.pop("attributes", {}))
        remote = parent_id is not None and self.parent is not None and parent_id == self.parent.span_id
        return SpanRecord(self.run_id, self.trace_id, span_id, parent_id, name, start, max(start, end),
                          attributes=attrs, remote_parent=remote, **kw)

    def _step_parent(self, step_id: str, item: int | None) -> int:
        if item is not None and step_id in self._expanded:
            return self._step_id(step_id, None)
        return self.root_id

    def _step_attrs(self, step_id: str, item: int | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {"agentrt.step.id": step_id}
        if item is not None:
            attrs["agentrt.step.item"] = item
        kind = self.kinds.get(step_id)
        if kind:
            attrs["agentrt.step.kind"] = kind
        return attrs

    def _open_attempt(self, e: ev.Event, key: Key, out: list[SpanRecord]) -> None:
        number = e.attempt or 1
        current = self._attempts.get(key)
        if current is not None:
            if current.number == number:
                return
            # a step that parked itself (StepParked) resumes as a new attempt: the old one ends here
            out.append(self._close_attempt(key, e.ts, "unset", None, {"agentrt.attempt.outcome": "parked"}))
        self._steps.setdefault(key, e.ts)
        scheduled = self._retry_at.pop(key, None)
        retry = scheduled is not None
        if scheduled is None:
            scheduled = self.last_progress if self.last_progress is not None else e.ts
        delay = max(0.0, e.ts - scheduled)
        attrs = self._step_attrs(*key)
        attrs["agentrt.step.attempt"] = number
        attrs["agentrt.queue.delay_ms"] = round(delay * 1000, 3)
        if "inputs" in e.data:
            attrs.update(_shape("agentrt.step.input", e.data.get("inputs")))
        if e.data.get("key"):
            attrs["agentrt.idempotency_key"] = e.data["key"]
        self._attempts[key] = _Attempt(number, e.ts, attrs)
        self.counters["attempts"] += 1
        if delay >= (QUEUE_SPAN_MIN if retry else READY_SPAN_MIN):
            out.append(self._span(span_id_for("queued", self.run_id, key[0], key[1], number),
                                  self._step_id(*key), "queued", min(scheduled, e.ts), e.ts,
                                  attributes={**self._step_attrs(*key), "agentrt.step.attempt": number,
                                              "agentrt.queue.reason": "retry" if retry else "ready"}))

    def _close_attempt(self, key: Key, end: float, status: str, message: str | None,
                       extra: dict[str, Any]) -> SpanRecord:
        a = self._attempts.pop(key)
        attrs = {**a.attrs, **self.annotations.pop((key[0], key[1], a.number), {}), **extra}
        span_id = self._attempt_ids.pop((key[0], key[1], a.number), None) or attempt_span_id(
            self.run_id, key[0], key[1], a.number)
        return self._span(span_id, self._step_id(*key),
                          f"{key[0]}{'' if key[1] is None else f'[{key[1]}]'} attempt {a.number}", a.start, end,
                          status=status, status_message=message, attributes=attrs)

    def _close_step(self, key: Key, end: float, status: str, message: str | None,
                    extra: dict[str, Any] | None = None) -> SpanRecord:
        start = self._steps.pop(key, end)
        attrs = {**self._step_attrs(*key), **(extra or {})}
        span_id = self._step_ids.pop(key, None) if key[0] not in self._expanded else None
        return self._span(span_id or step_span_id(self.run_id, *key), self._step_parent(*key),
                          f"step {key[0]}{'' if key[1] is None else f'[{key[1]}]'}", start, end,
                          status=status, status_message=message, attributes=attrs)

    def _close_wait(self, key: Key, end: float, extra: dict[str, Any], status: str = "unset") -> SpanRecord:
        w = self._waits.pop(key)
        return self._span(w.span_id, w.parent_id, WAIT_NAMES.get(w.reason, f"wait: {w.reason}"), w.start, end,
                          status=status, attributes={**w.attrs, **extra})

    # -- the fold ----------------------------------------------------------------------------
    def feed(self, e: ev.Event) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        if e.seq:
            self.last_seq = max(self.last_seq, e.seq)
        t = e.type
        if t == ev.RUN_CREATED:
            self.created = e.ts
            self.last_progress = e.ts
            self.workflow = e.data.get("workflow") or self.workflow
            return out
        if self.picked_up is None:
            self.picked_up = e.ts
            self.last_progress = e.ts  # a step's own queue delay starts when a worker has the run
            if self.created is not None and e.ts - self.created >= QUEUE_SPAN_MIN:
                out.append(self._span(span_id_for("queued", self.run_id), self.root_id, "queued", self.created,
                                      e.ts, attributes={"agentrt.queue.reason": "run"}))
        key: Key = (e.step_id or "", e.item)
        if t == ev.STEP_STARTED:
            if key in self._waits:  # a throttled step starts again (the same attempt): its wait ends here
                out.append(self._close_wait(key, e.ts, {}))
            self._open_attempt(e, key, out)
        elif t == ev.STEP_WAITING:
            reason = str(e.data.get("reason") or "wait")
            if reason == "uncertain":
                if key in self._attempts:
                    self.counters["crashed"] += 1
                    out.append(self._close_attempt(key, e.ts, "error", "worker lost during attempt",
                                                   {"agentrt.attempt.crashed": True,
                                                    "agentrt.attempt.outcome": "crashed"}))
                parent = self._step_id(*key)
            else:
                self._open_attempt(e, key, out)
                parent = self._attempt_id(key[0], key[1], e.attempt or 1)
            attrs = {**self._step_attrs(*key), "agentrt.wait.reason": reason}
            if e.data.get("task_id"):
                attrs["agentrt.task.id"] = str(e.data["task_id"])
            if e.data.get("child_run_id"):
                attrs["agentrt.child.run_id"] = str(e.data["child_run_id"])
            if e.data.get("prompt") is not None:
                attrs["agentrt.approval.prompt.size"] = len(str(e.data["prompt"]))
            if e.data.get("limit"):  # throttled (a step throttled twice in one attempt: two spans, by seq)
                attrs["agentrt.limit.name"] = str(e.data["limit"])
            if key in self._waits:
                out.append(self._close_wait(key, e.ts, {}))
            self._waits[key] = _Wait(reason, e.ts, parent,
                                     span_id_for("wait", self.run_id, key[0], key[1], e.attempt, reason,
                                                 *((e.seq,) if reason == "throttled" else ())), attrs)
        elif t in (ev.TASK_DECIDED, ev.CHILD_FINISHED):
            self.last_progress = e.ts
            if key in self._waits:
                extra: dict[str, Any] = {"agentrt.wait.outcome": str(e.data.get("status") or "")}
                if e.data.get("by"):
                    extra["agentrt.decided_by"] = str(e.data["by"])
                if e.data.get("action"):
                    extra["agentrt.decision.action"] = str(e.data["action"])
                rejected = e.data.get("status") in ("rejected", "failed", "cancelled")
                out.append(self._close_wait(key, e.ts, extra))
                if rejected:
                    out[-1].attributes["agentrt.wait.rejected"] = True
        elif t == ev.STEP_EXPANDED:
            self._expanded.add(key[0])
            self._steps.setdefault((key[0], None), e.ts)
        elif t == ev.STEP_SKIPPED:
            self.last_progress = e.ts
            self._steps.setdefault(key, e.ts)
            out.append(self._close_step(key, e.ts, "unset", None,
                                        {"agentrt.step.status": "skipped",
                                         "agentrt.step.skip_reason": str(e.data.get("reason") or "")[:ERROR_CHARS]}))
        elif t == ev.STEP_COMPLETED:
            self.last_progress = e.ts
            if key in self._waits:
                out.append(self._close_wait(key, e.ts, {}))
            shape = _shape("agentrt.step.output", e.data.get("output"))
            done = self._attempts.get(key)  # the attempt that completed the step: its figures are the step's too
            shape.update(self.annotations.pop((key[0], key[1], done.number), {}) if done is not None else {})
            if key in self._attempts:
                out.append(self._close_attempt(key, e.ts, "ok", None, {**shape, "agentrt.attempt.outcome": "ok"}))
            out.append(self._close_step(key, e.ts, "ok", None, {**shape, "agentrt.step.status": "completed"}))
        elif t == ev.STEP_FAILED:
            self.last_progress = e.ts
            error = str(e.data.get("error") or "")[:ERROR_CHARS]
            crashed, cancelled = bool(e.data.get("crashed")), bool(e.data.get("cancelled"))
            final = bool(e.data.get("final", True)) or cancelled
            if key in self._waits:
                out.append(self._close_wait(key, e.ts, {"agentrt.wait.outcome": "cancelled" if cancelled else
                                                        "failed"}))
            if key in self._attempts:
                outcome = ("crashed" if crashed else "cancelled" if cancelled
                           else "interrupted" if e.data.get("interrupted") else "failed")
                extra = {"agentrt.attempt.outcome": outcome, "agentrt.attempt.retryable": bool(e.data.get("retryable")),
                         "agentrt.attempt.final": final}
                if crashed:
                    extra["agentrt.attempt.crashed"] = True
                    self.counters["crashed"] += 1
                out.append(self._close_attempt(key, e.ts, "error", error, extra))
            if final:
                out.append(self._close_step(key, e.ts, "error", error,
                                            {"agentrt.step.status": "cancelled" if cancelled else "failed"}))
            else:
                self.counters["retries"] += 1
                retry_at = e.data.get("retry_at")
                self._retry_at[key] = float(retry_at) if isinstance(retry_at, int | float) else e.ts
        elif t == ev.RUN_RESUMED:
            self.resumes += 1
            self._run_events.append(("run.resumed", e.ts, {
                "agentrt.worker": str(e.data.get("worker") or ""),
                "agentrt.previous_owner": str(e.data.get("previous_owner") or ""),
                "agentrt.orphans": int(e.data.get("orphans") or 0)}))
        elif t in ev.RUN_TERMINAL_EVENTS:
            out.extend(self._finish(e))
        return out

    def _finish(self, e: ev.Event) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        status_name = {ev.RUN_COMPLETED: "completed", ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}[e.type]
        for key in list(self._waits):
            out.append(self._close_wait(key, e.ts, {"agentrt.wait.outcome": "abandoned"}))
        for key in list(self._attempts):
            out.append(self._close_attempt(key, e.ts, "error", f"run {status_name}",
                                           {"agentrt.attempt.outcome": "abandoned"}))
        for key in sorted(self._steps, key=lambda k: (k[1] is None, k[0], k[1] or 0)):
            out.append(self._close_step(key, e.ts, "error" if status_name != "completed" else "unset",
                                        None, {"agentrt.step.status": "abandoned"}))
        error = e.data.get("error") or e.data.get("reason")
        attrs: dict[str, Any] = {"agentrt.run.status": status_name, "agentrt.run.resumes": self.resumes,
                                 "agentrt.run.attempts": self.counters["attempts"],
                                 "agentrt.run.retries": self.counters["retries"]}
        if self.created is not None and self.picked_up is not None:
            attrs["agentrt.queue.delay_ms"] = round(max(0.0, self.picked_up - self.created) * 1000, 3)
        if e.type == ev.RUN_COMPLETED:
            attrs.update(_shape("agentrt.run.output", e.data.get("output")))
        start = self.created if self.created is not None else e.ts
        out.append(self._span(self.root_id, self.parent.span_id if self.parent else None,
                              f"run {self.workflow}".strip(), start, e.ts,
                              status="ok" if status_name == "completed" else "error",
                              status_message=None if error is None else str(error)[:ERROR_CHARS],
                              attributes=attrs, events=list(self._run_events), kind="internal"))
        self.finished = True
        return out

    def feed_all(self, events: Iterable[ev.Event]) -> list[SpanRecord]:
        out: list[SpanRecord] = []
        for e in events:
            out.extend(self.feed(e))
        return out

    def open_spans(self, now: float) -> list[SpanRecord]:
        """Spans not finished yet, ended at `now` and marked in progress (for exports of live runs)."""
        if self.finished:
            return []
        out: list[SpanRecord] = []
        for w in self._waits.values():
            out.append(self._span(w.span_id, w.parent_id, WAIT_NAMES.get(w.reason, w.reason), w.start, now,
                                  attributes={**w.attrs, "agentrt.in_progress": True}))
        for key, a in self._attempts.items():
            out.append(self._span(self._attempt_id(key[0], key[1], a.number),
                                  self._step_id(*key), f"{key[0]} attempt {a.number}", a.start, now,
                                  attributes={**a.attrs, "agentrt.in_progress": True}))
        for key, start in self._steps.items():
            out.append(self._span(self._step_id(*key), self._step_parent(*key),
                                  f"step {key[0]}{'' if key[1] is None else f'[{key[1]}]'}", start, now,
                                  attributes={**self._step_attrs(*key), "agentrt.in_progress": True}))
        out.append(self._span(self.root_id, self.parent.span_id if self.parent else None,
                              f"run {self.workflow}".strip(), self.created or now, now,
                              attributes={"agentrt.in_progress": True}, events=list(self._run_events)))
        return out
