"""The sandbox pool: warm processes that run `python` steps.

`sandbox_min` processes are started with the worker (or at the first step) and kept; more are
started on demand up to `sandbox_max`, and those above the minimum exit after `IDLE_SECONDS` idle.
A process that dies is reaped and replaced; a process is recycled after `RECYCLE_STEPS` steps or half
its CPU budget.

A sync function's call has a process to itself (it blocks that process's loop), and cancelling it (the
step's timeout) kills the process. An async function's calls share a process, up to
`sandbox_async_calls` at once (one wake-up then serves many calls, where a process per call costs a
wake-up and a switch each); cancelling one cancels its task there, and kills the process (its other
calls get a retryable error) only if the task does not stop within a second. Whether a function is
async is learned from its first answer (the worker never imports task code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections import deque
from typing import Any

from worker.config import Settings
from worker.errors import ConfigError, StepFailed
from worker.sandbox import limits
from worker.sandbox.modules import TaskModules
from worker.sandbox.process import Sandbox, SandboxStartError, runtime_path

logger = logging.getLogger(__name__)

IDLE_SECONDS = 60.0  # a process above sandbox_min that has been idle this long exits
RECYCLE_STEPS = 1000  # a process is replaced after this many steps (leaks in task code stay bounded)
START_TIMEOUT = 30.0  # seconds a new process may take to be ready
SHARED_GROW_AFTER = 0.02  # seconds async calls wait for room before another process is started for them


class SandboxPool:
    """Starts, hands out, replaces and stops sandbox processes. `run(frame)` runs one call."""

    def __init__(self, settings: Settings) -> None:
        problems = limits.check_env_allow(settings.sandbox_env_allow)
        if problems:
            raise ConfigError("; ".join(problems))
        try:
            user = limits.resolve_user(settings.sandbox_user)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if settings.sandbox_max < 1 or settings.sandbox_min < 0 or settings.sandbox_min > settings.sandbox_max:
            raise ConfigError(f"AGENTRT_SANDBOX_MIN ({settings.sandbox_min}) and AGENTRT_SANDBOX_MAX "
                              f"({settings.sandbox_max}) must satisfy 0 <= min <= max, max >= 1")
        if settings.sandbox_async_calls < 1:
            raise ConfigError(f"AGENTRT_SANDBOX_ASYNC_CALLS ({settings.sandbox_async_calls}) must be at least 1")
        modules = TaskModules.from_settings(settings)
        self.settings = settings
        self._user = user
        self._search_path = tuple(dict.fromkeys((*modules.search_path, *runtime_path())))
        self._config: dict[str, Any] = {
            "search_path": list(self._search_path),
            "workflows_dir": str(settings.workflows_dir.resolve()),
            "task_modules": None if settings.task_modules is None else list(settings.task_modules),
            "memory_mb": settings.sandbox_memory_mb, "cpu_seconds": settings.sandbox_cpu_seconds,
            "log_level": settings.log_level,
            "user": None if user is None else {"uid": user.uid, "gid": user.gid, "groups": list(user.groups)},
        }
        self._idle: list[Sandbox] = []  # LIFO: the most recently used process is the warmest
        self._shared: list[Sandbox] = []  # processes serving async calls (not idle, may take more of them)
        self._async_functions: set[str] = set()  # functions whose answers said they are async
        self._shared_waiters: deque[asyncio.Future[Sandbox]] = deque()  # async calls waiting for room
        self._growing: asyncio.Task[None] | None = None  # taking one more process for async calls
        self._all: set[Sandbox] = set()
        self._spawning: set[Sandbox] = set()  # started, not ready yet
        self._waiters: deque[asyncio.Future[Sandbox]] = deque()
        self._pending_spawns = 0  # background spawns not yet finished (inside or before _spawn)
        self._closed = False
        self._started: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.started_total = 0  # processes started over the pool's life (tests, doctor)
        self.startup_ms: list[float] = []  # each process's own setup time (limits, imports), as it reported it
        self.spawn_ms: list[float] = []  # each process's start to ready, seen from the worker (interpreter included)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the warm processes; safe to call again (and concurrently): the first call does it."""
        if self._started is None:
            self._started = asyncio.create_task(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        sandboxes = await asyncio.gather(*(self._spawn() for _ in range(self.settings.sandbox_min)),
                                         return_exceptions=True)
        errors = [s for s in sandboxes if isinstance(s, BaseException)]
        for sandbox in sandboxes:
            if isinstance(sandbox, Sandbox):
                self._release(sandbox)
        if errors:
            raise ConfigError(f"the sandbox pool could not start: {errors[0]}") from errors[0]
        user = "uid 0 without capabilities" if self._user is None and os.geteuid() == 0 else (
            f"user {self._user.name}" if self._user is not None else f"uid {os.geteuid()}")
        logger.info("python steps run in sandbox processes: %d warm (at most %d), memory limit %s, %s; "
                    "a process starts in %.0f ms", len(self._all), self.settings.sandbox_max,
                    f"{self.settings.sandbox_memory_mb} MB" if self.settings.sandbox_memory_mb else "none", user,
                    max(self.spawn_ms, default=0.0))
        self._housekeeping = asyncio.create_task(self._housekeep(), name="sandbox-housekeeping")

    async def aclose(self) -> None:
        """Kill every process and reap it (no zombie, nothing left behind)."""
        self._closed = True
        for task in (self._housekeeping, *self._background):
            if task is not None:
                task.cancel()
        for waiters in (self._waiters, self._shared_waiters):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(StepFailed("the worker is stopping", retryable=True))
        if self._growing is not None:
            self._growing.cancel()
        sandboxes = [*self._all, *self._spawning]
        for sandbox in sandboxes:
            sandbox.kill("the worker is stopping")
        if sandboxes:
            await asyncio.wait([s.finished for s in sandboxes], timeout=10.0)
        self._idle.clear()

    @property
    def size(self) -> int:
        return len(self._all)

    def pids(self) -> list[int]:
        return sorted(s.pid for s in self._all)

    # -- one call ----------------------------------------------------------------------------
    async def run(self, payload: bytes, function: str) -> dict[str, Any]:
        """Run one call (`payload`, its JSON object) of `function` in a sandbox; the `result`/`error` message."""
        if self._started is None or not self._started.done():
            await self.start()
        if function in self._async_functions:
            answer = await self._run_shared(payload)
        else:
            sandbox = await self._acquire()
            try:
                # cancelled (a timeout, or the run being stopped): killing is the only way to stop sync code
                answer = await sandbox.call(payload, cancel_kills=True)
            finally:
                sandbox.steps += 1
                self._release(sandbox)
        is_async = answer.get("async")
        if is_async is True:
            self._async_functions.add(function)
        elif is_async is False:
            self._async_functions.discard(function)
        return answer

    async def _run_shared(self, payload: bytes) -> dict[str, Any]:
        sandbox = await self._shared_sandbox()
        try:
            return await sandbox.call(payload, cancel_kills=False)
        finally:
            sandbox.steps += 1
            self._room_freed(sandbox)

    def _room_freed(self, sandbox: Sandbox) -> None:
        """A call of a shared process ended (or a cancelled one stopped): the next waiting call gets its room;
        a process with no call left is idle again."""
        self._hand_out_room()
        if not sandbox.busy and not sandbox.reserved:
            self._drained(sandbox)

    async def _shared_sandbox(self) -> Sandbox:
        """A process serving async calls with room for one more. When every one is full the call waits in
        line (first come, first served) for room to free up or for one more process, taken from the idle
        ones or started, one at a time however many calls wait."""
        while True:
            if not self._shared_waiters:
                sandbox = self._room()
                if sandbox is not None:
                    return sandbox
            waiter: asyncio.Future[Sandbox] = asyncio.get_running_loop().create_future()
            self._shared_waiters.append(waiter)
            if self._growing is None:
                self._growing = asyncio.get_running_loop().create_task(self._grow_shared(), name="sandbox-shared")
            try:
                sandbox = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    waiter.result().reserved -= 1  # room was handed over just as we were cancelled
                    self._hand_out_room()
                else:
                    with contextlib.suppress(ValueError):
                        self._shared_waiters.remove(waiter)
                raise
            sandbox.reserved -= 1
            if sandbox.alive:
                return sandbox

    def _room(self) -> Sandbox | None:
        limit = self.settings.sandbox_async_calls
        for sandbox in self._shared:
            if sandbox.inflight + sandbox.reserved < limit and sandbox.alive and not self._worn(sandbox):
                return sandbox
        return None

    def _hand_out_room(self) -> None:
        """Room in a shared process goes to the calls waiting for it, in order."""
        while self._shared_waiters:
            sandbox = self._room()
            if sandbox is None:
                return
            waiter = self._shared_waiters.popleft()
            if not waiter.done():
                sandbox.reserved += 1
                waiter.set_result(sandbox)

    async def _grow_shared(self) -> None:
        try:
            while self._shared_waiters and not self._closed:
                if not any(s.alive for s in self._idle):
                    # starting a process costs ~100 ms of CPU: first let room free up in the busy ones
                    await asyncio.sleep(SHARED_GROW_AFTER)
                    if not self._shared_waiters:
                        break
                sandbox = await self._acquire()
                self._shared.append(sandbox)
                self._hand_out_room()
                # if every call that waited for it was cancelled meanwhile, it goes back to the idle ones
                asyncio.get_running_loop().call_later(1.0, self._room_freed, sandbox)
        except StepFailed as exc:  # the pool is stopping, or no process could be started
            while self._shared_waiters:
                waiter = self._shared_waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            self._growing = None

    def _drained(self, sandbox: Sandbox) -> None:
        """A shared process has no call left: it is idle again (a sync call may have it)."""
        if sandbox in self._shared:
            self._shared.remove(sandbox)
            self._release(sandbox)

    def _worn(self, sandbox: Sandbox) -> bool:
        cpu_budget = self.settings.sandbox_cpu_seconds
        return sandbox.steps > RECYCLE_STEPS or bool(cpu_budget and sandbox.cpu > cpu_budget / 2)

    async def _acquire(self) -> Sandbox:
        while True:
            if self._closed:
                raise StepFailed("the worker is stopping", retryable=True)
            while self._idle:
                sandbox = self._idle.pop()
                if sandbox.alive:
                    return sandbox
            # Every process is busy: start one more (up to sandbox_max) and take whichever is free first, the
            # new one or one that finishes its step (a short step frees its process long before a new one is
            # ready, ~100 ms).
            if len(self._all) + max(len(self._spawning), self._pending_spawns) < self.settings.sandbox_max:
                self._background_spawn()
            waiter: asyncio.Future[Sandbox] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                sandbox = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._release(waiter.result())  # handed over just as we were cancelled
                raise
            if sandbox.alive:
                return sandbox

    def _release(self, sandbox: Sandbox) -> None:
        if not sandbox.alive or self._closed:
            return
        if self._worn(sandbox):
            sandbox.retire()  # _exited replaces it
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(sandbox)
                return
        self._idle.append(sandbox)

    async def _spawn(self) -> Sandbox:
        sandbox = Sandbox(self._exited, self._room_freed)
        self._spawning.add(sandbox)
        try:
            home = tempfile.mkdtemp(prefix="agentrt-sandbox-")
            if self._user is not None:
                os.chown(home, self._user.uid, self._user.gid)
            env = limits.sandbox_environment(os.environ, self.settings.sandbox_env_allow, home, self._search_path)
            started = time.perf_counter()
            ready = await sandbox.spawn(self._config, env, home, START_TIMEOUT)
            self.spawn_ms.append((time.perf_counter() - started) * 1000)
        finally:
            self._spawning.discard(sandbox)
        if sandbox.alive:
            self._all.add(sandbox)
        self.started_total += 1
        self.startup_ms.append(float(ready.get("startup_ms") or 0.0))
        if self._closed:
            sandbox.kill("the worker is stopping")
            raise StepFailed("the worker is stopping", retryable=True)
        return sandbox

    def _exited(self, sandbox: Sandbox) -> None:
        """A process was reaped (died, killed or retired): forget it, and start a replacement."""
        if sandbox not in self._all:  # it never became ready: whoever started it has the error
            return
        self._all.discard(sandbox)
        with contextlib.suppress(ValueError):
            self._idle.remove(sandbox)
        with contextlib.suppress(ValueError):
            self._shared.remove(sandbox)
        if self._closed:
            return
        # a process that died or was killed is replaced at once; one retired when idle only down to the minimum
        retired_idle = sandbox.kill_reason == "retired" and sandbox.steps <= RECYCLE_STEPS
        wanted = self.settings.sandbox_min if retired_idle else max(self.settings.sandbox_min, 1)
        if self._waiters:
            wanted = max(wanted, 1)
        if len(self._all) + len(self._spawning) < wanted:
            self._background_spawn()

    def _background_spawn(self) -> None:
        self._pending_spawns += 1

        async def spawn() -> None:
            try:
                sandbox = await self._spawn()
            except (SandboxStartError, StepFailed, OSError, TimeoutError) as exc:
                logger.warning("could not start a sandbox process: %s", exc)
                if not self._all and not self._spawning:  # nothing will free up: the waiting steps fail
                    while self._waiters:
                        waiter = self._waiters.popleft()
                        if not waiter.done():
                            waiter.set_exception(StepFailed(f"no sandbox process could be started: {exc}",
                                                            retryable=True))
                return
            finally:
                self._pending_spawns -= 1
            self._release(sandbox)

        task = asyncio.get_running_loop().create_task(spawn(), name="sandbox-spawn")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _housekeep(self) -> None:
        """Idle processes above sandbox_min exit after IDLE_SECONDS."""
        while True:
            await asyncio.sleep(min(IDLE_SECONDS / 4, 15.0))
            now = time.monotonic()
            for sandbox in list(self._idle):
                if len(self._all) <= self.settings.sandbox_min:
                    break
                if now - sandbox.last_used > IDLE_SECONDS:
                    self._idle.remove(sandbox)
                    sandbox.retire()
