"""Calling a task function: ctx injection, argument binding, error and result classification.

Shared by the sandbox process and the inline executor, so both give the same errors. Only stdlib,
orjson and `worker.errors` here: the sandbox imports this.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from worker.errors import StepFailed


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved task function and what the runtime needs to know to call it."""

    func: Callable[..., Any]
    signature: inspect.Signature | None
    wants_ctx: bool
    is_async: bool


def target_for(function: str, func: Any) -> Target:
    """`func` (what `module:name` resolved to) as a Target; StepFailed if it cannot be called."""
    if not callable(func):
        raise StepFailed(f"cannot call {function}: it is a {type(func).__name__}, not a function", retryable=False)
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no introspectable signature
        signature = None
    wants_ctx = signature is not None and any(
        p.name == "ctx" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in signature.parameters.values()
    )
    return Target(func, signature, wants_ctx, inspect.iscoroutinefunction(func))


def bind(function: str, target: Target, args: dict[str, Any], ctx: object) -> dict[str, Any]:
    """The keyword arguments of the call (with `ctx=` when the function asks for it)."""
    kwargs = dict(args)
    if target.wants_ctx:
        if "ctx" in kwargs:
            raise StepFailed(f"{function}: `ctx` is passed by the runtime and cannot be an argument",
                             retryable=False)
        kwargs["ctx"] = ctx
    if target.signature is not None:
        try:
            target.signature.bind(**kwargs)
        except TypeError as exc:
            raise StepFailed(f"{function}: bad arguments: {exc}", retryable=False) from exc
    return kwargs


def failure(exc: BaseException) -> StepFailed:
    """What an exception raised by task code becomes: StepFailed keeps its flags, anything else is retryable."""
    if isinstance(exc, StepFailed):
        return exc
    return StepFailed(f"{type(exc).__name__}: {exc}", retryable=True)


def not_json(function: str, result: object) -> StepFailed:
    return StepFailed(f"{function} returned a value that is not JSON: {type(result).__name__}", retryable=False)


def to_json(function: str, result: object) -> bytes:
    try:
        return orjson.dumps(result)
    except orjson.JSONEncodeError as exc:
        raise not_json(function, result) from exc
