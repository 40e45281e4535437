"""RunActor: drives one leased run: decide, commit, execute, repeat; parks when it must wait.

Ordering guarantee: the events that start a step are committed together with the completion of the
steps it depends on, and a step's executor is launched only after that commit succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from worker import faults
from worker import runlog as ev
from worker.definitions.model import Definition
from worker.engine.attempt import Outcome, RunLease, run_attempt
from worker.engine.commands import (
    Decision,
    FailRun,
    Start,
    TimeoutTask,
    TimeoutWait,
)
from worker.engine.committing import publish_commit, seal_for_storage, stop_flights
from worker.engine.host import ActorHost
from worker.engine.outcomes import command_event, record_outcome
from worker.engine.parking import (
    interrupted_events,
    orphan_events,
    run_update,
    signal_events,
)
from worker.engine.scheduler import decide, expression_context
from worker.engine.starting import plan_start
from worker.engine.state import Instance, InstanceKey, RunState
from worker.errors import LeaseLost
from worker.models import StepStatus
from worker.secrets.transit import open_fields
from worker.store import runs as store
from worker.store import waits as wait_store
from worker.store.writer import Append, NewChild, NewTask, NewWait, RunUpdate

logger = logging.getLogger(__name__)

_SLOW_DECIDE_S = 0.005
"""An inline decide slower than this moves the run's later decisions off the event loop."""


class _HandBack(Exception):
    """Raised inside the actor when the worker stops: drop the lease so another worker takes over."""



