"""The API application (FastAPI on Starlette): routes, and the runtime client it reaches the runtime through.

    create_app(settings) -> an ASGI app; `agentrt serve` runs it with uvicorn.

Routes (every error is `{"error": {"code", "message"}}`, see worker.api.errors):

    POST /v1/runs                    start a run; Idempotency-Key makes it exactly-once      runs:write
    GET  /v1/runs                    list runs (workflow, status, limit)                      runs:read
    GET  /v1/runs/{id}               one run: status, output, error, current step, steps     runs:read
    GET  /v1/runs/{id}/events        its events and live LLM output as SSE (Last-Event-ID)    runs:read
    POST /v1/runs/{id}/cancel        cancel it                                                runs:write
    POST /v1/runs/{id}/pause|resume, POST /v1/workflows/{name}/pause|resume, GET /v1/paused   (worker.api.pauses)
    GET|POST /v1/runs/{id}/retry     retry under the run's or the current version                (worker.api.retries)
    GET  /v1/approvals               pending human tasks                                      runs:read
    POST /v1/approvals/{task_id}     approve or reject                                        approvals:decide
    POST /v1/events                  deliver an event: start the runs of subscribed workflows events:write
    POST /hooks/{path}               a signed webhook starts a run (worker.api.webhooks)      (HMAC, no token)
    GET  /healthz, /readyz           liveness; Postgres and Redis reachable                  (no token)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from worker import output as o
from worker.api import errors, pauses, retries, webhooks
from worker.api.auth import Caller, TokenCache, require
from worker.api.limits import BodyLimit
from worker.api.streams import LiveHub, parse_last_event_id, run_events_response
from worker.client import RuntimeClient
from worker.config import Settings
from worker.models import RunStatus, RunSummary

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # bytes of a request body (AGENTRT_API_MAX_BODY)


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str = Field(min_length=1, max_length=200, description="the workflow's name")
    inputs: dict[str, Any] = Field(default_factory=dict, description="the run's inputs (validated against "
                                                                      "the workflow's `inputs:`)")
    priority: Literal["high", "normal", "low"] | None = Field(
        None, description="under contention for workers, high runs go first (weighted: 4 high, 2 normal, 1 low of "
                          "every 7); default: the workflow's `priority:`")


class RunCreated(BaseModel):
    run_id: str
    workflow: str
    status: str = Field(description="pending; queued (behind its concurrency key); cancelled (its key was full, "
                                    "on_full: cancel_newest); existing (the Idempotency-Key's earlier run)")
    created: bool = Field(description="false: the Idempotency-Key was used before; this is that run")


class RunOut(BaseModel):
    run_id: str
    workflow: str
    def_hash: str
    status: RunStatus
    created_at: str
    updated_at: str
    finished_at: str | None
    current_step: str | None
    waiting_on: str | None = Field(description="human, sleep, child, retry, or `event NAME key KEY` (a wait step)")
    parent_run_id: str | None
    error: str | None
    trigger: str | None = Field(None, description="what started it: api, event, schedule, webhook, parent; "
                                                  "null: a person (CLI, console)")
    wake_at: str | None = Field(None, description="a waiting run: when it wakes by itself (a deadline, a timer)")
    priority: Literal["high", "normal", "low"] = "normal"
    concurrency_key: str | None = Field(None, description="the key its workflow's `concurrency:` rendered for it")
    paused: dict[str, Any] | None = Field(None, description="set while it (scope run) or its workflow (scope "
                                                            "workflow) is paused: `{by, at, reason, scope, now}`")


class RunList(BaseModel):
    runs: list[RunOut]


class RunDetailOut(RunOut):
    inputs: Any
    output: Any
    steps: list[dict[str, Any]]
    children: list[str]
    queue: dict[str, Any] | None = Field(None, description="a queued run: `{key, limit, ahead, active}`")


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


class Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject"]
    reason: str | None = Field(default=None, max_length=2000, description="required to reject")


class TaskList(BaseModel):
    approvals: list[dict[str, Any]]


class SendEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="e.g. ticket.created")
    key: str | None = Field(default=None, max_length=500, description="what the event is about, e.g. a ticket id")
    data: dict[str, Any] = Field(default_factory=dict, description="the event's payload (the started runs' inputs)")


class EventAccepted(BaseModel):
    event_id: str
    started: list[str] = Field(description="runs started by workflows with `on: {event: {name: ...}}`")
    delivered_to: list[str] = Field(description="waiting runs the event resumed")
    refused: list[dict[str, str]] = Field(description="subscribed workflows whose inputs the data did not satisfy")
    replayed: bool = Field(description="true: the Idempotency-Key was used before; this is that delivery")


def _run(summary: RunSummary) -> dict[str, Any]:
    out: dict[str, Any] = o.to_jsonable(summary)
    return out


async def _replica_headers(client: RuntimeClient, response: Response) -> None:
    """Say how stale a read from the read replica may be (nothing without one)."""
    replica = await client.read_replica()
    if replica is not None:
        response.headers["X-AgentRT-Replica"] = replica.text()
        if replica.lag_s is not None:
            response.headers["X-AgentRT-Replica-Lag"] = f"{replica.lag_s:.1f}"


def create_app(settings: Settings, *, max_body: int = MAX_BODY) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = await RuntimeClient.connect(settings)
        app.state.tokens = TokenCache()
        app.state.live = LiveHub(app.state.client)
        app.state.live.start()
        try:
            yield
        finally:
            await app.state.live.stop()
            await app.state.client.close()

    app = FastAPI(title="AgentRuntime API", version="1", lifespan=lifespan,
                  description="Start, watch and steer durable AI-agent workflow runs. Bearer tokens with scopes: "
                              "`agentrt api-token create NAME --scope runs:read --scope runs:write ...`.",
                  docs_url=None, redoc_url=None)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Postgres or Redis unreachable"}})
    async def readyz(request: Request) -> JSONResponse:
        """Postgres and Redis are reachable."""
        health = await request.app.state.client.health()
        ready = all(v is None for v in health.values())
        body = {"status": "ready" if ready else "unavailable",
                "checks": {name: "ok" if problem is None else problem for name, problem in health.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.post("/v1/runs", status_code=201, response_model=RunCreated, tags=["runs"],
              responses={200: {"model": RunCreated, "description": "the Idempotency-Key was used before"},
                         404: {"description": "no such workflow"}, 409: {"description": "key reused, other body"},
                         422: {"description": "invalid inputs"}})
    async def start_run(body: StartRun, response: Response,
                        caller: Annotated[Caller, Depends(require("runs:write"))],
                        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
                        traceparent: Annotated[str | None, Header()] = None) -> RunCreated:
        """Start a run. With `Idempotency-Key`, the same key (from the same token) returns the run it started
        (200) instead of starting another; the key with another workflow or other inputs is a 409."""
        started = await caller.client.start(
            body.workflow, body.inputs, idempotency_key=idempotency_key, traceparent=traceparent,
            requested_by=caller.principal, priority=body.priority)
        response.status_code = 201 if started.created else 200
        response.headers["Location"] = f"/v1/runs/{started.run_id}"
        return RunCreated(run_id=started.run_id, workflow=body.workflow, status=started.status,
                          created=started.created)

    @app.get("/v1/runs", response_model=RunList, tags=["runs"])
    async def list_runs(caller: Annotated[Caller, Depends(require("runs:read"))], response: Response,
                        workflow: Annotated[str | None, Query(max_length=200)] = None,
                        status: RunStatus | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Runs, newest first. Read from the read replica when the server has one (AGENTRT_DATABASE_READ_URL):
        then `X-AgentRT-Replica` says how far behind it is ("replica, 3 s behind") and `X-AgentRT-Replica-Lag`
        gives the seconds, when known."""
        runs = await caller.client.list_runs(status=status.value if status else None, workflow=workflow,
                                             limit=limit)
        await _replica_headers(caller.client, response)
        return {"runs": [_run(r) for r in runs]}

    @app.get("/v1/runs/{run_id}", response_model=RunDetailOut, tags=["runs"])
    async def get_run(run_id: str, caller: Annotated[Caller, Depends(require("runs:read"))],
                      response: Response) -> dict[str, Any]:
        """One run: status, current step, output or error, and its steps with their attempts (from the read
        replica, with the same headers as the listing, when the server has one)."""
        detail = await caller.client.get_run(run_id)
        await _replica_headers(caller.client, response)
        data: dict[str, Any] = o.to_jsonable(detail)
        return {**data["summary"], "inputs": data["inputs"], "output": data["output"], "steps": data["steps"],
                "children": data["children"], "queue": data["queue"]}

    @app.get("/v1/runs/{run_id}/events", tags=["runs"],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-Sent Events: `id` is `SEQ` (the last committed event's sequence "
                                             "number) or `SEQ:LIVE` (and the last live entry's stream id)"}})
    async def run_events(run_id: str, request: Request, caller: Annotated[Caller, Depends(require("runs:read"))],
                         last_event_id: Annotated[str | None, Header()] = None,
                         deltas: Annotated[bool, Query(description="include the live output of llm/agent steps "
                                                                   "(llm.delta, llm.done, llm.abandoned)")] = True
                         ) -> Response:
        """The run's events as they are committed (what the console sees), and the live output of its `llm` and
        `agent` steps as it is written, from the start or after `Last-Event-ID`; the stream ends with an `end`
        event when the run has finished."""
        try:
            after, live_after = parse_last_event_id(last_event_id)
        except ValueError as exc:
            raise errors.ApiError(400, "Last-Event-ID must be an event id from this stream (`SEQ` or "
                                       "`SEQ:LIVE`)") from exc
        summary, _ = await caller.client.events_after(run_id, after, limit=1)  # 404/403 before the stream starts
        return run_events_response(caller.client, request.app.state.live, summary.run_id, after, request,
                                   live_after=live_after, deltas=deltas)

    @app.post("/v1/runs/{run_id}/cancel", response_model=RunOut, tags=["runs"],
              responses={409: {"description": "the run has already finished"}})
    async def cancel_run(run_id: str, caller: Annotated[Caller, Depends(require("runs:write"))],
                         body: CancelRun | None = None) -> dict[str, Any]:
        """Cancel a run (audited, with the token's principal as the actor)."""
        summary = await caller.client.cancel(run_id, reason=body.reason if body else None)
        return _run(summary)

    @app.get("/v1/approvals", response_model=TaskList, tags=["approvals"])
    async def approvals(caller: Annotated[Caller, Depends(require("runs:read"))],
                        limit: Annotated[int, Query(ge=1, le=500)] = 200) -> dict[str, Any]:
        """Pending human tasks (approvals and uncertain effects) of the workflows this token may view."""
        tasks = await caller.client.list_tasks(status="pending", limit=limit)
        return {"approvals": o.to_jsonable(tasks)}

    @app.post("/v1/approvals/{task_id}", tags=["approvals"],
              responses={403: {"description": "the policy does not allow this principal to decide"},
                         409: {"description": "already decided"}})
    async def decide(task_id: str, body: Decide,
                     caller: Annotated[Caller, Depends(require("approvals:decide"))]) -> dict[str, Any]:
        """Approve or reject: the same policy, conflict rules and audit trail as the CLI and console; the
        decision is recorded as the token's principal (`api:NAME`) from the caller's address."""
        task = await caller.client.decide(task_id, approve=body.decision == "approve", reason=body.reason)
        out: dict[str, Any] = o.to_jsonable(task)
        return out

    @app.post("/v1/events", status_code=202, response_model=EventAccepted, tags=["events"],
              responses={409: {"description": "Idempotency-Key reused for another event"}})
    async def send_event(body: SendEvent, caller: Annotated[Caller, Depends(require("events:write"))],
                         idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> dict[str, Any]:
        """Deliver an event: every active workflow with `on: {event: {name: NAME}}` starts a run with the event's
        `data` as its inputs. With `Idempotency-Key`, sending it again replays the delivery (same runs)."""
        delivery = await caller.client.send_event(body.name, body.key, body.data, idempotency_key=idempotency_key)
        return {"event_id": delivery.event_id, "started": list(delivery.started),
                "delivered_to": list(delivery.delivered_to), "refused": list(delivery.refused),
                "replayed": delivery.replayed}

    webhooks.install(app)
    pauses.install(app)
    retries.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body)
    return app
