"""FakeRuntimeClient, the on-call part (issue 18): pause and resume runs and workflows, runs backing off between
attempts, and retry under the run's version or the current one.

Same semantics as worker/client/pauses.py and worker/client/retries.py, Conflicts included (the contract test
holds both to them). What the fake cannot do: a run it pauses while running keeps running with `paused` set (a
worker "still finishing its step") until it is resumed, and its compatibility check looks only at the step a
run stopped at (the real one also compares the kinds of the steps a replay reuses).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from worker.client.pauses import PauseOutcome, WorkflowPause
from worker.client.retries import VERSION_CHOICES, RetryOption, RetryResult, VersionChoice
from worker.errors import Conflict, NotFound, PermissionDenied, WorkerError
from worker.models import PauseInfo, RunDetail, RunId, RunStatus, RunSummary, StepStatus, WorkflowVersion

RETRYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)
MAX_REASON = 2000
_STEP_ID = re.compile(r"^\s*- id: ([A-Za-z0-9_-]+)", re.MULTILINE)


def step_ids(source: str) -> list[str]:
    """The step ids of a workflow's YAML source (the fake's sources list each step as `- id: name`)."""
    return _STEP_ID.findall(source)


def check_reason(reason: str | None) -> None:
    """Like worker/client/pauses.py: one line of text, at most MAX_REASON characters."""
    if reason is None:
        return
    if len(reason) > MAX_REASON:
        raise WorkerError(f"a reason is at most {MAX_REASON} characters")
    bad = next((c for c in reason if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise WorkerError(f"a reason is one line of text: control character {bad!r} is not allowed")


@dataclass
class _WorkflowPaused:
    by: str
    at: datetime
    reason: str | None
    now: bool

    def info(self) -> PauseInfo:
        return PauseInfo(self.by, self.at, self.reason, "workflow", self.now)


class FakeOnCall:
    """Mixed into FakeRuntimeClient, which supplies the state and the helpers declared here."""

    runs: list[RunSummary]
    versions: dict[str, list[WorkflowVersion]]
    sources: dict[str, str]
    commands: list[tuple[Any, ...]]
    denied: set[str]
    details: dict[str, RunDetail]
    clock: datetime

    def __init__(self) -> None:
        self.workflow_pauses: dict[str, _WorkflowPaused] = {}
        self.before_pause: dict[str, RunStatus] = {}
        """Run id -> the status it had when it was parked as paused (it goes back to it on resume)."""

    # supplied by FakeRuntimeClient
    def _check(self) -> None:
        raise NotImplementedError

    def _find_run(self, run_id: str) -> RunSummary:
        raise NotImplementedError

    async def get_run(self, run_id: str) -> RunDetail:
        raise NotImplementedError

    def _deny(self, action: str, run_id: str) -> None:
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------------------
    def _put(self, run: RunSummary) -> RunSummary:
        self.runs = [run if r.run_id == run.run_id else r for r in self.runs]
        if run.run_id in self.details:
            self.details[run.run_id] = replace(self.details[run.run_id], summary=run)
        return run

    def _paused(self, run: RunSummary, info: PauseInfo) -> tuple[RunSummary, bool]:
        """`run` with `info` as its pause: (the run, still held by a worker finishing a step)."""
        if run.status is RunStatus.RUNNING and not info.now:
            return replace(run, paused=info), True  # its step in flight finishes first
        if run.status in (RunStatus.QUEUED, RunStatus.PAUSED):
            return replace(run, paused=info), False
        self.before_pause[run.run_id] = RunStatus.WAITING if run.status is RunStatus.WAITING else RunStatus.PENDING
        return replace(run, status=RunStatus.PAUSED, paused=info), False

    def _unpaused(self, run: RunSummary) -> RunSummary:
        status = run.status
        if status is RunStatus.PAUSED:  # parked: back to what it did (a run seeded paused: ready to go on)
            status = self.before_pause.pop(run.run_id, RunStatus.PENDING)
        return replace(run, status=status, paused=None)

    def _deny_pause(self, workflow: str) -> None:
        if "pause" in self.denied:
            raise PermissionDenied(f"tester may not cancel runs of {workflow} (policy file)")

    def pause_workflow_now(self, workflow: str, *, by: str, at: datetime, reason: str | None,
                           now: bool = False) -> PauseOutcome:
        """`pause_workflow` without the call's checks and record: a test's setup (who, when)."""
        if workflow in self.workflow_pauses:
            raise Conflict(f"workflow {workflow} is already paused (by {self.workflow_pauses[workflow].by})")
        pause = self.workflow_pauses[workflow] = _WorkflowPaused(by, at, reason, now)
        told: list[str] = []
        unsettled: list[str] = []
        for run in list(self.runs):
            if run.workflow == workflow and not run.status.terminal and (run.paused is None
                                                                         or run.paused.scope == "workflow"):
                changed, held = self._paused(run, pause.info())
                self._put(changed)
                told.append(run.run_id)
                if held:
                    unsettled.append(run.run_id)
        return PauseOutcome(workflow, told, unsettled)

    # -- pauses --------------------------------------------------------------------------------------
    async def pause_run(self, run_id: str, *, reason: str | None = None, now: bool = False, by: str | None = None,
                        settle: float = 10.0) -> PauseOutcome:
        self._check()
        self.commands.append(("pause_run", run_id, reason))
        check_reason(reason)
        run = self._find_run(run_id)
        self._deny_pause(run.workflow)
        if run.status.terminal:
            raise Conflict(f"run {run.run_id} is already {run.status.value}")
        if run.paused is not None and run.paused.scope == "run":
            raise Conflict(f"run {run.run_id} is already paused (by {run.paused.by})")
        changed, held = self._paused(run, PauseInfo(by or "tester", self.clock, reason, "run", now))
        self._put(changed)
        return PauseOutcome(run.run_id, [run.run_id], [run.run_id] if held else [])

    async def resume_run(self, run_id: str, *, by: str | None = None) -> PauseOutcome:
        self._check()
        self.commands.append(("resume_run", run_id))
        run = self._find_run(run_id)
        self._deny_pause(run.workflow)
        wf_pause = self.workflow_pauses.get(run.workflow)
        if run.status.terminal or run.paused is None or run.paused.scope != "run":
            if wf_pause is not None:
                raise Conflict(f"run {run.run_id} is paused with its workflow {run.workflow} (by {wf_pause.by}): "
                               f"resume the workflow (agentrt resume --workflow {run.workflow})")
            raise Conflict(f"run {run.run_id} is not paused")
        self._put(replace(run, paused=wf_pause.info()) if wf_pause is not None else self._unpaused(run))
        return PauseOutcome(run.run_id, [run.run_id], still_paused=wf_pause is not None)

    async def pause_workflow(self, workflow: str, *, reason: str | None = None, now: bool = False,
                             by: str | None = None, settle: float = 10.0) -> PauseOutcome:
        self._check()
        self.commands.append(("pause_workflow", workflow, reason))
        check_reason(reason)
        self._deny_pause(workflow)
        known = {w.name for w in getattr(self, "workflows", []) if w.name} | {r.workflow for r in self.runs}
        if workflow not in known:
            raise NotFound(f"no workflow {workflow!r} (agentrt workflows lists them)")
        return self.pause_workflow_now(workflow, by=by or "tester", at=self.clock, reason=reason, now=now)

    async def resume_workflow(self, workflow: str, *, by: str | None = None) -> PauseOutcome:
        self._check()
        self.commands.append(("resume_workflow", workflow))
        self._deny_pause(workflow)
        if self.workflow_pauses.pop(workflow, None) is None:
            raise Conflict(f"workflow {workflow} is not paused")
        told: list[str] = []
        for run in list(self.runs):
            if run.workflow == workflow and not run.status.terminal and (run.paused is None
                                                                         or run.paused.scope == "workflow"):
                self._put(self._unpaused(run))
                told.append(run.run_id)
        return PauseOutcome(workflow, told)

    async def paused_workflows(self) -> list[WorkflowPause]:
        self._check()
        out = []
        for name, p in sorted(self.workflow_pauses.items(), key=lambda kv: kv[1].at):
            unfinished = [r for r in self.runs if r.workflow == name and not r.status.terminal]
            out.append(WorkflowPause(name, p.by, p.at, p.reason, p.now, len(unfinished),
                                     sum(1 for r in unfinished if r.status is RunStatus.PAUSED)))
        return out

    async def count_retrying(self) -> int:
        self._check()
        return sum(1 for r in self.runs if is_retrying(r))

    # -- versions --------------------------------------------------------------------------------------
    def current_version(self, workflow: str) -> str | None:
        return next((v.def_hash for v in self.versions.get(workflow, []) if v.active), None)

    async def stopped_at(self, run: RunSummary) -> str | None:
        """Where the run stopped: its first step that did not complete (or was skipped)."""
        detail = await self.get_run(run.run_id)
        done = (StepStatus.COMPLETED, StepStatus.SKIPPED)
        return next((v.step_id for v in detail.steps if v.item is None and v.status not in done), None)

    async def check_latest(self, run: RunSummary, from_step: str | None) -> str:
        """The current version's hash, if it can take `run` over (replay --latest); else WorkerError."""
        current = self.current_version(run.workflow)
        if current is None:
            raise NotFound(f"workflow {run.workflow!r} has no active version (deleted?)")
        stopped = await self.stopped_at(run)
        if from_step is None and stopped is not None and stopped not in step_ids(self.sources.get(current, "")):
            raise WorkerError(f"the current version is not compatible with this run: step {stopped!r}, where it "
                              "stopped, is not in the current version (renamed or removed); replay it under its "
                              "own version")
        return current

    # -- retries ---------------------------------------------------------------------------------------
    async def retry_options(self, run_ids: list[str]) -> list[RetryOption]:
        self._check()
        out: list[RetryOption] = []
        for given in run_ids:
            try:
                run = self._find_run(given)
            except NotFound:
                if _is_uuid(given):
                    continue  # like RuntimeClient: an unknown full id is left out, a bad prefix is NotFound
                raise
            now_hash = self.current_version(run.workflow)
            base: dict[str, Any] = {"run_id": run.run_id, "workflow": run.workflow, "status": run.status.value,
                                    "run_version": run.def_hash, "current_version": now_hash}
            if run.status not in RETRYABLE:
                out.append(RetryOption(**base, compatible=False,
                                       problem=f"it is {run.status.value}, not failed or cancelled"))
                continue
            compatible, problem = now_hash is not None, None
            if now_hash is None:
                problem = f"workflow {run.workflow} has no valid current version"
            elif now_hash != run.def_hash:
                try:
                    await self.check_latest(run, None)
                except WorkerError as exc:
                    compatible, problem = False, str(exc)
            stopped = await self.stopped_at(run)
            out.append(RetryOption(**base, compatible=compatible, problem=problem, from_step=stopped))
        return out

    async def retry(self, run_id: str, version: VersionChoice = "auto", *, by: str | None = None) -> RetryResult:
        self._check()
        self.commands.append(("retry", run_id, version))
        if version not in VERSION_CHOICES:
            raise WorkerError(f"version must be one of {', '.join(VERSION_CHOICES)}, not {version!r}")
        found = await self.retry_options([run_id])
        if not found:
            return RetryResult(run_id, None, None, None, "no such run")
        option = found[0]
        chosen = option.choose(version)  # the runtime's own rule (RetryOption is the real dataclass)
        if chosen is None:
            why = (option.problem if not option.retryable
                   else f"the current version cannot take it over: {option.problem}")
            return RetryResult(option.run_id, None, None, None, why)
        try:
            plan, new_id = await self.start_replay(option.run_id, latest=chosen == "current" and option.changed)
        except WorkerError as exc:
            return RetryResult(option.run_id, None, None, None, str(exc))
        return RetryResult(option.run_id, chosen, plan.def_hash, new_id)

    async def start_replay(self, run_id: str, *, latest: bool) -> tuple[Any, RunId | None]:
        raise NotImplementedError


def is_retrying(run: RunSummary) -> bool:
    """Backing off between attempts of a step (status waiting, `waiting_on` `retry N/M`)."""
    return run.status is RunStatus.WAITING and (run.waiting_on or "").startswith("retry")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

