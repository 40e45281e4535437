"""The step executor interface: one module per step kind implements `StepExecutor`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from worker.config import Settings
from worker.models import RunId

if TYPE_CHECKING:
    from worker.limits.gate import StepGate


class Journal(Protocol):
    """Durable memo of a step's sub-steps (LLM turns, tool calls inside an agent loop).

    `entries` holds what earlier attempts committed. `record` commits one entry (fenced by the run
    lease) before returning; after a crash the next attempt finds it in `entries` and does not
    repeat the call.
    """

    entries: dict[int, Any]

    async def record(self, call_index: int, data: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an executor knows about the attempt it runs.

    `idempotency_key` is stable for (run, step, foreach item): identical on every retry and after a
    crash. A step that makes several external calls uses `key_for(call_index)` for each.
    """

    run_id: RunId
    workflow: str
    step_id: str
    item: int | None
    attempt: int
    idempotency_key: str
    timeout: float | None
    settings: Settings
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    idempotent: bool = True
    journal: Journal | None = None  # only for executors with `uses_journal = True`
    decisions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # task key -> decided task
    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # credential name -> values
    traceparent: str | None = None  # W3C trace context of this attempt's span
    gate: StepGate | None = None  # the pre-call gate of the operator's limits (worker/limits); None: no limiter
    encrypted: bool = False  # the run's payloads are sealed at rest (Vault transit): none may rest in Redis plain

    def key_for(self, call_index: int) -> str:
        return self.idempotency_key if call_index == 0 else f"{self.idempotency_key}.{call_index}"


def idempotency_key(run_id: str, step_id: str, item: int | None) -> str:
    """The stable key of an external effect: derived only from (run, step, item)."""
    suffix = "" if item is None else f"[{item}]"
    return f"agentrt:{run_id}:{step_id}{suffix}"


class StepExecutor(Protocol):
    """Runs one attempt of one step kind.

    `args` is the step's `with:` mapping, already rendered (expressions evaluated). Return the step
    output (JSON-encodable). Raise `worker.errors.StepFailed` for a failure that the retry policy
    should see, or `worker.errors.StepParked` to wait for a human before going on; any other
    exception is treated as a retryable failure.
    """

    kind: ClassVar[str]

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any: ...

    async def aclose(self) -> None: ...


SecretResolver = Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]
