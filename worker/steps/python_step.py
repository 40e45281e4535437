"""The `python` step: call `package.module:func` of a deployed task module with keyword arguments.

Two isolation modes (`AGENTRT_PYTHON_ISOLATION`):

- `process` (the default): the call runs in a sandbox process of `worker.sandbox` (scrubbed
  environment, rlimits, no capabilities, killed when the step times out). Only the function name,
  its arguments, the attempt's identity and the step's own secrets cross the pipe.
- `inline` (trusted single-tenant only): the call runs in the worker's process, sync functions in a
  thread; a thread cannot be interrupted, so a sync function that outlives its timeout keeps running.

Either way the function is resolved through `TaskModules.resolve` (only deployed task code).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from worker.config import Settings
from worker.definitions.step_args import PythonArgs
from worker.errors import StepFailed
from worker.sandbox.calling import Target, bind, failure, target_for, to_json
from worker.sandbox.modules import TaskModules
from worker.sandbox.pool import SandboxPool
from worker.sandbox.process import call_payload
from worker.steps.base import StepContext

logger = logging.getLogger(__name__)


class PythonExecutor:
    """Runs `uses: python` steps in the sandbox pool, or inline (resolved callables cached by name)."""

    kind: ClassVar[str] = "python"

    def __init__(self, settings: Settings | None = None, modules: TaskModules | None = None) -> None:
        settings = settings or Settings()
        self.isolation = settings.python_isolation
        self._modules = modules or TaskModules.from_settings(settings)
        self._targets: dict[str, Target] = {}
        self._allowed: set[str] = set()  # names the policy allows (it checks files: not on every step)
        self._threads: ThreadPoolExecutor | None = None
        self.pool: SandboxPool | None = None
        if self.isolation == "process":
            self.pool = SandboxPool(settings)
        else:
            # Sync functions get threads of their own: a function that overruns its timeout keeps its
            # thread (Python cannot stop it), and must not starve the loop's default executor, which
            # Vault reads, DNS lookups and file loading share.
            logger.warning("AGENTRT_PYTHON_ISOLATION=inline: python steps run in the worker's own process, with "
                           "its environment, files and memory (trusted single-tenant use only)")
            self._threads = ThreadPoolExecutor(max_workers=settings.python_threads, thread_name_prefix="python-step")
            for path in reversed(self._modules.search_path):  # task modules import in this process
                if path not in sys.path:
                    sys.path.insert(0, path)

    async def start(self) -> None:
        """Start the warm sandbox processes (also done by the first step)."""
        if self.pool is not None:
            await self.pool.start()

    async def aclose(self) -> None:
        self._targets.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        if self.pool is not None:
            await self.pool.aclose()

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        try:
            spec = PythonArgs.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise StepFailed(f"invalid python step arguments: {problems}", retryable=False) from exc
        if self.pool is not None:
            return await self._in_sandbox(spec.function, spec.args, ctx, self.pool)
        return await self._inline(spec.function, spec.args, ctx)

    async def _in_sandbox(self, function: str, args: dict[str, Any], ctx: StepContext, pool: SandboxPool) -> Any:
        # Refused here too (cheaply, by name) so a stored definition that the policy now refuses never
        # reaches a sandbox; the sandbox resolves (and checks the objects) itself.
        if function not in self._allowed:
            reason = self._modules.refusal(function)
            if reason is not None:
                raise StepFailed(reason, retryable=False)
            self._allowed.add(function)
        answer = await pool.run(call_payload({
            "t": "call", "function": function, "args": args,
            "ctx": {"run_id": ctx.run_id, "workflow": ctx.workflow, "step_id": ctx.step_id, "item": ctx.item,
                    "attempt": ctx.attempt, "idempotency_key": ctx.idempotency_key, "idempotent": ctx.idempotent,
                    "timeout": ctx.timeout, "traceparent": ctx.traceparent},
            "secrets": {name: dict(values) for name, values in ctx.secrets.items()},
        }), function)
        if answer["t"] == "error":
            retry_after = answer.get("retry_after")
            raise StepFailed(str(answer.get("reason")), retryable=bool(answer.get("retryable", True)),
                             retry_after=retry_after if isinstance(retry_after, float) else None)
        return answer.get("value")

    async def _inline(self, function: str, args: dict[str, Any], ctx: StepContext) -> Any:
        assert self._threads is not None
        target = self._resolve(function)
        kwargs = bind(function, target, args, ctx)
        try:
            if target.is_async:
                result = await target.func(**kwargs)
            else:
                call = functools.partial(contextvars.copy_context().run, target.func, **kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._threads, call)
                if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
                    result = await result
        except StepFailed:
            raise
        except Exception as exc:
            raise failure(exc) from exc
        # The round trip gives the plain JSON the store will hold, so the output is the same after a crash.
        return orjson.loads(to_json(function, result))

    def _resolve(self, function: str) -> Target:
        """The one place a function name becomes a callable (inline mode; the sandbox does the same)."""
        cached = self._targets.get(function)
        if cached is not None:
            return cached
        target = target_for(function, self._modules.resolve(function))
        self._targets[function] = target
        return target

