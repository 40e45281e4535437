"""The sandbox pool: warm processes that run `python` steps, one step at a time each.

`sandbox_min` processes are started with the worker (or at the first step) and kept; more are
started on demand up to `sandbox_max`, and those above the minimum exit after `IDLE_SECONDS` idle.
A process that dies is reaped and replaced; a step that is cancelled (its timeout) kills its
process; a process is recycled after `RECYCLE_STEPS` steps or half its CPU budget.
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
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(StepFailed("the worker is stopping", retryable=True))
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
    async def run(self, frame: bytes) -> dict[str, Any]:
        """Run one call frame in a sandbox; the `result`/`error` message. Cancelled: the process is killed."""
        if self._started is None or not self._started.done():
            await self.start()
        sandbox = await self._acquire()
        try:
            return await sandbox.call(frame)
        except asyncio.CancelledError:
            # a timeout (or the run being stopped): the only way to stop code that is running
            sandbox.kill("the step timed out or was cancelled")
            raise
        finally:
            sandbox.steps += 1
            self._release(sandbox)

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
        cpu_budget = self.settings.sandbox_cpu_seconds
        if sandbox.steps > RECYCLE_STEPS or (cpu_budget and sandbox.cpu > cpu_budget / 2):
            sandbox.retire()  # _exited replaces it
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(sandbox)
                return
        self._idle.append(sandbox)

    async def _spawn(self) -> Sandbox:
        sandbox = Sandbox(self._exited)
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
