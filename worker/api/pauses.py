"""Pause and resume from the API (worker/pauses): the same rules, permission (`cancel`) and audit trail as
`agentrt pause` / `agentrt resume`, recorded as the token's principal.

    POST /v1/runs/{id}/pause            {"reason", "now"}: the run starts no further step          runs:write
    POST /v1/runs/{id}/resume           it goes on where it stopped                                runs:write
    POST /v1/workflows/{name}/pause     {"reason", "now"}: every run of it, and those started later runs:write
    POST /v1/workflows/{name}/resume                                                               runs:write
    GET  /v1/paused                     paused workflows and runs                                  runs:read
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from worker import output as o
from worker.api.auth import Caller, require

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "already paused, not paused, or finished"}}


class Pause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000, description="why (shown in lists, audited)")
    now: bool = Field(default=False, description="interrupt the steps in flight (they run again on resume) "
                                                 "instead of letting them finish")


class PauseOut(BaseModel):
    target: str = Field(description="the run id or the workflow's name")
    runs: list[str] = Field(description="the unfinished runs reached")
    unsettled: list[str] = Field(description="pause: runs still finishing the step in flight when this returned")
    still_paused: bool = Field(description="resume of a run whose workflow is paused too: it stays paused")


class PausedOut(BaseModel):
    workflows: list[dict[str, Any]]
    runs: list[dict[str, Any]]


def install(app: FastAPI) -> None:
    @app.post("/v1/runs/{run_id}/pause", response_model=PauseOut, tags=["pauses"], responses=_CONFLICT)
    async def pause_run(run_id: str, caller: Annotated[Caller, Depends(require("runs:write"))],
                        body: Pause | None = None) -> dict[str, Any]:
        """Pause a run: it starts no further step and, once the step in flight is recorded, holds no worker."""
        body = body or Pause()
        done = await caller.client.pause_run(run_id, reason=body.reason, now=body.now)
        return _out(done)

    @app.post("/v1/runs/{run_id}/resume", response_model=PauseOut, tags=["pauses"], responses=_CONFLICT)
    async def resume_run(run_id: str, caller: Annotated[Caller, Depends(require("runs:write"))]) -> dict[str, Any]:
        """Resume a paused run: it goes on where it stopped."""
        return _out(await caller.client.resume_run(run_id))

    @app.post("/v1/workflows/{workflow}/pause", response_model=PauseOut, tags=["pauses"], responses=_CONFLICT)
    async def pause_workflow(workflow: str, caller: Annotated[Caller, Depends(require("runs:write"))],
                             body: Pause | None = None) -> dict[str, Any]:
        """Pause a workflow: its unfinished runs, and the runs started while it is paused (they wait)."""
        body = body or Pause()
        return _out(await caller.client.pause_workflow(workflow, reason=body.reason, now=body.now))

    @app.post("/v1/workflows/{workflow}/resume", response_model=PauseOut, tags=["pauses"], responses=_CONFLICT)
    async def resume_workflow(workflow: str,
                              caller: Annotated[Caller, Depends(require("runs:write"))]) -> dict[str, Any]:
        """Resume a workflow: its runs go on (runs paused one by one stay paused)."""
        return _out(await caller.client.resume_workflow(workflow))

    @app.get("/v1/paused", response_model=PausedOut, tags=["pauses"])
    async def paused(caller: Annotated[Caller, Depends(require("runs:read"))],
                     workflow: Annotated[str | None, Query(max_length=200)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Paused workflows, then paused runs (oldest first)."""
        return {"workflows": o.to_jsonable(await caller.client.paused_workflows()),
                "runs": o.to_jsonable(await caller.client.paused_runs(workflow, limit=limit))}


def _out(done: Any) -> dict[str, Any]:
    out: dict[str, Any] = o.to_jsonable(done)
    return out
