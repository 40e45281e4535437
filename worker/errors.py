"""The exception hierarchy: every error this runtime raises on purpose derives from WorkerError."""

from __future__ import annotations

from pathlib import Path


class WorkerError(Exception):
    """Base for every error this runtime raises on purpose."""


class ConfigError(WorkerError):
    """The configuration (environment, flags, config file) is invalid."""


class DefinitionError(WorkerError):
    """A workflow file is invalid: the message names the file, line, column and reason."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None, column: int | None = None,
                 excerpt: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        self.column = column
        self.excerpt = excerpt
        super().__init__(self.location + ": " + reason)

    @property
    def location(self) -> str:
        if self.line is None:
            return self.path
        if self.column is None:
            return f"{self.path}:{self.line}"
        return f"{self.path}:{self.line}:{self.column}"


class ExpressionError(WorkerError):
    """A `${{ }}` expression could not be parsed or evaluated."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"expression `{expression}`: {reason}")


class StoreError(WorkerError):
    """Postgres could not be reached or refused an operation."""


class BusError(WorkerError):
    """Redis could not be reached or refused an operation."""


class LeaseLost(WorkerError):
    """This worker no longer owns the run: another worker took it over (fencing)."""


class NotFound(WorkerError):
    """A run, task or workflow that was asked for does not exist."""


class Conflict(WorkerError):
    """The operation conflicts with the current state (e.g. the task was already decided)."""


class InvalidRequest(WorkerError):
    """The request itself is malformed (a header or argument), whatever the runtime's state."""


class PermissionDenied(WorkerError):
    """The policy file does not allow this identity to do this (the denial is audited)."""


class StepFailed(WorkerError):
    """A step attempt failed; `retryable` tells the engine whether another attempt may help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status  # the callee's HTTP status, when it answered one (429: over its rate limit)
        super().__init__(reason)


class StepThrottled(WorkerError):
    """A step waits for capacity under a limit (worker/limits): waiting, not failing. The run parks until
    `wake_at` (unix seconds; it holds no worker slot meanwhile) and the step starts again as the same attempt.
    `next_slot_in` is how far its turn was when it parked; `reason` is `rate` or `concurrency`."""

    def __init__(self, limit: str, wake_at: float, next_slot_in: float, reason: str = "rate") -> None:
        self.limit = limit
        self.wake_at = wake_at
        self.next_slot_in = next_slot_in
        self.reason = reason
        super().__init__(f"throttled: {limit} (next slot in {next_slot_in:.1f}s)")


class StepParked(WorkerError):
    """A step asks a human before it goes on (e.g. an agent about to call a guarded tool).

    The run parks with an approval task; once it is decided, the step runs again (a new attempt)
    and finds the decision in `StepContext.decisions[key]`. `key` names the question within the step
    so that the same question is never asked twice.
    """

    def __init__(self, key: str, prompt: str, *, context: object = None, timeout: float | None = None,
                 on_timeout: str = "reject") -> None:
        self.key = key
        self.prompt = prompt
        self.context = context
        self.timeout = timeout
        self.on_timeout = on_timeout
        super().__init__(prompt)
