"""Inside the sandbox: the `ctx` a task sees, its log and print forwarding, and serving calls."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import logging
import os
import sys
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from worker.config import Settings
from worker.errors import StepFailed
from worker.sandbox.calling import Target, bind, failure, not_json, target_for
from worker.sandbox.modules import TaskModules
from worker.sandbox.protocol import HEADER, FrameDecoder, ProtocolError

if TYPE_CHECKING:
    from worker.sandbox.child import Channel

MAX_REASON = 16_000  # characters of an error message sent back
MAX_LOG = 8_000  # characters of one log line sent back
CURRENT_CALL: contextvars.ContextVar[int | None] = contextvars.ContextVar("agentrt_sandbox_call", default=None)


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
        self.channel.send({"t": "log", "id": CURRENT_CALL.get(), "level": record.levelno, "name": record.name,
                           "msg": message[:MAX_LOG], "created": record.created})


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
    """Resolves functions through the deployment's TaskModules (cached) and serves calls on an asyncio loop.

    Every `call` frame becomes a task; the worker sends a sync function's call only to an otherwise idle
    sandbox (it blocks the loop while it runs), an async function's calls to a sandbox serving others.
    A `cancel` frame cancels a call's task (its timeout); the answer says so. Answers that are ready in
    the same turn of the loop leave in one write.
    """

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
        self.report_cpu = bool(config.get("cpu_seconds"))  # the pool recycles a process at half its CPU budget
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._out: list[bytes] = []
        self._done: asyncio.Future[int] | None = None

    async def serve(self) -> int:
        """Serve calls until the worker closes the pipe (or sends `exit`); the exit status."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        pipe = os.fdopen(self.channel.read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: _Inbox(self), pipe)
        try:
            return await self._done
        finally:
            transport.close()

    def stop(self, status: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(status)

    def dispatch(self, message: Mapping[str, Any]) -> None:
        kind = message.get("t")
        if kind == "call":
            call_id = int(message.get("id") or 0)
            target = self.targets.get(message["function"])
            if target is not None and not target.is_async:
                # a sync function the worker sent to this process alone: run it now, answer at once
                token = CURRENT_CALL.set(call_id)
                try:
                    frame = self._call_sync(call_id, message, target)
                finally:
                    CURRENT_CALL.reset(token)
                if frame is not None:
                    self._answer(frame)
                return
            self._start_task(call_id, self.call(call_id, message))
        elif kind == "cancel":
            running = self.tasks.get(int(message.get("id") or 0))
            if running is not None:
                running.cancel()
        elif kind == "exit":
            self.stop(0)

    def _start_task(self, call_id: int, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks[call_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(call_id, None))

    def _target(self, function: str) -> Target:
        target = self.targets.get(function)
        if target is None:
            target = target_for(function, self.modules.resolve(function))
            self.targets[function] = target
        return target

    def _context(self, message: Mapping[str, Any]) -> TaskContext:
        function: str = message["function"]
        logger = self.loggers.get(function)
        if logger is None:
            logger = self.loggers[function] = logging.getLogger(function.partition(":")[0])
        return TaskContext(message["ctx"], message.get("secrets") or {}, logger)

    def _call_sync(self, call_id: int, message: Mapping[str, Any], target: Target) -> bytes | None:
        """Call a sync function; its answer frame (None: it returned an awaitable, a task answers)."""
        function: str = message["function"]
        ctx = self._context(message)
        try:
            result = target.func(**bind(function, target, message.get("args") or {}, ctx))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of task code is the step's (sys.exit too)
            return self._answer_frame(call_id, False, function, exc=exc)
        finally:
            del ctx
        if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
            self._start_task(call_id, self._await_result(call_id, function, result))
            return None
        return self._answer_frame(call_id, False, function, result=result)

    async def _await_result(self, call_id: int, function: str, awaitable: Any) -> None:
        CURRENT_CALL.set(call_id)
        try:
            result = await awaitable
        except asyncio.CancelledError:
            self._answer(_cancelled(call_id, False, function))
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of task code is the step's
            self._answer(self._answer_frame(call_id, False, function, exc=exc))
        else:
            self._answer(self._answer_frame(call_id, False, function, result=result))

    async def call(self, call_id: int, message: Mapping[str, Any]) -> None:
        """A call as a task: an async function, or a function called for the first time (resolved here)."""
        CURRENT_CALL.set(call_id)  # this task's own context: its log lines name the call
        function: str = message["function"]
        ctx = self._context(message)
        is_async = False
        try:
            target = self._target(function)
            is_async = target.is_async
            kwargs = bind(function, target, message.get("args") or {}, ctx)
            if is_async:
                result = await target.func(**kwargs)
            else:
                result = target.func(**kwargs)
                if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
                    result = await result
        except asyncio.CancelledError:
            frame = _cancelled(call_id, is_async, function)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of task code is the step's (sys.exit too)
            frame = self._answer_frame(call_id, is_async, function, exc=exc)
        else:
            frame = self._answer_frame(call_id, is_async, function, result=result)
        finally:
            del ctx
        self._answer(frame)

    def _answer_frame(self, call_id: int, is_async: bool, function: str, *, result: Any = None,
                      exc: BaseException | None = None) -> bytes:
        self.stdout.flush()  # every printed line of the call leaves before its answer
        self.stderr.flush()
        if exc is not None:
            return _error_frame(call_id, is_async, failure(exc))
        try:
            return _frame(orjson.dumps({"t": "result", "id": call_id, "async": is_async, "value": result,
                                        "cpu": time.process_time() if self.report_cpu else None}))
        except orjson.JSONEncodeError:
            return _error_frame(call_id, is_async, not_json(function, result))

    def _answer(self, frame: bytes) -> None:
        """Send an answer: at once when no other call is running here, else with the others that finish in
        this turn of the loop (one write, one wake-up of the worker for all of them)."""
        if len(self.tasks) <= 1 and not self._out:
            self.channel.send_raw(frame)
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        frames, self._out = self._out, []
        self.channel.send_raw(frames[0] if len(frames) == 1 else b"".join(frames))


def _cancelled(call_id: int, is_async: bool, function: str) -> bytes:
    return _error_frame(call_id, is_async, StepFailed(f"{function} was cancelled (its timeout)", retryable=True))


class _Inbox(asyncio.Protocol):
    """The protocol pipe from the worker: frames in, dispatched to the runner."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ProtocolError:
            self._runner.stop(65)
            return
        for message in messages:
            self._runner.dispatch(message)

    def eof_received(self) -> bool:
        self._runner.stop(0)  # the worker closed the pipe: exit
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._runner.stop(0)


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def _error_frame(call_id: int, is_async: bool, exc: StepFailed) -> bytes:
    return _frame(orjson.dumps({"t": "error", "id": call_id, "async": is_async,
                                "reason": str(exc.reason)[:MAX_REASON], "retryable": bool(exc.retryable),
                                "retry_after": None if exc.retry_after is None else float(exc.retry_after),
                                "cpu": time.process_time()}))
