"""`Notifier`: the worker's side of notifications. Every worker runs one.

- `for_commit`: the outbox rows a run commit causes (called by the run actor; the writer commits them with the
  commit's events: worker/store/writer.py). Costs a set lookup per event when nothing is routed.
- `dispatch_loop`: claims due rows (FOR UPDATE SKIP LOCKED, a claim that expires), POSTs them (wire.py),
  records delivered, or the error and when to try again (exponential backoff with jitter, Retry-After honoured,
  at most `retry.max_interval`), until `give_up_after`: then the row is failed, with its last error. A commit made
  by this worker wakes the loop at once; rows of other workers and retries are found by polling.
- `scan_loop`: `task.expiring`: pending tasks whose deadline is `expiring_before` away, once each.

Egress: the notify URLs are the operator's (notify.yaml, or the operator's Vault path), so deliveries are not
subject to the egress policy that governs what workflow files cause (AGENTRT_HTTP_ALLOWED_HOSTS,
AGENTRT_EGRESS_ALLOWED_HOSTS): a receiver on a private network or on loopback is allowed. Redirects are not
followed, and no proxy variable or ~/.netrc applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from worker import runlog as ev
from worker.config import Settings
from worker.engine.state import RunState
from worker.notify import outbox
from worker.notify.config import OperatorNotify
from worker.notify.credentials import TargetSecrets, TargetUnavailable
from worker.notify.notices import commit_rows, expiring_rows
from worker.notify.outbox import Claimed, OutboxRow
from worker.notify.payloads import render
from worker.notify.wire import PostClient, WireError
from worker.secrets.redact import Redactor
from worker.steps.http_wire import parse_retry_after
from worker.store.writer import NewTask

logger = logging.getLogger(__name__)

PARALLEL = 16
"""Deliveries one worker has in flight at once."""
CLAIM_BATCH = PARALLEL // 4
"""While deliveries are in flight, claim again only once this many slots are free (fewer claim transactions)."""
CLAIM_MARGIN_S = 2.0
"""A claim lasts the target's timeout plus this: then the row is due again for any worker."""
_COMMIT_TYPES = frozenset({ev.TASK_ESCALATED, ev.RUN_FAILED, ev.RUN_RESUMED})


