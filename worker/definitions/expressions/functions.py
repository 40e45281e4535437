"""The functions an expression can call, each bounded before it does its work.

Every function that can build or scan something large checks its input and result against
`MAX_ITEMS` / `MAX_TEXT_LENGTH` first and charges the evaluation's budget (see `limits`).
"""

from __future__ import annotations

import json as _json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from worker.definitions.expressions.limits import (
    MAX_ITEMS,
    MAX_JSON_DEPTH,
    MAX_ROUND_DIGITS,
    MAX_TEXT_LENGTH,
    LimitError,
    charge,
    check_size,
)
from worker.definitions.expressions.operators import contains_cost
from worker.definitions.expressions.sizes import str_of, to_json, to_text, type_name, weigh


def _need_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}() needs a string, got {type_name(value)}")
    return value


def _case(name: str, s: object) -> str:
    text = _need_str(name, s)
    if not text.isascii():  # a character may become up to three (e.g. 'ﬃ'.upper() == 'FFI')
        check_size(3 * len(text), MAX_TEXT_LENGTH, f"{name}() of {len(text)} non-ASCII characters")
    charge(len(text), f"{name}()")
    return text.lower() if name == "lower" else text.upper()


def _lower(s: object) -> str:
    return _case("lower", s)


def _upper(s: object) -> str:
    return _case("upper", s)


def _contains(container: object, item: object) -> bool:
    if isinstance(container, str):
        needle = _need_str("contains", item)
        contains_cost(container, needle)
        return needle in container
    if isinstance(container, Mapping | list | tuple):
        contains_cost(container, item)
        return item in container
    raise TypeError(f"contains() needs a list, mapping or string, got {type_name(container)}")


def _startswith(s: object, prefix: object) -> bool:
    return _need_str("startswith", s).startswith(_need_str("startswith", prefix))


def _endswith(s: object, suffix: object) -> bool:
    return _need_str("endswith", s).endswith(_need_str("endswith", suffix))


def _join(items: object, sep: object = ",") -> str:
    if not isinstance(items, list | tuple):
        raise TypeError(f"join() needs a list, got {type_name(items)}")
    separator = _need_str("join", sep)
    check_size(len(items), MAX_ITEMS, "join() of a list")
    length = len(separator) * max(len(items) - 1, 0)
    check_size(length, MAX_TEXT_LENGTH, "join()")
    parts: list[str] = []
    for item in items:
        part = to_text(item, cap=MAX_TEXT_LENGTH - length)
        length += len(part)
        if length > MAX_TEXT_LENGTH:
            raise LimitError(f"the result of join() would be longer than {MAX_TEXT_LENGTH} characters")
        parts.append(part)
    charge(length, "join()")
    return separator.join(parts)


def _split(s: object, sep: object = None) -> list[str]:
    text = _need_str("split", s)
    separator = None if sep is None else _need_str("split", sep)
    if separator == "":
        raise LimitError("split() needs a non-empty separator")
    charge(len(text), "split()")
    parts = text.split(separator, MAX_ITEMS)  # at most MAX_ITEMS + 1 parts are ever made
    if len(parts) > MAX_ITEMS:
        raise LimitError(f"split() would make more than {MAX_ITEMS} parts")
    return parts


def _json_depth(document: object) -> int:
    depth = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            depth = max(depth, level)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return depth


def _fromjson(s: object) -> object:
    text = _need_str("fromjson", s)
    charge(len(text), "fromjson()")
    # every value after the first is preceded by a comma; `[` / `{` bound how many containers there are
    containers = text.count("[") + text.count("{")
    check_size(text.count(",") + 1 + containers, MAX_ITEMS, "fromjson() of this document")
    try:
        document = _json.loads(text)
    except RecursionError:
        raise LimitError(f"fromjson(): the document nests more than {MAX_JSON_DEPTH} levels deep") from None
    if containers > MAX_JSON_DEPTH and _json_depth(document) > MAX_JSON_DEPTH:
        raise LimitError(f"fromjson(): the document nests more than {MAX_JSON_DEPTH} levels deep")
    return document


def _get(container: object, key: object, default: object = None) -> object:
    if container is None:
        return default
    if isinstance(container, Mapping):
        return container.get(key, default)
    if isinstance(container, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else default
    raise TypeError(f"get() needs a mapping or a list, got {type_name(container)}")


def _default(value: object, fallback: object) -> object:
    return fallback if value is None else value


def _round(number: object, ndigits: object = None) -> object:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise LimitError(f"round() accepts at most {MAX_ROUND_DIGITS} digits")
    return round(number, ndigits)  # type: ignore[call-overload]


def _number(convert: Callable[[Any], Any]) -> Callable[[object], object]:
    def bounded(value: object) -> object:
        if isinstance(value, str) and len(value) > 256:
            charge(len(value), f"{convert.__name__}()")
        return convert(value)

    bounded.__name__ = convert.__name__
    return bounded


def _items_of(name: str, args: tuple[object, ...]) -> Iterable[object] | tuple[object, ...]:
    """The values `min`/`max`/`sorted` would iterate, after checking how many there are."""
    values = args[0] if len(args) == 1 else args
    if isinstance(values, str | list | tuple | Mapping):
        check_size(len(values), MAX_ITEMS, f"{name}() of {type_name(values)}")
        return values
    raise TypeError(f"{name}() needs a list, got {type_name(values)}")


def _extreme(name: str, pick: Callable[..., object]) -> Callable[..., object]:
    def bounded(*args: object, **kwargs: object) -> object:
        values = _items_of(name, args)
        charge(weigh(values, f"{name}()"), f"{name}()")
        return pick(*args, **kwargs)

    bounded.__name__ = name
    return bounded


def _sorted(values: object, *, reverse: object = False) -> list[object]:
    items = _items_of("sorted", (values,))
    n = len(items)  # type: ignore[arg-type]
    charge(n, "sorted()")  # the list it makes
    if n > 1:  # each item takes part in about log2(n) comparisons
        charge(weigh(items, "sorted()") * math.ceil(math.log2(n)), "sorted()")
    return sorted(items, reverse=bool(reverse))  # type: ignore[type-var]  # Python refuses mixed types


def _sum(values: object) -> object:
    if not isinstance(values, list | tuple):
        raise TypeError(f"sum() needs a list of numbers, got {type_name(values)}")
    check_size(len(values), MAX_ITEMS, "sum() of a list")
    charge(len(values), "sum()")
    return sum(values)  # type: ignore[arg-type]


FUNCTIONS: Mapping[str, Callable[..., object]] = {
    "len": len,
    "str": str_of,
    "int": _number(int),
    "float": _number(float),
    "bool": bool,
    "abs": abs,
    "min": _extreme("min", min),
    "max": _extreme("max", max),
    "round": _round,
    "sum": _sum,
    "sorted": _sorted,
    "lower": _lower,
    "upper": _upper,
    "contains": _contains,
    "startswith": _startswith,
    "endswith": _endswith,
    "join": _join,
    "split": _split,
    "json": to_json,
    "fromjson": _fromjson,
    "get": _get,
    "default": _default,
}
"""The only callables an expression can reach. `str(x)` is the interpolation text of `x`."""

HEAVY_FUNCTIONS: frozenset[str] = frozenset({
    "str", "min", "max", "sum", "sorted", "lower", "upper", "join", "split", "json", "fromjson", "int", "float",
})
"""Functions whose work grows with their input (the others are O(1) or a single lookup)."""
