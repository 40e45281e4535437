"""The slice of `worker.client.RuntimeClient` that the console uses, as a Protocol.

`RuntimeClient` satisfies it structurally; tests pass `tests.console.fakes.FakeRuntimeClient`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from worker.client.events import EventDelivery, EventWait
from worker.client.schedules import ScheduleInfo
from worker.models import (
    HumanTask,
    LiveEvent,
    RunDetail,
    RunId,
    RunSummary,
    SpanView,
    StepLogLine,
    WorkerInfo,
    WorkflowEvent,
    WorkflowInfo,
    WorkflowVersion,
)


class ConsoleClient(Protocol):
    async def close(self) -> None: ...

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None,
                        limit: int = 50, search: str | None = None, order: str = "newest") -> list[RunSummary]: ...

    async def count_runs(self) -> dict[str, int]: ...

    async def get_run(self, run_id: str) -> RunDetail: ...

    async def cancel(self, run_id: str, *, reason: str | None = None) -> RunSummary: ...

    async def start_run(self, workflow: str, inputs: dict[str, Any] | None = None) -> RunId: ...

    async def list_tasks(self, *, status: str | None = "pending") -> list[HumanTask]: ...

    async def get_task(self, task_id: str) -> HumanTask: ...

    async def decide(self, task_id: str, *, approve: bool, reason: str | None = None) -> HumanTask: ...

    async def resolve(self, task_id: str, *, action: str, output: Any = None,
                      reason: str | None = None) -> HumanTask: ...

    async def list_workflows(self) -> list[WorkflowInfo]: ...

    async def workflow_versions(self, name: str, *, limit: int = 50) -> list[WorkflowVersion]: ...

    async def workflow_diff(self, name: str, old_hash: str | None = None, new_hash: str | None = None, *,
                            context: int = 3) -> str: ...

    async def workflow_events(self, limit: int = 200) -> list[WorkflowEvent]: ...

    async def list_workers(self) -> list[WorkerInfo]: ...

    async def replay(self, run_id: str, *, from_step: str | None = None, inputs: dict[str, Any] | None = None,
                     latest: bool = False, dry_run: bool = False) -> tuple[Any, RunId | None]: ...
    # the plan: .source_run .workflow .def_hash .from_step .reused .rerun .external_calls .inputs .notes

    async def spans(self, run_id: str) -> list[SpanView]: ...

    async def step_logs(self, run_id: str, *, step_id: str | None = None, after_id: int = 0,
                        limit: int = 2000) -> list[StepLogLine]: ...

    async def health(self) -> dict[str, str | None]: ...

    async def open_waits(self, *, name: str | None = None, key: str | None = None, run_id: str | None = None,
                         limit: int = 200) -> list[EventWait]: ...

    async def send_event(self, name: str, key: str | None = None, data: dict[str, Any] | None = None, *,
                         idempotency_key: str | None = None) -> EventDelivery: ...

    async def list_schedules(self) -> list[ScheduleInfo]: ...

    async def pause_schedule(self, workflow: str, reason: str, *, by: str | None = None) -> ScheduleInfo: ...

    async def resume_schedule(self, workflow: str, reason: str | None = None, *,
                              by: str | None = None) -> ScheduleInfo: ...

    def watch_events(self, last_id: str = "$") -> AsyncIterator[LiveEvent]: ...
