"""One sandbox process, seen from the worker: spawn, calls (one sync or several async), death, kill, reap.

The process's stdout pipe carries protocol frames (read with `loop.connect_read_pipe`, decoded in
`data_received`), its stdin pipe carries calls, its stderr pipe carries whatever the process wrote at
the descriptor level (C code, subprocesses, a crash's traceback): log lines. Its exit is seen through
a pidfd, so it is reaped as soon as it dies, and a call it was running fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib.machinery
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from worker.errors import StepFailed
from worker.sandbox.protocol import FrameDecoder, ProtocolError, call_frame_with_id, encode

logger = logging.getLogger(__name__)

WORKER_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the `worker` package
CANCEL_GRACE = 1.0  # seconds a cancelled async call may take to stop before its process is killed


def runtime_path() -> tuple[str, ...]:
    """What a sandbox needs on its path to run `worker.sandbox.child`: nothing when the runtime is
    installed (site-packages, or an editable install's finder), else the checkout's root."""
    package = str(Path(__file__).resolve().parents[1])
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            continue
        try:
            spec = finder.find_spec("worker", None)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a foreign finder: not ours
            spec = None
        if spec is not None and spec.origin and str(Path(spec.origin).resolve().parent) == package:
            return ()
    site_dirs = [os.path.realpath(d) for d in site.getsitepackages()]
    if any(package.startswith(d + os.sep) for d in site_dirs):
        return ()
    return (WORKER_ROOT,)


class SandboxStartError(Exception):
    """A sandbox process could not start or refused to run (its limits could not be applied)."""


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        hint = {"SIGKILL": ": killed (out of memory, or by an operator)",
                "SIGXCPU": ": CPU time limit, AGENTRT_SANDBOX_CPU_SECONDS",
                "SIGSEGV": ": crashed"}.get(name, "")
        return f"signal {number}, {name}{hint}"
    return f"exit code {returncode}"


class _Call:
    __slots__ = ("answered", "context", "future")

    def __init__(self, future: asyncio.Future[dict[str, Any]], context: contextvars.Context) -> None:
        self.future = future
        self.context = context
        self.answered = False  # stays registered until its caller resumes: stderr lines read meanwhile are its


def _emit(level: int, name: str, message: str, created: float | None, pid: int) -> None:
    """Re-emit a sandbox log record here (inside the step's context: captured and redacted as inline)."""
    log = logging.getLogger(name)
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(name, level, "(sandbox)", 0, "%s", (message,), None)
    if isinstance(created, float):
        record.created = created
    record.sandbox_pid = pid
    log.handle(record)


def _popen(argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            close_fds=True, start_new_session=True, env=env, cwd=cwd)


def _kill_orphan(started: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A sandbox process whose start was cancelled: SIGKILL its group and reap it (no zombie, no leak)."""
    if started.cancelled() or started.exception() is not None:
        return
    popen = started.result()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    threading.Thread(target=popen.wait, name="sandbox-reaper", daemon=True).start()


class Sandbox(asyncio.Protocol):
    """A running sandbox process. `call` sends one request and waits for its answer; several may be in
    flight (the pool sends only async functions' calls to a sandbox that is serving another)."""

    def __init__(self, on_exit: Callable[[Sandbox], None],
                 on_room: Callable[[Sandbox], None] | None = None) -> None:
        self._on_exit = on_exit
        self._on_room = on_room  # a cancelled call has stopped: its room is free
        self._decoder = FrameDecoder()
        self._calls: dict[int, _Call] = {}
        self._cancelling: dict[int, asyncio.TimerHandle] = {}  # cancelled calls not answered yet
        self._next_id = 1
        self._outbox: list[bytes] = []  # shared calls sent in this turn of the loop: one write for all
        self._writer: asyncio.WriteTransport | None = None
        self._readers: list[asyncio.BaseTransport] = []
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._home = ""
        self._eof = False
        self._kill_reason: str | None = None
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pid = 0
        self.steps = 0
        self.reserved = 0  # async calls the pool has promised room here, not sent yet
        self.cpu = 0.0
        self.last_used = time.monotonic()
        self.returncode: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def spawn(self, config: dict[str, Any], env: dict[str, str], home: str,
                    start_within: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self._home = home
        # in a thread: vfork suspends the caller until the child execs, which can take a while on a busy host
        starting: asyncio.Future[subprocess.Popen[bytes]] = loop.run_in_executor(None, functools.partial(
            _popen, [sys.executable, "-m", "worker.sandbox.child"], env, home))
        try:
            popen = self._popen = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # cancelled (the worker stops) while the thread starts the process: kill and reap it once it exists
            starting.add_done_callback(_kill_orphan)
            if not self.finished.done():
                self.finished.set_result(None)
            raise
        self.pid = popen.pid
        assert popen.stdin and popen.stdout and popen.stderr
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._exited)  # from here on, a killed process is reaped by _exited
        try:
            self._writer, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, popen.stdin)
            reader, _ = await loop.connect_read_pipe(lambda: self, popen.stdout)
            err, _ = await loop.connect_read_pipe(lambda: _StderrLines(self), popen.stderr)
            self._readers = [reader, err]
            self._writer.write(encode({"t": "config", **config}))
            async with asyncio.timeout(start_within):
                return await self.ready
        except BaseException:
            self.kill("did not start")
            raise

    @property
    def alive(self) -> bool:
        return self._kill_reason is None and self.returncode is None and not self._eof

    @property
    def kill_reason(self) -> str | None:
        return self._kill_reason

    @property
    def busy(self) -> bool:
        return bool(self._calls or self._cancelling)

    @property
    def inflight(self) -> int:
        """Calls sent and not answered (cancelled ones included until they stop)."""
        return len(self._calls) + len(self._cancelling)

    def kill(self, reason: str) -> None:
        """SIGKILL the sandbox's process group (it and anything it started); reaped when the pidfd fires."""
        if self._kill_reason is None:
            self._kill_reason = reason
        if self._popen is not None and self.returncode is None:  # not reaped: the pid is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def retire(self) -> None:
        """Ask an idle sandbox to exit (it reads EOF on its stdin); killed if it does not within 2 s."""
        self._kill_reason = self._kill_reason or "retired"
        if self._writer is not None:
            self._writer.close()
        asyncio.get_running_loop().call_later(2.0, self.kill, "retired")

    # -- calls -------------------------------------------------------------------------------
    async def call(self, payload: bytes, *, cancel_kills: bool) -> dict[str, Any]:
        """Send one call (`payload`: its JSON object); the answer (`result` or `error` message). Log frames
        are re-emitted meanwhile. Cancelled (the step's timeout): with `cancel_kills` the process is killed
        (the only way to stop sync code), else the call is cancelled inside it and the process is killed only
        if the call does not stop within CANCEL_GRACE."""
        assert self._writer is not None
        call_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        call = self._calls[call_id] = _Call(future, contextvars.copy_context())
        if cancel_kills or (len(self._calls) == 1 and not self._outbox):  # alone here: nothing to wait for
            self._writer.write(call_frame_with_id(payload, call_id))
        else:
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._send_outbox)
            self._outbox.append(call_frame_with_id(payload, call_id))
        try:
            return await future
        except asyncio.CancelledError:
            if call_id in self._calls and not call.answered:
                if cancel_kills:
                    self.kill("the step timed out or was cancelled")
                else:
                    self._cancel(call_id)
            raise
        finally:
            self._calls.pop(call_id, None)
            self.last_used = time.monotonic()

    def _send_outbox(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    def _cancel(self, call_id: int) -> None:
        del self._calls[call_id]
        if not self.alive or self._writer is None:
            return
        self._writer.write(encode({"t": "cancel", "id": call_id}))
        self._cancelling[call_id] = asyncio.get_running_loop().call_later(
            CANCEL_GRACE, self.kill, "a step in it overran its timeout and did not stop when cancelled")

    def _single_call(self, call_id: object) -> _Call | None:
        """The call a log line belongs to: the one it names, else the only one running."""
        call = self._calls.get(call_id) if isinstance(call_id, int) else None
        if call is None and len(self._calls) == 1:
            call = next(iter(self._calls.values()))
        return call

    # -- asyncio.Protocol (the stdout pipe) --------------------------------------------------
    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._violation(str(exc))
            return
        for message in messages:
            self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "log":
            args = (int(message.get("level") or logging.INFO), str(message.get("name") or "task"),
                    str(message.get("msg")), message.get("created"), self.pid)
            call = self._single_call(message.get("id"))
            if call is not None:
                call.context.run(_emit, *args)
            else:
                _emit(*args)
        elif kind in ("result", "error"):
            call_id = message.get("id")
            cpu = message.get("cpu")
            if isinstance(cpu, float):
                self.cpu = cpu
            call = self._calls.get(call_id) if isinstance(call_id, int) else None
            if call is None or call.answered:
                timer = self._cancelling.pop(call_id, None) if isinstance(call_id, int) else None
                if timer is None:
                    self._violation(f"a {kind} frame for no call that is running")
                    return
                timer.cancel()  # a cancelled call has stopped
                if self._on_room is not None:
                    self._on_room(self)
                return
            call.answered = True
            if not call.future.done():  # done: the step was cancelled just as the answer came
                call.future.set_result(message)
        elif kind == "ready":
            if not self.ready.done():
                self.ready.set_result(message)
        elif kind == "fatal":
            if not self.ready.done():
                self.ready.set_exception(SandboxStartError(str(message.get("message"))))
        else:
            self._violation(f"unknown frame {str(kind)[:40]!r}")

    def _violation(self, what: str) -> None:
        logger.warning("sandbox %d broke the protocol (%s): killed", self.pid, what)
        self.kill(f"broke the protocol ({what})")

    def eof_received(self) -> bool:
        self._eof = True
        if self.returncode is None:  # usually it is exiting; if it only closed its pipe, it cannot answer any more
            asyncio.get_running_loop().call_later(1.0, self._closed_pipe)
        return False

    def _closed_pipe(self) -> None:
        if self.returncode is None:
            self.kill("closed its protocol pipe")

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True

    # -- exit ----------------------------------------------------------------------------------
    def _exited(self) -> None:
        assert self._popen is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = self._popen.wait()  # the pidfd is readable: it has exited, this does not block
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # whatever it forked (same process group) goes with it
        # frames it wrote just before dying may still be in the pipe: read them first
        loop.call_soon(self._finish)

    def _finish(self) -> None:
        # also when something it forked (and then left the process group) still holds the pipes open
        for transport in (*self._readers, *([self._writer] if self._writer is not None else [])):
            transport.close()
        if self._kill_reason is not None:
            reason = f"the sandbox process running this step was killed ({self._kill_reason})"
        else:
            reason = f"the sandbox process running this step died ({_describe_exit(self.returncode or 0)})"
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(StepFailed(f"{reason}; a fresh one was started", retryable=True))
        for timer in self._cancelling.values():
            timer.cancel()
        self._cancelling.clear()
        if not self.ready.done():
            self.ready.set_exception(SandboxStartError(
                f"the sandbox process exited while starting ({_describe_exit(self.returncode or 0)})"))
            self.ready.exception()  # retrieved: a start that nobody awaits any more must not warn
        shutil.rmtree(self._home, ignore_errors=True)
        if not self.finished.done():
            self.finished.set_result(None)
        self._on_exit(self)


class _StderrLines(asyncio.Protocol):
    """The sandbox's fds 1 and 2: each line is a log record of the step it runs (or of the worker)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > 8000:
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            self._line(line)

    def eof_received(self) -> bool:
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        return False

    def _line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if not text:
            return
        call = self._sandbox._single_call(None)
        args = (logging.WARNING, "task.stderr", text, None, self._sandbox.pid)
        if call is not None:
            call.context.run(_emit, *args)
        else:
            _emit(*args)


def call_payload(message: dict[str, Any]) -> bytes:
    """A call's JSON object (the sandbox adds its id); StepFailed if the arguments are not JSON."""
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError as exc:
        raise StepFailed(f"{message.get('function')}: the arguments are not JSON: {exc}", retryable=False) from exc
