"""The operators an expression can use, each bounded before it does its work."""

from __future__ import annotations

import ast
import operator as op
from collections.abc import Callable
from typing import Any

from worker.definitions.expressions.limits import (
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_TEXT_LENGTH,
    LimitError,
    charge,
    check_size,
)
from worker.definitions.expressions.sizes import measure, remaining

_BIG_INT_BITS = 4096
_INT_UNITS_PER_BIT = 16
"""Big-integer arithmetic counts 16 units per result bit (a 65536-bit product costs about as much CPU
as copying a million characters)."""


def _sized_limit(value: object) -> int:
    return MAX_TEXT_LENGTH if isinstance(value, str) else MAX_ITEMS


def _add(a: object, b: object) -> object:
    if isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple):
        length = len(a) + len(b)
        check_size(length, _sized_limit(a), "+")
        charge(length, "+")
    return op.add(a, b)  # type: ignore[call-overload]


def _mult(a: object, b: object) -> object:
    if isinstance(a, int) and isinstance(b, int):
        bits = a.bit_length() + b.bit_length()
        if bits > MAX_INT_BITS:
            raise LimitError("the result of * would be too large")
        if bits > _BIG_INT_BITS:
            charge(bits * _INT_UNITS_PER_BIT, "*")
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            length = len(seq) * max(times, 0)
            check_size(length, _sized_limit(seq), "*")
            charge(length, "*")
    return op.mul(a, b)  # type: ignore[call-overload]


def _mod(a: object, b: object) -> object:
    if isinstance(a, str | bytes):
        raise LimitError("string formatting with % is not supported; use interpolation or join()")
    return op.mod(a, b)  # type: ignore[call-overload]


def _pow(a: object, b: object) -> object:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if abs(b) > 1_000_000:
            raise LimitError(f"exponent {b} is too large")
        big = isinstance(a, int) and isinstance(b, int) and b > 0 and a.bit_length() * b > MAX_INT_BITS
        if big and abs(a) > 1:
            raise LimitError(f"the result of {a} ** {b} would be too large")
        if isinstance(a, int) and isinstance(b, int) and b > 0 and a.bit_length() * b > _BIG_INT_BITS:
            charge(a.bit_length() * b * _INT_UNITS_PER_BIT, "**")
    result = op.pow(a, b)  # type: ignore[call-overload]
    if isinstance(result, complex):
        raise LimitError("the result is not a real number")
    return result


def _compare_cost(a: object, b: object) -> None:
    """Charge comparing two values: at most the size of the smaller one (lists compare item by item)."""
    if isinstance(a, str) and isinstance(b, str):
        shorter = min(len(a), len(b))
        if shorter > 256:
            charge(shorter, "comparison")
    elif isinstance(a, dict | list | tuple) and isinstance(b, dict | list | tuple):
        cap = remaining()
        charge(min(measure(a, cap), measure(b, cap)), "comparison")


_CHEAP: frozenset[type] = frozenset({int, float, bool, type(None)})


def _compare(compare: Callable[[Any, Any], Any]) -> Callable[[object, object], object]:
    def bounded(a: object, b: object) -> object:
        if type(a) not in _CHEAP or type(b) not in _CHEAP:  # numbers compare in O(1)
            _compare_cost(a, b)
        return compare(a, b)

    return bounded


def contains_cost(container: object, item: object) -> None:
    if isinstance(container, str):
        if len(container) > 256:
            charge(len(container) + (len(item) if isinstance(item, str) else 0), "in")
    elif isinstance(container, list | tuple):
        if isinstance(item, str | int | float | bool) or item is None:
            per_item = len(item) + 1 if isinstance(item, str) else 1
        else:
            per_item = measure(item, remaining())
        charge(len(container) * per_item, "in")
    elif isinstance(item, str) and len(item) > 256:
        charge(len(item), "in")  # hashing the key


def _in(item: object, container: object) -> bool:
    contains_cost(container, item)
    return item in container  # type: ignore[operator]


def _not_in(item: object, container: object) -> bool:
    contains_cost(container, item)
    return item not in container  # type: ignore[operator]


OPERATORS: dict[type, Callable[..., object]] = {
    ast.Add: _add,
    ast.Sub: op.sub,
    ast.Mult: _mult,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
    ast.Eq: _compare(op.eq),
    ast.NotEq: _compare(op.ne),
    ast.Lt: _compare(op.lt),
    ast.LtE: _compare(op.le),
    ast.Gt: _compare(op.gt),
    ast.GtE: _compare(op.ge),
    ast.In: _in,
    ast.NotIn: _not_in,
    ast.Is: lambda x, y: x is y,
    ast.IsNot: lambda x, y: x is not y,
    ast.Not: op.not_,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
}

OPERATOR_SYMBOLS: dict[type, str] = {
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
    ast.MatMult: "@", ast.Invert: "~",
}

HEAVY_OPERATORS: frozenset[type] = frozenset({ast.Mult, ast.Pow})
"""Operators that amplify: a short source builds something large. `+` is not one of them: what it
copies is bounded by the work budget, a few milliseconds of memory copying at most."""

