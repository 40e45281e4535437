"""What a run actor needs from the worker that hosts it (WorkerService satisfies it).

A Protocol rather than the service class itself, so the actor, and what runs its attempts, do not import
the service that imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import asyncpg

from worker.bus.publisher import Publisher
from worker.config import Settings
from worker.limits.gate import Limiter
from worker.notify.dispatcher import Notifier
from worker.secrets import SecretProvider
from worker.secrets.transit import PayloadCipher
from worker.steps.base import StepExecutor
from worker.store.definitions import DefinitionCache
from worker.store.writer import EventWriter
from worker.telemetry import Telemetry

T = TypeVar("T")


class ActorHost(Protocol):
    settings: Settings
    pool: asyncpg.Pool
    writer: EventWriter
    publisher: Publisher
    definitions: DefinitionCache
    secrets: SecretProvider
    telemetry: Telemetry
    cipher: PayloadCipher | None
    limiter: Limiter | None
    """The operator's limits (worker/limits): each attempt's pre-call gate comes from it."""
    notices: Notifier
    """Notifications (worker/notify): the outbox rows each commit causes."""

    @property
    def executors(self) -> Mapping[str, StepExecutor]: ...

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a pure, CPU-bound call (expression evaluation) off the event loop."""
        ...
