"""The python step: import targets, sync/async calls, ctx injection and error classification.

Every test runs in both isolation modes (a sandbox process, and inline) unless it is about one of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from worker.config import Settings
from worker.errors import StepFailed
from worker.models import RunId
from worker.sandbox.modules import TaskModules
from worker.steps.base import StepContext, idempotency_key
from worker.steps.python_step import PythonExecutor
from worker.steps.registry import build_executors, close_executors
from worker.steps.set_step import SetExecutor

FUNCS = "tests.support.pyfuncs"
MODULES = TaskModules.from_settings(Settings(task_modules=("tests.support",)))


MODES = ["process", "inline"]


def make_settings(mode: str) -> Settings:
    return Settings(python_isolation=mode, task_modules=("tests.support",), sandbox_min=1, sandbox_max=2)


def make_ctx(step_id: str = "py", attempt: int = 1) -> StepContext:
    return StepContext(
        run_id=RunId("run-9"),
        workflow="wf",
        step_id=step_id,
        item=None,
        attempt=attempt,
        idempotency_key=idempotency_key("run-9", step_id, None),
        timeout=None,
        settings=Settings(),
        logger=logging.getLogger("test"),
    )


@pytest.fixture(params=MODES)
async def ex(request: pytest.FixtureRequest) -> AsyncIterator[PythonExecutor]:
    executor = PythonExecutor(make_settings(request.param))
    yield executor
    await executor.aclose()


async def run(ex: PythonExecutor, function: str, args: dict[str, Any] | None = None) -> Any:
    return await ex.execute({"function": function, "args": args or {}}, make_ctx())


async def failure(ex: PythonExecutor, function: str, args: dict[str, Any] | None = None) -> StepFailed:
    with pytest.raises(StepFailed) as info:
        await run(ex, function, args)
    return info.value


async def test_sync_function_runs_in_a_thread_when_inline() -> None:
    ex = PythonExecutor(make_settings("inline"))
    out = await run(ex, f"{FUNCS}:add", {"a": 2, "b": 3})
    await ex.aclose()
    assert out["sum"] == 5
    assert out["thread"] != threading.current_thread().name


async def test_sync_function_returns(ex: PythonExecutor) -> None:
    assert (await run(ex, f"{FUNCS}:add", {"a": 2, "b": 3}))["sum"] == 5


async def test_async_function_is_awaited(ex: PythonExecutor) -> None:
    assert await run(ex, f"{FUNCS}:async_mul", {"a": 4, "b": 5}) == 20


async def test_ctx_is_injected_when_asked_for(ex: PythonExecutor) -> None:
    out = await run(ex, f"{FUNCS}:with_ctx", {"name": "ada"})
    assert out == {"hello": "ada", "key": "agentrt:run-9:py", "step": "py", "attempt": 1}
    assert await run(ex, f"{FUNCS}:async_with_ctx") == "agentrt:run-9:py.1"


async def test_ctx_cannot_be_passed_as_an_argument(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:with_ctx", {"name": "ada", "ctx": "forged"})
    assert error.retryable is False
    assert "`ctx` is passed by the runtime" in error.reason


async def test_ctx_is_not_passed_to_functions_without_it(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:add", {"a": 1, "b": 2, "ctx": 1})
    assert error.retryable is False
    assert "bad arguments" in error.reason


async def test_wrong_arguments_are_not_retryable(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:add", {"a": 1})
    assert error.retryable is False
    assert "add" in error.reason and "b" in error.reason


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        ("tests.support.no_such_module:f", "tests.support.no_such_module:f"),
        (f"{FUNCS}:no_such_function", "no_such_function"),
        (f"{FUNCS}:NOT_CALLABLE", "not a function"),
        ("os:getenv", "standard library"),
    ],
)
async def test_bad_target_is_not_retryable(ex: PythonExecutor, function: str, fragment: str) -> None:
    error = await failure(ex, function)
    assert error.retryable is False
    assert fragment in error.reason


@pytest.mark.parametrize("function", ["no colon", "mod:", ":func", "mod:1bad"])
async def test_malformed_target_is_rejected(ex: PythonExecutor, function: str) -> None:
    error = await failure(ex, function)
    assert error.retryable is False
    assert "function" in error.reason


async def test_non_json_return_is_not_retryable(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:not_json")
    assert error.retryable is False
    assert error.reason == f"{FUNCS}:not_json returned a value that is not JSON: object"


async def test_return_value_is_normalised_to_json(ex: PythonExecutor) -> None:
    assert await run(ex, f"{FUNCS}:returns_tuple") == [1, 2]


async def test_exception_is_retryable(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:boom", {"message": "disk full"})
    assert error.retryable is True
    assert error.reason == "ValueError: disk full"
    if ex.isolation == "inline":  # a sandbox sends back the type name and message, not the object
        assert isinstance(error.__cause__, ValueError)


async def test_async_exception_is_retryable(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:async_boom")
    assert error.retryable is True
    assert error.reason == "RuntimeError: async kaput"


async def test_step_failed_passes_through(ex: PythonExecutor) -> None:
    error = await failure(ex, f"{FUNCS}:fails_permanently")
    assert error.retryable is False
    assert error.reason == "the ticket is closed"


async def test_resolved_callables_are_cached_inline() -> None:
    ex = PythonExecutor(make_settings("inline"))
    await run(ex, f"{FUNCS}:async_mul", {"a": 1, "b": 1})
    await run(ex, f"{FUNCS}:async_mul", {"a": 2, "b": 2})
    cached = list(ex._targets)
    await ex.aclose()
    assert cached == [f"{FUNCS}:async_mul"]


async def test_set_returns_its_arguments() -> None:
    args = {"a": 1, "b": {"c": [1, 2]}}
    out = await SetExecutor().execute(args, make_ctx())
    assert out == args
    assert out is not args


async def test_registry_builds_every_kind() -> None:
    executors = build_executors(Settings())
    assert set(executors) == {"http", "python", "set", "llm", "tool", "agent"}
    assert all(kind == ex.kind for kind, ex in executors.items())
    python = executors["python"]
    assert isinstance(python, PythonExecutor) and python.isolation == "process"  # the default
    await close_executors(executors)
