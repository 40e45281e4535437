"""RuntimeClient, part retries: retry failed runs under the version you just fixed (issue 18).

A run is pinned to the workflow version it started with; a replay can run under the current version instead
when the current version can take the run over: every step the replay reuses (completed before the replay
point) must exist in it with the same kind (worker/oversight/replay.py checks it). `retry_options` says, per run,
which versions are possible and which is the default: the current one when the file changed since the run
started and the check passes, else the run's own. `retry` does one; incompatible runs are skipped with the
reason, never half-replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.client.runs import RunsApi
from worker.errors import WorkerError
from worker.store.definitions import active_version

VersionChoice = Literal["auto", "run", "current"]
VERSION_CHOICES: tuple[VersionChoice, ...] = ("auto", "run", "current")
RETRYABLE = ("failed", "cancelled")


@dataclass(frozen=True, slots=True)
class RetryOption:
    """What retrying one run can mean."""

    run_id: str
    workflow: str
    status: str
    run_version: str
    """The definition hash the run started with."""
    current_version: str | None
    """The workflow's active version now (None: the file is gone or invalid)."""
    compatible: bool
    """The current version can take this run over from its replay point."""
    problem: str | None = None
    """Why the run cannot be retried at all, or not under the current version."""
    from_step: str | None = None
    """Where the replay starts under the default version."""

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE

    @property
    def changed(self) -> bool:
        """The file changed since the run started."""
        return self.current_version is not None and self.current_version != self.run_version

    @property
    def default(self) -> Literal["run", "current"]:
        return "current" if self.changed and self.compatible else "run"

    def choose(self, version: VersionChoice) -> Literal["run", "current"] | None:
        """The version `version` means for this run; None when it cannot be retried that way."""
        if not self.retryable:
            return None
        chosen: Literal["run", "current"] = self.default if version == "auto" else version
        return None if chosen == "current" and self.changed and not self.compatible else chosen


@dataclass(frozen=True, slots=True)
class RetryResult:
    run_id: str
    version: Literal["run", "current"] | None
    """Which version the new run runs under (None: skipped)."""
    def_hash: str | None
    new_run: str | None
    skipped: str | None = None
    """Why it was not retried."""


class RetriesApi(RunsApi):
    """Retrying failed and cancelled runs, under their own version or the current one."""

    async def retry_options(self, run_ids: list[str]) -> list[RetryOption]:
        """For each run: its version, the current one, whether the current one can take it over, the default."""
        out: list[RetryOption] = []
        current: dict[str, str | None] = {}
        for given in run_ids:
            run_id = await self.resolve_run_id(given)
            row = await self.pool.fetchrow("SELECT workflow, def_hash, status FROM runs WHERE run_id = $1", run_id)
            if row is None:
                continue
            workflow = row["workflow"]
            if workflow not in current:
                found = await active_version(self.pool, workflow)
                current[workflow] = found[0] if found else None
            now_hash = current[workflow]
            base = {"run_id": run_id, "workflow": workflow, "status": row["status"], "run_version": row["def_hash"],
                    "current_version": now_hash}
            if row["status"] not in RETRYABLE:
                out.append(RetryOption(**base, compatible=False, problem=f"it is {row['status']}, not failed or "
                                                                          "cancelled"))
                continue
            compatible, problem, from_step = now_hash is not None, None, None
            if now_hash is None:
                problem = f"workflow {workflow} has no valid current version"
            try:
                plan, _ = await self.replay(run_id, latest=now_hash is not None and now_hash != row["def_hash"],
                                            dry_run=True)
                from_step = plan.from_step
            except WorkerError as exc:
                compatible, problem = False, str(exc)
            if not compatible and problem and now_hash is not None and now_hash != row["def_hash"]:
                try:  # its own version still works: the default falls back to it
                    plan, _ = await self.replay(run_id, dry_run=True)
                    from_step = plan.from_step
                except WorkerError as exc:
                    problem = f"{problem}; under its own version: {exc}"
            out.append(RetryOption(**base, compatible=compatible, problem=problem, from_step=from_step))
        return out

    async def retry(self, run_id: str, version: VersionChoice = "auto", *, by: str | None = None) -> RetryResult:
        """Replay a failed or cancelled run from its failed step under `version` ("auto": the current version when
        the file changed and it can take the run over, else the run's own). Skipped (with the reason) when the
        run is not failed/cancelled, or `current` was asked for and cannot take it over."""
        if version not in VERSION_CHOICES:
            raise WorkerError(f"version must be one of {', '.join(VERSION_CHOICES)}, not {version!r}")
        found = await self.retry_options([run_id])
        if not found:
            return RetryResult(run_id, None, None, None, "no such run")
        option = found[0]
        chosen = option.choose(version)
        if chosen is None:
            why = (option.problem if not option.retryable
                   else f"the current version cannot take it over: {option.problem}")
            return RetryResult(option.run_id, None, None, None, why)
        latest = chosen == "current" and option.changed
        try:
            plan, new_id = await self.replay(option.run_id, latest=latest, by=by)
        except WorkerError as exc:
            return RetryResult(option.run_id, None, None, None, str(exc))
        return RetryResult(option.run_id, chosen, plan.def_hash, new_id)