class Notifier:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, secrets: Any, stopping: asyncio.Event) -> None:
        """`secrets`: the worker's SecretProvider (its Vault session is reused: one login per worker)."""
        self.settings = settings
        self.pool = pool
        self.config = OperatorNotify(settings)
        self.credentials = TargetSecrets(settings, getattr(secrets, "session", None), getattr(secrets, "active", None))
        self._stopping = stopping
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._http = PostClient(keep_per_origin=PARALLEL)
        self._marks: list[tuple[Claimed, int]] = []  # delivered, not yet recorded (one statement for many)
        self._marker: asyncio.Task[None] | None = None

    # -- the commit path ----------------------------------------------------------------------
    def for_commit(self, state: RunState, events: Sequence[ev.Event], tasks: Sequence[NewTask],
                   workflow: str) -> list[OutboxRow]:
        """The rows to commit with these events and tasks (plaintext); [] when the notify file routes none."""
        if not tasks and not any(e.type in _COMMIT_TYPES for e in events):
            return []
        spec = self.config.current()
        if not spec.routes:
            return []
        try:
            return commit_rows(self.config.routed, state, events, tasks, workflow=state.workflow or workflow,
                               now=time.time(), give_up=spec.give_up_after, lost_delay=self.settings.lease_ttl)
        except Exception:  # a notification must never stop a run from committing (logged with its traceback)
            logger.exception("run %s: could not build its notifications; the commit goes on without them",
                             state.run_id)
            return []

    def wake(self) -> None:
        """Rows were committed: look for due rows now."""
        self._wake.set()

    # -- delivery -------------------------------------------------------------------------------
    async def dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            spec = self.config.current()
            self._wake.clear()
            free = PARALLEL - len(self._inflight)
            if free >= CLAIM_BATCH or not self._inflight:
                hold = max((t.timeout for t in spec.targets.values()), default=10.0) + CLAIM_MARGIN_S
                for claimed in await outbox.claim(self.pool, self.settings.worker_id, limit=free, hold=hold):
                    task = asyncio.create_task(self._deliver(claimed), name=f"notify:{claimed.notification_id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
            poll = min(1.0, spec.retry.initial_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def _deliver(self, c: Claimed) -> None:
        spec = self.config.current()
        target = spec.targets.get(c.target)
        status: int | None = None
        retry_after: float | None = None
        redact: Redactor | None = None
        try:
            if target is None:
                raise TargetUnavailable(f"target {c.target!r} is not in the notify file (any more)")
            creds = await self.credentials.get(c.target, target)
            redact = Redactor({"target": {"url": creds.url, "secret": creds.signing_secret or ""}})
            data, headers = render(c.notification_id, c.kind, c.body, fmt=target.format, secret=creds.signing_secret,
                                   attempt=c.attempts, extra_headers=dict(target.headers))
            response = await self._http.post(creds.url, data, headers, within=target.timeout)
            status = response.status
            if 200 <= status < 300:
                self._delivered(c, status)
                logger.info("notification %s (%s) delivered to %s (attempt %d)", c.notification_id, c.kind,
                            c.target, c.attempts)
                return
            error = f"HTTP {status} from the receiver"
            if 300 <= status < 400:
                error += " (redirects are not followed)"
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        except TargetUnavailable as exc:
            error = str(exc)
        except WireError as exc:
            error = str(exc) if redact is None else str(redact(str(exc)))
        except asyncio.CancelledError:
            raise  # the worker is stopping: the claim runs out and another worker delivers it
        except Exception as exc:  # one bad delivery must not stop the others (logged with its traceback)
            logger.exception("notification %s: delivery failed", c.notification_id)
            error = f"{type(exc).__name__} while delivering"
        await self._failed(c, error, status, retry_after)

    def _delivered(self, c: Claimed, status: int) -> None:
        """Record it delivered (batched with the others delivered meanwhile; the slot is free at once)."""
        self._marks.append((c, status))
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._record_marks(), name="notify-marks")

    async def _record_marks(self) -> None:
        while self._marks:
            done, self._marks = self._marks, []
            try:
                await outbox.delivered(self.pool, done)
            except Exception as exc:  # noqa: BLE001 - their claims run out: they are sent again (at least once)
                logger.warning("could not record %d delivered notification(s) (%s); they will be sent again",
                               len(done), exc)

    async def _failed(self, c: Claimed, error: str, status: int | None, retry_after: float | None) -> None:
        retry = self.config.current().retry
        backoff = min(retry.max_interval, retry.initial_interval * 2 ** min(c.attempts - 1, 30))
        backoff *= random.uniform(0.8, 1.2)  # jitter: workers retrying one receiver spread out
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, retry.max_interval))
        try:
            state = await outbox.failed(self.pool, self.settings.worker_id, c, error=error, status=status,
                                        retry_in=backoff)
        except Exception as exc:  # noqa: BLE001 - the claim runs out; the row is tried again
            logger.warning("notification %s: could not record the failed attempt (%s)", c.notification_id, exc)
            return
        if state == "failed":
            logger.error("notification %s (%s) to %s: gave up after %d attempt(s): %s", c.notification_id, c.kind,
                         c.target, c.attempts, error)
        else:
            logger.warning("notification %s (%s) to %s: attempt %d failed (%s); next in %.1fs", c.notification_id,
                           c.kind, c.target, c.attempts, error, backoff)

    # -- task.expiring --------------------------------------------------------------------------
    async def scan_loop(self) -> None:
        while not self._stopping.is_set():
            spec = self.config.current()
            if any("task.expiring" in route.kinds for route in spec.routes):
                async with self.pool.acquire() as conn, conn.transaction():
                    due = await outbox.mark_expiring_txn(conn, spec.expiring_before)
                    rows = expiring_rows(self.config.routed, due, now=time.time(), give_up=spec.give_up_after)
                    await outbox.insert_txn(conn, rows)
                if rows:
                    self.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.reconcile_interval)

    async def aclose(self) -> None:
        """Stop delivering: attempts in flight are dropped (their claims run out; another worker retries them)."""
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._marker is not None:
            await asyncio.gather(self._marker, return_exceptions=True)
        await self._http.aclose()
