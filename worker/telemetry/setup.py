"""RuntimeTelemetry: spans, span store, step logs and metrics, all derived off the hot path.

`committed()` only appends to a bounded queue. A background task (in the worker's loop) folds the
events into per-run `RunTracer`s, hands finished spans to the OTLP batch processor (only when an
endpoint is configured), writes them to Postgres in batches (one statement per flush), announces
them on the live event stream, writes captured step log lines, records metrics and prunes old rows.
It uses a small pool and Redis connection of its own, so it never competes with the engine's.

A run this process has not seen yet (picked up after another worker, after a park, or new) is
bootstrapped from Postgres: its stored `traceparent`, the kinds of its steps, and its earlier events
(folded without exporting, so a resumed run continues the same trace with the same span ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import orjson

from worker.config import Settings
from worker.runlog import Event
from worker.store.pool import jsonb_text
from worker.telemetry import logging as tlog
from worker.telemetry.config import TelemetryConfig
from worker.telemetry.current import current, enter_step, set_current
from worker.telemetry.export import Tracing
from worker.telemetry.ids import TraceContext, attempt_span_id, parse_traceparent
from worker.telemetry.metrics import Metrics, build_metrics
from worker.telemetry.spans import RunTracer, SpanRecord

logger = logging.getLogger(__name__)

QUEUE_MAX = 100_000  # commits waiting to be traced; beyond that they are dropped (counted, warned)
STORE_BUFFER_MAX = 100_000  # spans waiting for Postgres
TRACKERS_MAX = 20_000  # runs kept in memory (parked runs are evicted first; re-bootstrapped if needed)
LIVE_SPANS_PER_EVENT = 200


class RuntimeTelemetry:
    """The worker's Telemetry implementation (see `worker.telemetry.Telemetry`)."""

    def __init__(self, settings: Settings, config: TelemetryConfig) -> None:
        self.settings = settings
        self.config = config
        self._queue: deque[tuple[str, str, Sequence[Event]]] = deque()
        self._store: deque[SpanRecord] = deque()
        self._trackers: OrderedDict[str, RunTracer] = OrderedDict()
        self._pending: dict[str, asyncio.Future[None]] = {}  # runs waiting for their bootstrap
        self._kinds: dict[str, dict[str, str]] = {}
        self._early_annotations: dict[str, dict[tuple[str, int | None, int], dict[str, Any]]] = {}
        self.dropped_commits = 0
        self.dropped_spans = 0
        self._last_warning = 0.0
        self._closing = False
        self._wake = asyncio.Event()
        self.tracing = Tracing(self._store_live if config.store_spans else None)
        self.metrics: Metrics | None = build_metrics(self.tracing.resource)
        if self.metrics is not None:
            self.metrics.spans_dropped = lambda: (self.dropped_spans + self.dropped_commits
                                                  + self.capture.dropped)
        self.capture = tlog.StepLogCapture()
        logging.getLogger().addHandler(self.capture)
        tlog.install_redaction_filters()
        self._pool: Any = None
        self._redis: Any = None
        self._publisher: Any = None
        set_current(self)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="telemetry")

    # -- the engine's hooks (hot path: keep these cheap) -------------------------------------
    def committed(self, run_id: str, workflow: str, events: Sequence[Event]) -> None:
        if not events:
            return
        if len(self._queue) >= QUEUE_MAX:
            self.dropped_commits += 1
            self._warn("telemetry queue full: %d commits not traced", self.dropped_commits)
            return
        self._queue.append((run_id, workflow, events))
        if run_id not in self._trackers and run_id not in self._pending:
            self._pending[run_id] = asyncio.get_running_loop().create_future()
            self._wake.set()  # bootstrap at once: an executor may be waiting for this run's trace id

    def traceparent(self, run_id: str, step_id: str, item: int | None, attempt: int, *,
                    in_process: bool = True) -> str | None:
        tracker = self._trackers.get(run_id)
        if tracker is not None:
            ctx = tracker.context_of(step_id, item, attempt)
        else:  # not bootstrapped yet: provisional (`resolve_traceparent` corrects a caller's trace id)
            ctx = TraceContext(uuid.UUID(run_id).int, attempt_span_id(run_id, step_id, item, attempt))
        enter_step(run_id, step_id, item, attempt, ctx, otel=in_process)
        return ctx.header()

    def annotate_attempt(self, run_id: str, step_id: str, item: int | None, attempt: int,
                         attributes: dict[str, Any]) -> None:
        """Figures an executor measured during an attempt (an LLM call's time to first token, its output rate):
        the attempt's span, and the step's if that attempt completes it, carry them. Never payloads."""
        tracker = self._trackers.get(run_id)
        if tracker is not None:
            tracker.annotations[(step_id, item, attempt)] = dict(attributes)
            return
        early = self._early_annotations.setdefault(run_id, {})
        early[(step_id, item, attempt)] = dict(attributes)
        while len(self._early_annotations) > TRACKERS_MAX:
            self._early_annotations.pop(next(iter(self._early_annotations)))

    async def resolve_traceparent(self, header: str | None) -> str | None:
        """The final trace context of a provisional header (waits briefly for the run's bootstrap)."""
        ctx = parse_traceparent(header)
        if ctx is None:
            return header
        run_id = str(uuid.UUID(int=ctx.trace_id))
        pending = self._pending.get(run_id)
        if pending is not None:
            try:
                await asyncio.wait_for(asyncio.shield(pending), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                return header
        tracker = self._trackers.get(run_id)
        if tracker is None or (tracker.trace_id == ctx.trace_id and tracker.sampled == ctx.sampled):
            return header
        return TraceContext(tracker.trace_id, ctx.span_id, tracker.sampled).header()

    async def aclose(self) -> None:
        """Drain and stop; every step is bounded so telemetry never holds up a worker's shutdown."""
        self._closing = True
        self._wake.set()
        if not await _bounded(self._task, 10):
            logger.warning("telemetry: pipeline did not drain in time; unsent spans dropped")
        logging.getLogger().removeHandler(self.capture)
        # the batch processor's last export may wait on a dead collector: a daemon thread, not the
        # loop's executor (asyncio.run would wait for that one at exit)
        done = threading.Event()

        def shutdown() -> None:
            self._shutdown_sdk()
            done.set()

        threading.Thread(target=shutdown, name="otel-shutdown", daemon=True).start()
        for _ in range(50):
            if done.is_set():
                break
            await asyncio.sleep(0.1)
        else:
            logger.warning("telemetry: exporter shutdown timed out; unsent spans dropped")
        for closing in (self._publisher.stop() if self._publisher is not None else None,
                        self._redis.aclose() if self._redis is not None else None,
                        self._pool.close() if self._pool is not None else None):
            if closing is not None:
                await _bounded(asyncio.ensure_future(closing), 3)
        if current() is self:
            set_current(None)

    def _shutdown_sdk(self) -> None:
        self.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()

    # -- background --------------------------------------------------------------------------
    def _store_live(self, record: SpanRecord) -> None:
        """From the SDK (any thread): a finished live span (HTTP client, LLM...)."""
        if len(self._store) >= STORE_BUFFER_MAX:
            self.dropped_spans += 1
            return
        self._store.append(record)

    def _warn(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            logger.warning(msg, *args)

    async def _connect(self) -> bool:
        if self._pool is not None:
            return True
        from worker.store.pool import create_pool

        try:
            # spans and step log lines are not decisions: their commits do not wait for the WAL's fsync (a
            # Postgres crash can lose the last fraction of a second of them), so they never queue behind or
            # ahead of the engine's durable commits for the disk
            self._pool = await create_pool(self.settings.database_url, min_size=1, max_size=2,
                                           settings={"synchronous_commit": "off"}, pooler=self.settings.database_pooler)
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            self._warn("telemetry: cannot reach Postgres (%s); spans and step logs wait", exc)
            return False
        if self.config.store_spans:
            from worker.bus.connect import redis_client, redis_keys
            from worker.bus.publisher import Publisher

            self._redis = redis_client(self.settings, socket_timeout=5, socket_connect_timeout=3)
            self._publisher = Publisher(self._redis, redis_keys(self.settings))
            self._publisher.start()
        return True

    async def _loop(self) -> None:
        last_flush = last_prune = last_gauge = time.monotonic()
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.flush_interval)
            self._wake.clear()
            try:
                if not await self._connect():
                    if self._closing:
                        return
                    await asyncio.sleep(1.0)
                    continue
                await self._process()
                now = time.monotonic()
                if self._closing or now - last_flush >= self.config.flush_interval:
                    last_flush = now
                    await self._flush()
                if self.config.store_spans and now - last_prune >= self.config.prune_interval:
                    last_prune = now
                    await self._prune()
                if self.metrics is not None and now - last_gauge >= 15:
                    last_gauge = now
                    self.metrics.pending_approvals = int(await self._pool.fetchval(
                        "SELECT count(*) FROM human_tasks WHERE status = 'pending'") or 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - telemetry never stops the worker
                self._warn("telemetry: %s: %s", type(exc).__name__, exc)
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_result(None)
                self._pending.clear()
                await asyncio.sleep(0.5)
            if self._closing and not self._queue:
                while self._store or self.capture.buffer:  # the last spans and log lines (aclose bounds this)
                    await self._flush()
                return

    async def _process(self) -> None:
        items = list(self._queue)
        self._queue.clear()
        if not items and not self._pending:
            return
        bounds: dict[str, int] = {}
        expect: dict[str, int] = {}
        for run_id, _wf, events in items:
            first = events[0].seq
            tracker = self._trackers.get(run_id)
            if run_id not in expect and tracker is not None:
                expect[run_id] = tracker.last_seq + 1
            if run_id in expect:
                if first and first != expect[run_id] and run_id not in bounds and tracker is not None \
                        and first > expect[run_id]:
                    # another worker committed in between (we lost the run and got it back): start over
                    self._trackers.pop(run_id, None)
                    bounds[run_id] = first
            elif run_id not in bounds:
                bounds[run_id] = first or 1
            expect[run_id] = (events[-1].seq or 0) + 1
        for run_id in self._pending:
            if run_id not in bounds and run_id not in self._trackers:
                bounds[run_id] = 1 << 30  # committed, then dropped from the queue: load what exists
        if bounds:
            await self._bootstrap(bounds)
        for run_id, workflow, events in items:
            tracker = self._trackers.get(run_id)
            if tracker is None:
                tracker = self._new_tracker(run_id, None, workflow, {})
            self._trackers.move_to_end(run_id)
            first_pickup = tracker.picked_up is None and tracker.created is not None
            spans: list[SpanRecord] = []
            for e in events:
                if e.seq and e.seq <= tracker.last_seq:
                    continue  # already folded by the bootstrap
                spans.extend(tracker.feed(e))
            if tracker.finished:
                self._trackers.pop(run_id, None)
                tlog.run_traces.pop(run_id, None)
            if spans:
                if tracker.sampled:
                    self.tracing.export(spans)
                self._keep(tracker, spans)
            if self.metrics is not None:
                self.metrics.record(tracker.workflow or workflow, events, spans, first_pickup)
        while len(self._trackers) > TRACKERS_MAX:
            run_id, _ = self._trackers.popitem(last=False)
            tlog.run_traces.pop(run_id, None)

    def _keep(self, tracker: RunTracer, spans: list[SpanRecord]) -> None:
        if not self.config.store_spans:
            return
        room = self.config.max_spans_per_run - tracker.stored
        if room <= 0:
            self.dropped_spans += len(spans)
            return
        for s in spans[:room]:
            self._store_live(s)
        tracker.stored += min(room, len(spans))

    def _new_tracker(self, run_id: str, traceparent: str | None, workflow: str,
                     kinds: dict[str, str]) -> RunTracer:
        tracker = RunTracer(run_id, traceparent=traceparent, kinds=kinds, workflow=workflow)
        tracker.sampled = self.tracing.is_sampled(tracker.trace_id, tracker.parent)
        tracker.annotations.update(self._early_annotations.pop(run_id, {}))
        self._trackers[run_id] = tracker
        tlog.run_traces[run_id] = f"{tracker.trace_id:032x}"
        return tracker

    async def _bootstrap(self, bounds: dict[str, int]) -> None:
        from worker.store import spans as span_store

        try:
            info = await span_store.load_trace_info(self._pool, list(bounds))
            missing = {i.def_hash for i in info.values()} - set(self._kinds)
            if missing:
                self._kinds.update(await span_store.load_step_kinds(self._pool, list(missing)))
            history = await span_store.load_events_before(self._pool, bounds)
            for run_id in bounds:
                i = info.get(run_id)
                tracker = self._new_tracker(run_id, i.traceparent if i else None, i.workflow if i else "",
                                            self._kinds.get(i.def_hash, {}) if i else {})
                # spans finished before this worker had the run: stored again (idempotent: same ids),
                # in case the worker that finished them died before writing them; never re-exported
                self._keep(tracker, tracker.feed_all(history.get(run_id, [])))
        finally:
            for run_id in bounds:
                fut = self._pending.pop(run_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def _flush(self) -> None:
        from worker.store import spans as span_store

        if self._store:
            batch: list[SpanRecord] = []
            while self._store and len(batch) < 5000:
                batch.append(self._store.popleft())
            by_run: dict[str, list[bytes]] = {}
            for span in batch:  # each span serialized once: for Postgres and the live stream alike
                by_run.setdefault(span.run_id, []).append(orjson.dumps(span.to_row(), option=orjson.OPT_NON_STR_KEYS))
            try:
                await span_store.insert_span_json(self._pool, [(run_id, jsonb_text(b"[" + b",".join(rows) + b"]"))
                                                               for run_id, rows in by_run.items()])
            except Exception as exc:  # noqa: BLE001 - dropped, never retried without bound
                self.dropped_spans += len(batch)
                self._warn("telemetry: %d spans not stored: %s", len(batch), exc)
            else:
                if self._publisher is not None:
                    for run_id, rows in by_run.items():
                        for i in range(0, len(rows), LIVE_SPANS_PER_EVENT):
                            part = orjson.Fragment(b"[" + b",".join(rows[i:i + LIVE_SPANS_PER_EVENT]) + b"]")
                            self._publisher.event("span", "span.finished", run_id, {"spans": part})
        lines = self.capture.drain()
        if lines:
            try:
                await span_store.insert_step_logs(self._pool, lines)
            except Exception as exc:  # noqa: BLE001
                self.capture.dropped += len(lines)
                self._warn("telemetry: %d step log lines not stored: %s", len(lines), exc)

    async def _prune(self) -> None:
        from worker.history.retention import prune_telemetry

        done = await prune_telemetry(self._pool, span_retention_s=self.config.span_retention_s,
                                     log_retention_s=self.config.log_retention_s)
        if done.spans or done.logs or done.dropped:
            logger.info("telemetry: past retention: dropped %s; pruned %d spans and %d step log lines",
                        ", ".join(done.dropped) or "no partition", done.spans, done.logs)


async def _bounded(task: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for `task` at most `seconds`; then cancel it without waiting (a client library may
    swallow cancellation, and `asyncio.wait_for` would then wait forever)."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        return False
    if not task.cancelled() and task.exception() is not None:
        logger.debug("telemetry: shutdown step failed: %r", task.exception())
    return True
