"""Retry a failed or cancelled run over HTTP, under its own version or the current one (worker/client/retries.py):
the same compatibility check, permission (`replay`) and audit trail as `agentrt runs --retry` and the console.

    GET  /v1/runs/{id}/retry   what retrying it can mean: its version, the current one, the default  runs:read
    POST /v1/runs/{id}/retry   {"version": "auto" | "run" | "current"} -> 201 {"run_id", ...}       runs:write
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field

from worker.api import errors
from worker.api.auth import Caller, require


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal["auto", "run", "current"] = Field(
        "auto", description="run: the version it started with; current: the file as it is now (409 when that "
                            "version cannot take the run over); auto: current when the file changed and it can")


class RetryOptionOut(BaseModel):
    run_id: str
    workflow: str
    status: str
    run_version: str
    current_version: str | None
    changed: bool = Field(description="the file changed since the run started")
    compatible: bool = Field(description="the current version can take the run over from its replay point")
    default: Literal["run", "current"]
    retryable: bool = Field(description="failed or cancelled")
    problem: str | None = Field(description="why it cannot be retried, or not under the current version")
    from_step: str | None


class Retried(BaseModel):
    run_id: str = Field(description="the new run")
    retry_of: str
    version: Literal["run", "current"]
    def_hash: str | None


def install(app: FastAPI) -> None:
    @app.get("/v1/runs/{run_id}/retry", response_model=RetryOptionOut, tags=["runs"])
    async def retry_options(run_id: str, caller: Annotated[Caller, Depends(require("runs:read"))]) -> dict[str, Any]:
        """What retrying the run can mean, before doing it."""
        await caller.client.get_run(run_id)  # 404 / 403 as for reading it
        (option,) = await caller.client.retry_options([run_id])
        return {"run_id": option.run_id, "workflow": option.workflow, "status": option.status,
                "run_version": option.run_version, "current_version": option.current_version,
                "changed": option.changed, "compatible": option.compatible, "default": option.default,
                "retryable": option.retryable, "problem": option.problem, "from_step": option.from_step}

    @app.post("/v1/runs/{run_id}/retry", status_code=201, response_model=Retried, tags=["runs"],
              responses={409: {"description": "not failed or cancelled, or the asked version cannot take it over"}})
    async def retry(run_id: str, response: Response, caller: Annotated[Caller, Depends(require("runs:write"))],
                    body: Retry | None = None) -> dict[str, Any]:
        """Replay the run from its failed step as a new run (audited, as the token's principal)."""
        await caller.client.get_run(run_id)
        result = await caller.client.retry(run_id, (body or Retry()).version)
        if result.new_run is None or result.version is None:
            raise errors.ApiError(409, f"not retried: {result.skipped}")
        response.headers["Location"] = f"/v1/runs/{result.new_run}"
        return {"run_id": result.new_run, "retry_of": result.run_id, "version": result.version,
                "def_hash": result.def_hash}
