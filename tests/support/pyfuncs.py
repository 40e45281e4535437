"""Small functions used as `uses: python` targets in tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from worker.errors import StepFailed
from worker.steps.base import StepContext


def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b, "thread": threading.current_thread().name}


async def async_mul(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


def with_ctx(name: str, ctx: StepContext) -> dict[str, Any]:
    return {"hello": name, "key": ctx.idempotency_key, "step": ctx.step_id, "attempt": ctx.attempt}


async def async_with_ctx(*, ctx: StepContext) -> str:
    return ctx.key_for(1)


def not_json() -> object:
    return object()


def returns_tuple() -> tuple[int, int]:
    return (1, 2)


def boom(message: str = "kaput") -> None:
    raise ValueError(message)


async def async_boom() -> None:
    raise RuntimeError("async kaput")


def fails_permanently() -> None:
    raise StepFailed("the ticket is closed", retryable=False)


NOT_CALLABLE = 42