class RunActor:
    """Owns one run while this worker holds its lease."""

    def __init__(self, service: ActorHost, lease: store.Lease) -> None:
        self.service = service
        self.lease = lease
        self.run_id = lease.run_id
        self.state = RunState(run_id=lease.run_id)
        self.defn: Definition | None = None
        self.log = logging.LoggerAdapter(logger, {"run_id": self.run_id})
        self._wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._signalled = False
        self._lost = False
        self._stopping = False
        self._running: dict[InstanceKey, asyncio.Task[Outcome]] = {}
        self._pending: list[ev.Event] = []
        self._tasks: list[NewTask] = []
        self._children: list[NewChild] = []
        self._waits: list[NewWait] = []
        self._cancel_tasks = False
        self._seen_signal_version = lease.signal_version
        self._to_launch: list[tuple[Start, Instance]] = []
        self._parent: str | None = None
        self._encrypt = False
        self._slow_decide = False
        self.acquired_at = time.monotonic()

    # -- called by the service -------------------------------------------------------------
    def notify(self) -> None:
        """Something changed outside (approval, cancel, child finished): look at signals again."""
        self._signalled = True
        if not self._wake.done():
            self._wake.set_result(None)

    def shutdown(self) -> None:
        """The worker is stopping: hand the run back as soon as no step is executing."""
        self._stopping = True
        if not self._wake.done():
            self._wake.set_result(None)

    def lose(self) -> None:
        """The lease is gone (another worker took the run): stop without committing anything."""
        self._lost = True
        if not self._wake.done():
            self._wake.set_result(None)

    # -- event helpers ---------------------------------------------------------------------
    def _emit(self, type_: str, *, step_id: str | None = None, item: int | None = None,
              attempt: int | None = None, **data: Any) -> ev.Event:
        seq = self.state.last_seq + 1
        event = ev.Event(type=type_, ts=time.time(), step_id=step_id, item=item, attempt=attempt, data=data, seq=seq)
        self.state.apply(event)
        self._pending.append(event)
        return event

    def _update(self) -> RunUpdate:
        return run_update(self.state, self.defn)

    async def _commit(self) -> None:
        if not self._pending and not self._tasks and not self._children and not self._waits and not self._cancel_tasks:
            return
        if self._lost:
            raise LeaseLost(self.run_id)
        signal_parent = None
        if self.state.terminal and self._parent is not None:
            signal_parent = self._parent
        events, children = self._pending, self._children
        stored, update = events, self._update()
        if self._encrypt:  # what is stored is ciphertext
            stored = await seal_for_storage(self.service.cipher, events, update, children)
        append = Append(self.run_id, self.lease.epoch, stored, update, self._tasks, self._children, self._waits,
                        self._cancel_tasks, signal_parent)
        append.notices = self.service.notices.for_commit(self.state, events, append.tasks, self.lease.workflow)
        self._pending, self._tasks, self._children, self._waits, self._cancel_tasks = [], [], [], [], False
        ok = await self.service.writer.append(append)
        if not ok:
            raise LeaseLost(self.run_id)
        if append.notices:
            self.service.notices.wake()  # this worker delivers them at once (worker/notify)
        self.service.telemetry.committed(self.run_id, self.defn.name if self.defn else "", events)
        publish_commit(self.service.publisher, self.run_id, events, append.update, children,
                       finished=self.state.terminal, signal_parent=signal_parent)

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._drive()
        except LeaseLost:
            self.log.warning("run %s: lease lost to another worker; stopping without committing", self.run_id)
        except _HandBack:
            self.log.info("run %s handed back (worker stopping)", self.run_id)
            await self._abandon()
            self.service.publisher.enqueue(self.run_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the run is resumed from Postgres by whoever leases it next
            self.log.warning("run %s: interrupted (%s: %s); it resumes from its last commit",
                             self.run_id, type(exc).__name__, exc)
            await self._abandon()
        finally:
            for task in self._running.values():
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _abandon(self) -> None:
        try:
            await store.drop_lease(self.service.pool, self.run_id, self.service.settings.worker_id, self.lease.epoch)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            self.log.debug("could not drop lease of %s; it will expire", self.run_id)

    async def _drive(self) -> None:
        svc = self.service
        events = await store.load_events(svc.pool, self.run_id, self.lease.history_at)
        await open_fields(svc.cipher, [e.data for e in events])  # encrypted payloads: plaintext in memory only
        self.state = RunState.from_events(self.run_id, events)
        self._parent = self.lease.parent_run_id
        try:
            self.defn = await svc.definitions.get(self.lease.def_hash)
        except Exception as exc:  # noqa: BLE001
            self._emit(ev.RUN_FAILED, error=f"cannot load workflow version {self.lease.def_hash[:12]}: {exc}")
            await self._commit()
            return
        self._encrypt = svc.settings.encrypt_payloads or self.defn.spec.encrypt_payloads
        self._recover()
        if (self.lease.cancel_requested or self.lease.paused or self.state.paused is not None
                or self.state.waiting_instances()):
            await self._absorb_signals()
        horizon = min(5.0, svc.settings.lease_ttl / 2)
        while True:
            if self._stopping:
                # draining: record what finishes, start nothing new, hand back when idle
                await self._commit()
                if not self._running:
                    raise _HandBack
                await self._wait(None)
                continue
            if self.state.paused is not None:
                if await self._hold_paused():
                    return
                continue
            wake_at, timeouts = await self._advance()
            await self._commit()
            if self.state.terminal:
                self.log.info("run %s %s", self.run_id, self.state.status.value)
                return
            self._launch()
            if timeouts:
                for cmd in timeouts:
                    if isinstance(cmd, TimeoutWait):
                        # closed here, or by an event that got there first: either way the signals say which
                        await wait_store.time_out(svc.pool, self.run_id, cmd.step_id, cmd.item)
                    elif await store.timeout_task(svc.pool, cmd.task_id) == "escalated":
                        self._emit(ev.TASK_ESCALATED, step_id=cmd.step_id, item=cmd.item, task_id=cmd.task_id)
                await self._absorb_signals()
                continue
            if self._stopping and not self._running:
                raise _HandBack
            if not self._running:
                now = time.time()
                if wake_at is None or wake_at - now > horizon:
                    if await store.release_lease(svc.pool, self.run_id, svc.settings.worker_id, self.lease.epoch,
                                                 seen_signal_version=self._seen_signal_version, wake_at=wake_at):
                        self.log.info("run %s parked (%s)", self.run_id, self._update().waiting_on)
                        return
                    await self._absorb_signals()
                    continue
            await self._wait(wake_at)

    async def _hold_paused(self) -> bool:
        """Paused: record what finishes, start nothing; once idle, park as `paused` (True: parked)."""
        await self._commit()
        if self._running:
            await self._wait(None)
            return False
        if await store.release_lease(self.service.pool, self.run_id, self.service.settings.worker_id,
                                     self.lease.epoch, seen_signal_version=self._seen_signal_version, wake_at=None):
            self.log.info("run %s paused by %s", self.run_id, (self.state.paused or {}).get("by"))
            return True
        await self._absorb_signals()
        return False

    def _recover(self) -> None:
        """After a takeover: attempts that were in flight on the lost worker."""
        assert self.defn is not None
        found = orphan_events(self.defn, self.state, now=time.time(), worker=self.service.settings.worker_id,
                              epoch=self.lease.epoch, previous_owner=self.lease.previous_owner)
        for signal in found.events:
            self._emit(signal.type, step_id=signal.step_id, item=signal.item, attempt=signal.attempt, **signal.data)
        self._tasks.extend(found.tasks)

    async def _decide(self, now: float) -> Decision:
        """`decide`, off the event loop when the workflow's expressions can do real work.

        Light definitions are decided inline (no thread hop on the hot path); one that turns out slow
        anyway (large data through light expressions) is decided in the service's expression threads
        from then on. While decide runs in a thread this actor awaits it, so nothing mutates its state.
        """
        assert self.defn is not None
        if self.defn.heavy_expressions or self._slow_decide:
            return await self.service.off_loop(decide, self.defn, self.state, now)
        started = time.perf_counter()
        decision = decide(self.defn, self.state, now)
        if time.perf_counter() - started > _SLOW_DECIDE_S:
            self._slow_decide = True
        return decision

    async def _advance(self) -> tuple[float | None, list[TimeoutTask | TimeoutWait]]:
        """Apply decisions until only starts (or nothing) remain."""
        assert self.defn is not None
        while True:
            now = time.time()
            decision = await self._decide(now)
            progressed = False
            timeouts: list[TimeoutTask | TimeoutWait] = []
            for cmd in decision.commands:
                if isinstance(cmd, TimeoutTask | TimeoutWait):
                    timeouts.append(cmd)
                    continue
                if isinstance(cmd, Start):
                    self._start(cmd, now)
                    # A start unlocks nothing new, unless its arguments were refused on the spot, or it
                    # parked (sleep, approval deadline): then decide again to learn when to wake up.
                    inst = self.state.instances.get((cmd.step_id, cmd.item))
                    progressed = progressed or (inst is not None and inst.status in (StepStatus.FAILED,
                                                                                     StepStatus.WAITING))
                    continue
                progressed = True
                if isinstance(cmd, FailRun):
                    self._fail_run(cmd)
                elif (found := command_event(cmd, self.state)) is not None:
                    self._emit(found.type, step_id=found.step_id, item=found.item, attempt=found.attempt,
                               **found.data)
            if not progressed or self.state.terminal:
                return decision.wake_at, timeouts

    def _fail_run(self, cmd: FailRun) -> None:
        for key, task in list(self._running.items()):
            task.cancel()
            inst = self.state.instances[key]
            self._emit(ev.STEP_FAILED, step_id=inst.step_id, item=inst.item, attempt=inst.attempt,
                       error="cancelled: the run failed", cancelled=True, final=True)
        self._cancel_tasks = True
        self._emit(ev.RUN_FAILED, error=cmd.error, step_id=cmd.step_id)

    def _start(self, cmd: Start, now: float) -> None:
        """Park it, launch it after the commit, or refuse it (worker/engine/starting.py)."""
        assert self.defn is not None
        plan = plan_start(self.defn, cmd, run_id=self.run_id, now=now,
                          event_lookback=self.service.settings.event_lookback)
        if plan.task is not None:
            self._tasks.append(plan.task)
        if plan.wait is not None:
            self._waits.append(plan.wait)
        if plan.launch:
            self._to_launch.append((cmd, self.state.instance(cmd.step_id, cmd.item)))
        for type_, data in plan.events:
            self._emit(type_, step_id=cmd.step_id, item=cmd.item, attempt=cmd.attempt, **data)

    def _launch(self) -> None:
        launch, self._to_launch = self._to_launch, []
        for cmd, inst in launch:
            key = (cmd.step_id, cmd.item)
            self._running[key] = asyncio.create_task(self._execute(cmd, inst), name=f"{self.run_id}:{key}")

    async def _execute(self, cmd: Start, inst: Instance) -> Outcome:
        assert self.defn is not None
        defn = self.defn
        run = RunLease(self.run_id, self.lease.epoch, self._encrypt, self.lose, self.log, self.lease.priority)
        return await run_attempt(self.service, defn, run, cmd, lambda: expression_context(defn, self.state))

    async def _wait(self, wake_at: float | None) -> None:
        timeout = None if wake_at is None else max(0.0, wake_at - time.time())
        if not self._wake.done():
            waiters: set[asyncio.Future[Any]] = set(self._running.values())
            waiters.add(self._wake)
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._lost:
            raise LeaseLost(self.run_id)
        for key, task in list(self._running.items()):
            if task.done():
                del self._running[key]
                faults.reached("after-call-before-commit")
                self._record(task.result())
        if self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        if self._signalled:
            self._signalled = False
            await self._absorb_signals()

    def _record(self, outcome: Outcome) -> None:
        """What the attempt ended with (worker/engine/outcomes.py), recorded with its task or child run."""
        assert self.defn is not None
        found = record_outcome(self.defn, self.state, self.run_id, outcome, now=time.time(), rand=random.random())
        if found.task is not None:
            self._tasks.append(found.task)
        if found.child is not None:
            self._children.append(found.child)
        if found.note is not None:
            self.log.info("%s", found.note)
        e = found.event
        self._emit(e.type, step_id=e.step_id, item=e.item, attempt=e.attempt, **e.data)

    async def _absorb_signals(self) -> None:
        sig = await store.load_signals(self.service.pool, self.run_id)
        self._seen_signal_version = max(self._seen_signal_version, sig.signal_version)
        await open_fields(self.service.cipher, sig.children)
        for signal in signal_events(self.state, sig):
            self._emit(signal.type, step_id=signal.step_id, item=signal.item, attempt=signal.attempt, **signal.data)
            if signal.type == ev.TASK_DECIDED:
                faults.reached("after-decision-before-commit")
            if signal.type == ev.RUN_PAUSED and signal.data.get("now") and self._running:
                await self._interrupt(str(signal.data.get("by")))
        if sig.cancel_requested and not self.state.terminal:
            await self._cancel(sig.cancel_reason)

    async def _interrupt(self, by: str) -> None:
        """`pause --now`: stop the attempts in flight; each is retried on resume (or asks a human)."""
        assert self.defn is not None
        running, self._running = self._running, {}
        cut: list[Instance] = []
        for key, outcome in (await stop_flights(running)).items():
            if outcome is not None:
                self._record(outcome)  # it finished before the interruption reached it
            else:
                cut.append(self.state.instances[key])
        found = interrupted_events(self.defn, self.state, cut, now=time.time(), by=by)
        for signal in found.events:
            self._emit(signal.type, step_id=signal.step_id, item=signal.item, attempt=signal.attempt, **signal.data)
        self._tasks.extend(found.tasks)

    async def _cancel(self, reason: str | None) -> None:
        await stop_flights(self._running)
        for (step_id, item), _task in list(self._running.items()):
            inst = self.state.instances[(step_id, item)]
            self._emit(ev.STEP_FAILED, step_id=step_id, item=item, attempt=inst.attempt,
                       error="cancelled", cancelled=True, final=True)
        self._running.clear()
        self._to_launch.clear()
        self._cancel_tasks = True
        self._emit(ev.RUN_CANCELLED, reason=reason or "cancelled")

