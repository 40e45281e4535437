"""The command log (`L`): what this console session did to the runtime and how each call went, like lazygit's.

`LoggedClient` wraps the client the console uses. Each call that changes the runtime (start, approve, reject,
resolve, replay, retry, cancel, pause, resume, send-event, schedule pause and resume, save view) is recorded in a
`CommandLog` with its time, its target, its reason or arguments, and its result: ok (and what came of it),
skipped (and why), or the error. Reads are not recorded, nor is a replay's dry run. The log lives in memory,
bounded to LOG_SIZE entries, for this session only: the audit log is the durable record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from console.backend import ConsoleClient
from console.formatting import compact_json, describe_error, short_id, truncate
from worker.client.events import EventDelivery
from worker.client.pauses import PauseOutcome
from worker.client.retries import RetryResult, VersionChoice
from worker.client.schedules import ScheduleInfo
from worker.errors import WorkerError
from worker.models import HumanTask, RunId, RunSummary
from worker.search.filters import RunFilter
from worker.search.views import SavedView

LOG_SIZE = 500
"""Entries kept (the oldest go first)."""

Outcome = Literal["ok", "skipped", "error"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    """1 for the session's first action."""
    at: datetime
    action: str
    """`approve`, `pause`, `pause workflow`, `resume schedule`, ..."""
    target: str
    """`run 4f41cccd`, `task 1c0a7e2b`, `workflow refunds`, `event customer.replied key T-42`, ..."""
    detail: str
    """The reason, version, step or data the action was given (may be empty)."""
    outcome: Outcome
    result: str
    """What came of it (`new run 2b9d…`), why it was skipped, or the error."""


