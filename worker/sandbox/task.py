"""Inside the sandbox: the `ctx` a task sees, its log and print forwarding, and one call at a time."""

from __future__ import annotations

import inspect
import io
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from worker.config import Settings
from worker.errors import StepFailed
from worker.sandbox.calling import Target, bind, failure, not_json, target_for
from worker.sandbox.modules import TaskModules
from worker.sandbox.protocol import HEADER

if TYPE_CHECKING:
    import asyncio

    from worker.sandbox.child import Channel

MAX_REASON = 16_000  # characters of an error message sent back
MAX_LOG = 8_000  # characters of one log line sent back


class TaskContext:
    """What a task function gets as `ctx`: the attempt's identity, its secrets, a logger.

    The same attributes as the worker's StepContext that task code uses; nothing of the worker
    (settings, journal) crosses into the sandbox.
    """

    __slots__ = ("attempt", "idempotency_key", "idempotent", "item", "logger", "run_id", "secrets", "step_id",
                 "timeout", "traceparent", "workflow")

    def __init__(self, fields: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]],
                 logger: logging.Logger) -> None:
        self.run_id: str = fields["run_id"]
        self.workflow: str = fields["workflow"]
        self.step_id: str = fields["step_id"]
        self.item: int | None = fields.get("item")
        self.attempt: int = fields["attempt"]
        self.idempotency_key: str = fields["idempotency_key"]
        self.idempotent: bool = fields.get("idempotent", True)
        self.timeout: float | None = fields.get("timeout")
        self.traceparent: str | None = fields.get("traceparent")
        self.secrets = secrets
        self.logger = logger

    def key_for(self, call_index: int) -> str:
        return self.idempotency_key if call_index == 0 else f"{self.idempotency_key}.{call_index}"


class _Forward(logging.Handler):
    """Every log record of the sandbox goes back to the worker, which re-emits it in the step's context."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(logging.DEBUG)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break the step
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        self.channel.send({"t": "log", "level": record.levelno, "name": record.name, "msg": message[:MAX_LOG],
                           "created": record.created})


class _PrintedLines(io.TextIOBase):
    """sys.stdout / sys.stderr of the sandbox: complete lines become log records of `logger`."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger = logger
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._logger.log(self._level, "%s", line)
        if len(self._pending) > MAX_LOG:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._logger.log(self._level, "%s", line)


class Runner:
    """Resolves functions through the deployment's TaskModules (cached) and runs one call at a time."""

    def __init__(self, channel: Channel, config: Mapping[str, Any]) -> None:
        self.channel = channel
        root = logging.getLogger()
        root.handlers[:] = [_Forward(channel)]
        root.setLevel(config.get("log_level") or "INFO")
        logging.raiseExceptions = False  # a broken pipe while logging must not print into the protocol
        self.stdout = _PrintedLines(logging.getLogger("task.stdout"), logging.INFO)
        self.stderr = _PrintedLines(logging.getLogger("task.stderr"), logging.WARNING)
        sys.stdout, sys.stderr = self.stdout, self.stderr  # type: ignore[assignment]
        modules = config.get("task_modules")
        settings = Settings(workflows_dir=Path(config["workflows_dir"]),
                            task_modules=None if modules is None else tuple(modules))
        self.modules = TaskModules.from_settings(settings)
        self.targets: dict[str, Target] = {}
        self.loggers: dict[str, logging.Logger] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.report_cpu = bool(config.get("cpu_seconds"))  # the pool recycles a process at half its CPU budget

    def _target(self, function: str) -> Target:
        target = self.targets.get(function)
        if target is None:
            target = target_for(function, self.modules.resolve(function))
            self.targets[function] = target
        return target

    def _await(self, awaitable: Any) -> Any:
        if self.loop is None:
            import asyncio

            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(awaitable)

    def call(self, message: Mapping[str, Any]) -> None:
        function: str = message["function"]
        logger = self.loggers.get(function)
        if logger is None:
            logger = self.loggers[function] = logging.getLogger(function.partition(":")[0])
        ctx = TaskContext(message["ctx"], message.get("secrets") or {}, logger)
        frame: bytes
        try:
            target = self._target(function)
            kwargs = bind(function, target, message.get("args") or {}, ctx)
            result = self._await(target.func(**kwargs)) if target.is_async else target.func(**kwargs)
            if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
                result = self._await(result)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of task code is the step's (sys.exit too)
            frame = _error_frame(failure(exc))
        else:
            try:
                frame = _frame(orjson.dumps({"t": "result", "value": result,
                                             "cpu": time.process_time() if self.report_cpu else None}))
            except orjson.JSONEncodeError:
                frame = _error_frame(not_json(function, result))
        finally:
            del ctx
        self.stdout.flush()
        self.stderr.flush()
        self.channel.send_raw(frame)  # after every log line of the call


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def _error_frame(exc: StepFailed) -> bytes:
    return _frame(orjson.dumps({"t": "error", "reason": str(exc.reason)[:MAX_REASON],
                                      "retryable": bool(exc.retryable),
                                      "retry_after": None if exc.retry_after is None else float(exc.retry_after),
                                      "cpu": time.process_time()}))
