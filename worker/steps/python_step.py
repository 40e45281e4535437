"""The `python` step: call `package.module:func` with keyword arguments (and `ctx=` if it asks for it).

Sync functions run in a thread so they cannot stall the event loop; a thread cannot be interrupted,
so a sync function that outlives the step timeout keeps running until it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from worker.definitions.schema import PythonArgs
from worker.errors import StepFailed
from worker.steps.base import StepContext


@dataclass(frozen=True, slots=True)
class _Target:
    func: Callable[..., Any]
    signature: inspect.Signature | None
    wants_ctx: bool
    is_async: bool


class PythonExecutor:
    """Runs `uses: python` steps; resolved callables are cached by their `module:func` name."""

    kind: ClassVar[str] = "python"

    def __init__(self, max_threads: int = 32) -> None:
        self._targets: dict[str, _Target] = {}
        # Sync functions get threads of their own: a function that overruns its timeout keeps its
        # thread (Python cannot stop it), and must not starve the loop's default executor, which
        # Vault reads, DNS lookups and file loading share.
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="python-step")

    async def aclose(self) -> None:
        self._targets.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        try:
            spec = PythonArgs.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise StepFailed(f"invalid python step arguments: {problems}", retryable=False) from exc
        target = self._resolve(spec.function)
        kwargs = dict(spec.args)
        if target.wants_ctx:
            if "ctx" in kwargs:
                raise StepFailed(
                    f"{spec.function}: `ctx` is passed by the runtime and cannot be an argument",
                    retryable=False,
                )
            kwargs["ctx"] = ctx
        if target.signature is not None:
            try:
                target.signature.bind(**kwargs)
            except TypeError as exc:
                raise StepFailed(f"{spec.function}: bad arguments: {exc}", retryable=False) from exc
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
            raise StepFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        try:
            encoded = orjson.dumps(result)
        except orjson.JSONEncodeError as exc:
            raise StepFailed(
                f"{spec.function} returned a value that is not JSON: {type(result).__name__}", retryable=False
            ) from exc
        # The round trip gives the plain JSON the store will hold, so the output is the same after a crash.
        return orjson.loads(encoded)

    def _resolve(self, function: str) -> _Target:
        cached = self._targets.get(function)
        if cached is not None:
            return cached
        module_name, _, attr = function.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise StepFailed(f"cannot import {function}: {exc}", retryable=False) from exc
        except Exception as exc:  # the module itself raised while being imported (e.g. SyntaxError)
            raise StepFailed(
                f"cannot import {function}: {type(exc).__name__}: {exc}", retryable=False
            ) from exc
        try:
            func = getattr(module, attr)
        except AttributeError as exc:
            raise StepFailed(
                f"cannot import {function}: module {module_name!r} has no attribute {attr!r}", retryable=False
            ) from exc
        if not callable(func):
            raise StepFailed(
                f"cannot call {function}: it is a {type(func).__name__}, not a function", retryable=False
            )
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):  # some builtins have no introspectable signature
            signature = None
        wants_ctx = signature is not None and any(
            p.name == "ctx" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            for p in signature.parameters.values()
        )
        target = _Target(func, signature, wants_ctx, inspect.iscoroutinefunction(func))
        self._targets[function] = target
        return target