class CommandLog:
    """The session's actions, newest last; `subscribe` to hear of each new one."""

    def __init__(self, now: Callable[[], datetime], size: int = LOG_SIZE) -> None:
        self.now = now
        self._entries: deque[LogEntry] = deque(maxlen=size)
        self._listeners: list[Callable[[LogEntry], None]] = []
        self.count = 0
        """Actions recorded this session (also those the bound pushed out)."""

    def add(self, action: str, target: str, detail: str, outcome: Outcome, result: str) -> LogEntry:
        self.count += 1
        entry = LogEntry(self.count, self.now(), action, target, detail, outcome, result)
        self._entries.append(entry)
        for listener in list(self._listeners):
            listener(entry)
        return entry

    @property
    def entries(self) -> list[LogEntry]:
        """Newest first."""
        return list(reversed(self._entries))

    def subscribe(self, listener: Callable[[LogEntry], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[LogEntry], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)


def _ok(_result: object) -> tuple[Outcome, str]:
    return "ok", "ok"


def _run(run_id: str) -> str:
    return f"run {short_id(run_id)}"


def _task(task: HumanTask) -> tuple[Outcome, str]:
    return "ok", f"{task.status.value} · {task.workflow} · step {task.step_id} · run {short_id(task.run_id)}"


def _run_pause(outcome: PauseOutcome) -> tuple[Outcome, str]:
    if outcome.still_paused:
        return "ok", "ok; stays paused with its workflow"
    return "ok", "ok; still finishing its step in flight" if outcome.unsettled else "ok"


def _workflow_pause(outcome: PauseOutcome) -> tuple[Outcome, str]:
    n = len(outcome.runs)
    still = f"; {len(outcome.unsettled)} still finishing a step" if outcome.unsettled else ""
    return "ok", f"{n} unfinished run{'s' if n != 1 else ''}{still}"


def _retry(result: RetryResult) -> tuple[Outcome, str]:
    if result.new_run is None:
        return "skipped", result.skipped or "not retried"
    which = "the current" if result.version == "current" else "its own"
    return "ok", f"new run {short_id(result.new_run)} under {which} version {short_id(result.def_hash)}"


def _delivery(d: EventDelivery) -> tuple[Outcome, str]:
    return "ok", f"resumed {len(d.delivered_to)}, started {len(d.started)}" + (" (replayed)" if d.replayed else "")


def _schedule(s: ScheduleInfo) -> tuple[Outcome, str]:
    return "ok", "paused" if s.paused else "active"


class LoggedClient:
    """A ConsoleClient that records every call that changes the runtime in `log`; other calls pass through."""

    def __init__(self, inner: ConsoleClient, log: CommandLog) -> None:
        self._inner = inner
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _logged(self, action: str, target: str, detail: str, call: Awaitable[T],
                      describe: Callable[[T], tuple[Outcome, str]] = _ok) -> T:
        try:
            result = await call
        except asyncio.CancelledError:
            self.log.add(action, target, detail, "error", "interrupted before the runtime answered: check the target")
            raise
        except WorkerError as exc:  # refused: conflict, not found, permission denied, invalid
            self.log.add(action, target, detail, "error", str(exc) or type(exc).__name__)
            raise
        except Exception as exc:  # unreachable runtime and the like: not sent, or not known to be
            self.log.add(action, target, detail, "error", describe_error(exc, 300))
            raise
        outcome, text = describe(result)
        self.log.add(action, target, detail, outcome, text)
        return result

    # -- runs ------------------------------------------------------------------------------------------
    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None) -> RunId:
        return await self._logged("start", f"workflow {workflow}", compact_json(inputs, 200),
                                  self._inner.start_run(workflow, inputs), lambda r: ("ok", f"new run {short_id(r)}"))

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunSummary:
        return await self._logged("cancel", _run(run_id), reason or "", self._inner.cancel(run_id, reason=reason))

    async def replay(self, run_id: str, *, from_step: str | None = None, inputs: dict[str, Any] | None = None,
                     latest: bool = False, dry_run: bool = False) -> tuple[Any, RunId | None]:
        call = self._inner.replay(run_id, from_step=from_step, inputs=inputs, latest=latest, dry_run=dry_run)
        if dry_run:
            return await call  # a plan only: nothing changes
        detail = " · ".join(part for part in (
            f"from step {from_step}" if from_step else "", "current version" if latest else "",
            f"inputs {compact_json(inputs, 120)}" if inputs is not None else "") if part)
        return await self._logged("replay", _run(run_id), detail, call,
                                  lambda r: ("ok", f"new run {short_id(r[1])}" + (
                                      f" under version {short_id(r[0].def_hash)}" if latest else "")))

    async def retry(self, run_id: str, version: VersionChoice = "auto", *, by: str | None = None) -> RetryResult:
        return await self._logged("retry", _run(run_id), f"version {version}",
                                  self._inner.retry(run_id, version, by=by), _retry)

    async def pause_run(self, run_id: str, *, reason: str | None = None, now: bool = False, by: str | None = None,
                        settle: float = 10.0) -> PauseOutcome:
        call = self._inner.pause_run(run_id, reason=reason, now=now, by=by, settle=settle)
        return await self._logged("pause", _run(run_id), reason or "", call, _run_pause)

    async def resume_run(self, run_id: str, *, by: str | None = None) -> PauseOutcome:
        return await self._logged("resume", _run(run_id), "", self._inner.resume_run(run_id, by=by), _run_pause)

    async def pause_workflow(self, workflow: str, *, reason: str | None = None, now: bool = False,
                             by: str | None = None, settle: float = 10.0) -> PauseOutcome:
        return await self._logged("pause workflow", f"workflow {workflow}", reason or "", self._inner.pause_workflow(
            workflow, reason=reason, now=now, by=by, settle=settle), _workflow_pause)

    async def resume_workflow(self, workflow: str, *, by: str | None = None) -> PauseOutcome:
        return await self._logged("resume workflow", f"workflow {workflow}", "",
                                  self._inner.resume_workflow(workflow, by=by), _workflow_pause)

    # -- saved views of the runs list ------------------------------------------------------------------
    async def save_view(self, name: str, filters: RunFilter, *, by: str | None = None) -> SavedView:
        return await self._logged("save view", f"view {truncate(name, 63)}", filters.describe(),
                                  self._inner.save_view(name, filters, by=by), _ok)

    # -- human tasks -----------------------------------------------------------------------------------
    async def decide(self, task_id: str, *, approve: bool, reason: str | None = None) -> HumanTask:
        return await self._logged("approve" if approve else "reject", f"task {short_id(task_id)}", reason or "",
                                  self._inner.decide(task_id, approve=approve, reason=reason), _task)

    async def resolve(self, task_id: str, *, action: str, output: Any = None,
                      reason: str | None = None) -> HumanTask:
        detail = " · ".join(part for part in (reason or "", f"output {compact_json(output, 120)}"
                                              if output is not None else "") if part)
        return await self._logged(f"resolve ({action})", f"task {short_id(task_id)}", detail,
                                  self._inner.resolve(task_id, action=action, output=output, reason=reason), _task)

    # -- events and schedules --------------------------------------------------------------------------
    async def send_event(self, name: str, key: str | None = None, data: dict[str, Any] | None = None, *,
                         idempotency_key: str | None = None) -> EventDelivery:
        target = f"event {truncate(name, 60)}" + (f" key {truncate(key, 40)}" if key is not None else "")
        return await self._logged("send-event", target, compact_json(data, 200), self._inner.send_event(
            name, key, data, idempotency_key=idempotency_key), _delivery)

    async def pause_schedule(self, workflow: str, reason: str, *, by: str | None = None) -> ScheduleInfo:
        return await self._logged("pause schedule", f"schedule {workflow}", reason,
                                  self._inner.pause_schedule(workflow, reason, by=by), _schedule)

    async def resume_schedule(self, workflow: str, reason: str | None = None, *,
                              by: str | None = None) -> ScheduleInfo:
        return await self._logged("resume schedule", f"schedule {workflow}", reason or "",
                                  self._inner.resume_schedule(workflow, reason, by=by), _schedule)


LOGGED = frozenset(name for name, value in vars(LoggedClient).items()
                   if callable(value) and not name.startswith("_"))
"""The ConsoleClient calls that are recorded (tests/console check that every other one only reads)."""
