"""Sizes and text: how big a value is (bounded estimate) and its interpolation text."""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Mapping

from worker.definitions.expressions.limits import MAX_TEXT_LENGTH, MAX_WORK_UNITS, LimitError, charge, current

_SCALAR_SIZE = 24  # what a number, boolean or null counts for in a size estimate


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


# ---- sizes ----------------------------------------------------------------------------------


def measure(value: object, cap: int, seen: dict[int, int] | None = None) -> int:
    """Approximate length of `value` as JSON (shared parts counted each time they occur).

    Stops as soon as the size passes `cap` and returns a number above it, so the cost of measuring
    is bounded by `cap` and by the number of distinct containers inside `value`.
    """
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, bool | int | float):
        return _SCALAR_SIZE
    if not isinstance(value, Mapping | list | tuple):
        return len(str(value))
    if seen is None:
        seen = {}
    known = seen.get(id(value))
    if known is not None:
        return known
    size = 2
    if isinstance(value, Mapping):
        for key, item in value.items():
            size += len(str(key)) + 4 + measure(item, cap - size, seen)
            if size > cap:
                return size
    else:
        for item in value:
            size += 1 + measure(item, cap - size, seen)
            if size > cap:
                return size
    seen[id(value)] = size
    return size


def remaining() -> int:
    budget = current()
    return budget.units if budget.active else MAX_WORK_UNITS


def weigh(items: Iterable[object], what: str) -> int:
    """Units to compare each of `items` once with another (their total size); refuse over budget."""
    cap = remaining()
    seen: dict[int, int] = {}
    total = 0
    for item in items:
        total += len(item) + 1 if isinstance(item, str) else (
            1 if item is None or isinstance(item, bool | int | float) else measure(item, cap - total, seen))
        if total > cap:
            charge(total, what)  # raises: over what is left
    return total


# ---- text conversion ------------------------------------------------------------------------


def _json_text(value: object, cap: int = MAX_TEXT_LENGTH) -> str:
    size = measure(value, cap)
    if size > cap:
        raise LimitError(f"the result would be longer than {MAX_TEXT_LENGTH} characters")
    charge(size, "json()")
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def to_json(value: object) -> str:
    return _json_text(value)


def str_of(value: object) -> str:
    return to_text(value)


def to_text(value: object, *, cap: int = MAX_TEXT_LENGTH) -> str:
    """Convert a value to the text used when it is interpolated into a larger string.

    None becomes "", booleans "true"/"false", strings stay as they are, numbers use `str`, and
    mappings and lists become compact JSON. Raises `LimitError` when the text would be longer
    than `cap` (callers inside this package turn it into ExpressionError).
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        return _json_text(value, cap)
    return str(value)

