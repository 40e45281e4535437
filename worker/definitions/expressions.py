"""`${{ ... }}` expressions: parsed once, checked against a whitelist, evaluated with simpleeval.

A string may contain any number of `${{ expr }}` segments. A string that is exactly one segment
(surrounding whitespace allowed) renders to the typed value of `expr`; any other string renders to
text, each segment converted with `to_text` (None -> "", booleans -> "true"/"false", mappings and
lists -> compact JSON). `$${{` has no special meaning. There is no escape syntax.

The grammar is a small subset of Python: literals (strings, numbers, booleans, None, lists,
dicts, tuples), names, `a.b` and `a['b']` / `a[0]` / `a[1:3]`, arithmetic (`+ - * / // % **`),
comparisons (including `in`, `not in`, `is`, `is not`), `and`/`or`/`not`, `x if c else y`, and
calls to the functions in `FUNCTIONS`. Everything else (lambda, comprehensions, `:=`, f-strings,
`*`/`**` unpacking, set literals, bitwise operators, method calls, names starting with `_`) is
refused before anything is evaluated.

Values reached through the context are data: `.name` and `['name']` on a mapping read a key (never
a Python attribute), and a string read from the context is never rendered again, so a step output
containing `${{ 1+1 }}` stays that literal string. A missing key is an error that names the key;
nothing silently becomes None. Every failure, whatever its cause, is raised as `ExpressionError`.

Evaluation is bounded: integer results are limited in size (so `9**9**9` is refused at once),
strings and lists built by an expression are capped, and serialising a value (`json`, `str`, text
interpolation) is refused when its estimated size exceeds `MAX_TEXT_LENGTH`.
"""

from __future__ import annotations

import ast
import json as _json
import operator as op
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

from simpleeval import EvalWithCompoundTypes

from worker.errors import ExpressionError

OPEN = "${{"
CLOSE = "}}"

MAX_EXPRESSION_LENGTH = 4096
"""Longest accepted expression source, in characters."""
MAX_EXPRESSION_DEPTH = 64
"""Deepest accepted expression syntax tree (bounds the recursive evaluator)."""
MAX_TEXT_LENGTH = 8 * 1024 * 1024
"""Longest string an expression may build or serialise, in characters."""
MAX_ITEMS = 100_000
"""Longest list an expression may build with `+`, `*` or `split`."""
MAX_INT_BITS = 65_536
"""Largest integer, in bits, that `*` and `**` may produce."""
MAX_ROUND_DIGITS = 100
"""Largest `ndigits` (either sign) accepted by `round`."""

_CACHE_SIZE = 4096


class _LimitError(Exception):
    """Raised by the operators and functions below; turned into an ExpressionError by the evaluator."""


# ---- text conversion ------------------------------------------------------------------------


def _estimate_size(value: object, budget: int, seen: dict[int, int]) -> int:
    """Approximate length of `value` serialised as JSON; raise once it exceeds `budget`."""
    if isinstance(value, str):
        size = len(value) + 2
    elif value is None or isinstance(value, bool | int | float):
        size = 24
    elif isinstance(value, Mapping | list | tuple):
        known = seen.get(id(value))
        if known is not None:
            size = known
        else:
            size = 2
            items = value.items() if isinstance(value, Mapping) else ((None, v) for v in value)
            for key, item in items:
                if key is not None:
                    size += len(str(key)) + 3
                size += _estimate_size(item, budget - size, seen) + 1
                if size > budget:
                    break
            seen[id(value)] = size
    else:
        size = len(str(value))
    if size > budget:
        raise _LimitError(f"the result would be longer than {MAX_TEXT_LENGTH} characters")
    return size


def _to_json(value: object) -> str:
    _estimate_size(value, MAX_TEXT_LENGTH, {})
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def to_text(value: object) -> str:
    """Convert a value to the text used when it is interpolated into a larger string.

    None becomes "", booleans "true"/"false", strings stay as they are, numbers use `str`, and
    mappings and lists become compact JSON. Raises `_LimitError` for oversized structures
    (callers inside this module turn it into ExpressionError).
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
        return _to_json(value)
    return str(value)


# ---- operators ------------------------------------------------------------------------------


def _sized_limit(value: object) -> int:
    return MAX_TEXT_LENGTH if isinstance(value, str) else MAX_ITEMS


def _add(a: object, b: object) -> object:
    if (isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple)
            and len(a) + len(b) > _sized_limit(a)):
        raise _LimitError("the result of + would be too long")
    return op.add(a, b)  # type: ignore[call-overload]


def _mult(a: object, b: object) -> object:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise _LimitError("the result of * would be too large")
    for seq, times in ((a, b), (b, a)):
        if not (isinstance(seq, str | list | tuple) and isinstance(times, int)):
            continue
        if len(seq) * times > _sized_limit(seq):
            raise _LimitError("the result of * would be too long")
    return op.mul(a, b)  # type: ignore[call-overload]


def _mod(a: object, b: object) -> object:
    if isinstance(a, str | bytes):
        raise _LimitError("string formatting with % is not supported; use interpolation or join()")
    return op.mod(a, b)  # type: ignore[call-overload]


def _pow(a: object, b: object) -> object:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if abs(b) > 1_000_000:
            raise _LimitError(f"exponent {b} is too large")
        big = isinstance(a, int) and isinstance(b, int) and b > 0 and a.bit_length() * b > MAX_INT_BITS
        if big and abs(a) > 1:
            raise _LimitError(f"the result of {a} ** {b} would be too large")
    result = op.pow(a, b)  # type: ignore[call-overload]
    if isinstance(result, complex):
        raise _LimitError("the result is not a real number")
    return result


_OPERATORS: dict[type, Callable[..., object]] = {
    ast.Add: _add,
    ast.Sub: op.sub,
    ast.Mult: _mult,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: lambda x, y: x in y,
    ast.NotIn: lambda x, y: x not in y,
    ast.Is: lambda x, y: x is y,
    ast.IsNot: lambda x, y: x is not y,
    ast.Not: op.not_,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
}

_OPERATOR_SYMBOLS: dict[type, str] = {
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
    ast.MatMult: "@", ast.Invert: "~",
}


# ---- functions ------------------------------------------------------------------------------


def _need_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}() needs a string, got {_type_name(value)}")
    return value


def _lower(s: object) -> str:
    return _need_str("lower", s).lower()


def _upper(s: object) -> str:
    return _need_str("upper", s).upper()


def _contains(container: object, item: object) -> bool:
    if isinstance(container, str):
        return _need_str("contains", item) in container
    if isinstance(container, Mapping | list | tuple):
        return item in container
    raise TypeError(f"contains() needs a list, mapping or string, got {_type_name(container)}")


def _startswith(s: object, prefix: object) -> bool:
    return _need_str("startswith", s).startswith(_need_str("startswith", prefix))


def _endswith(s: object, suffix: object) -> bool:
    return _need_str("endswith", s).endswith(_need_str("endswith", suffix))


def _join(items: object, sep: object = ",") -> str:
    if not isinstance(items, list | tuple):
        raise TypeError(f"join() needs a list, got {_type_name(items)}")
    separator = _need_str("join", sep)
    parts = [to_text(item) for item in items]
    if sum(map(len, parts)) + len(separator) * len(parts) > MAX_TEXT_LENGTH:
        raise _LimitError("the result of join() would be too long")
    return separator.join(parts)


def _split(s: object, sep: object = None) -> list[str]:
    text = _need_str("split", s)
    separator = None if sep is None else _need_str("split", sep)
    if separator == "":
        raise _LimitError("split() needs a non-empty separator")
    if separator is not None and text.count(separator) >= MAX_ITEMS:
        raise _LimitError("split() would make too many parts")
    parts = text.split(separator)
    if len(parts) > MAX_ITEMS:
        raise _LimitError("split() would make too many parts")
    return parts


def _fromjson(s: object) -> object:
    return _json.loads(_need_str("fromjson", s))


def _get(container: object, key: object, default: object = None) -> object:
    if container is None:
        return default
    if isinstance(container, Mapping):
        return container.get(key, default)
    if isinstance(container, list | tuple) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else default
    raise TypeError(f"get() needs a mapping or a list, got {_type_name(container)}")


def _default(value: object, fallback: object) -> object:
    return fallback if value is None else value


def _round(number: object, ndigits: object = None) -> object:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise _LimitError(f"round() accepts at most {MAX_ROUND_DIGITS} digits")
    return round(number, ndigits)  # type: ignore[call-overload]


def _sum(values: object) -> object:
    if not isinstance(values, list | tuple):
        raise TypeError(f"sum() needs a list of numbers, got {_type_name(values)}")
    return sum(values)


FUNCTIONS: Mapping[str, Callable[..., object]] = {
    "len": len,
    "str": to_text,
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": _round,
    "sum": _sum,
    "sorted": sorted,
    "lower": _lower,
    "upper": _upper,
    "contains": _contains,
    "startswith": _startswith,
    "endswith": _endswith,
    "join": _join,
    "split": _split,
    "json": _to_json,
    "fromjson": _fromjson,
    "get": _get,
    "default": _default,
}
"""The only callables an expression can reach. `str(x)` is the interpolation text of `x`."""


# ---- parsing and checking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootRead:
    """One use of a context root in an expression, e.g. `steps.fetch.output` -> ("steps", "fetch")."""

    root: str
    """The top-level name (`inputs`, `steps`, ...)."""
    key: str | None
    """The literal key read from the root, or None when the root is used whole or indexed dynamically."""
    text: str
    """A readable form for messages, at most two keys deep, e.g. `steps.fetch.output`."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    source: str
    node: ast.expr
    reads: tuple[RootRead, ...]


@dataclass(frozen=True, slots=True)
class _Template:
    source: str
    parts: tuple[str | _Compiled, ...]
    single: _Compiled | None


_DISALLOWED: dict[type, str] = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed; use interpolation or join()",
    ast.FormattedValue: "f-strings are not allowed; use interpolation or join()",
    ast.Starred: "* unpacking is not allowed",
    ast.Set: "set literals are not allowed; use a list",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}
_ALLOWED_NODES: tuple[type, ...] = (
    ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Subscript, ast.Slice, ast.BinOp, ast.UnaryOp,
    ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.List, ast.Tuple,
    ast.Dict, *_OPERATORS,
)


def _check_node(node: ast.AST, source: str, callees: set[int]) -> None:
    """Refuse one syntax node that is unsafe or outside the expression language."""
    reason = _DISALLOWED.get(type(node))
    if reason is None and isinstance(node, ast.operator | ast.unaryop) and type(node) not in _OPERATORS:
        reason = f"operator {_OPERATOR_SYMBOLS.get(type(node), type(node).__name__)} is not supported"
    if reason is None and not isinstance(node, _ALLOWED_NODES):
        reason = f"{type(node).__name__} is not allowed in expressions"
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        reason = f"access to '{node.attr}' is not allowed (names starting with _ are private)"
    elif isinstance(node, ast.Name) and node.id.startswith("_"):
        reason = f"the name '{node.id}' is not allowed (names starting with _ are private)"
    elif isinstance(node, ast.Name) and node.id in FUNCTIONS and id(node) not in callees:
        reason = f"function '{node.id}' must be called, e.g. {node.id}(...)"
    elif isinstance(node, ast.Constant):
        if not (node.value is None or isinstance(node.value, str | int | float | bool)):
            reason = f"{type(node.value).__name__} literals are not supported"
        elif isinstance(node.value, str) and len(node.value) > MAX_TEXT_LENGTH:
            reason = "string literal is too long"
    elif ((isinstance(node, ast.Dict) and any(key is None for key in node.keys))
          or (isinstance(node, ast.keyword) and node.arg is None)):
        reason = "** unpacking is not allowed"
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            reason = "only the built-in functions can be called (method calls are not allowed)"
        elif node.func.id not in FUNCTIONS:
            reason = f"unknown function '{node.func.id}' (available: {', '.join(sorted(FUNCTIONS))})"
        else:
            callees.add(id(node.func))
    if reason is not None:
        raise ExpressionError(source, reason)


def _literal_key(node: ast.expr) -> str | int | None:
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    return None


def _format_key(key: str | int) -> str:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


def _collect_reads(tree: ast.expr, callees: set[int]) -> tuple[RootRead, ...]:
    """Find every root name the expression reads and the literal keys that follow it, in order."""
    reads: dict[RootRead, None] = {}

    def visit(node: ast.AST) -> None:  # recursion is bounded: the tree depth was checked
        if isinstance(node, ast.Attribute | ast.Subscript):
            keys: list[str | int | None] = []
            dynamic: list[ast.expr] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute | ast.Subscript):
                if isinstance(current, ast.Attribute):
                    keys.append(current.attr)
                else:
                    key = _literal_key(current.slice)
                    keys.append(key)
                    if key is None:
                        dynamic.append(current.slice)
                current = current.value
            keys.reverse()
            if isinstance(current, ast.Name):
                literal: list[str | int] = []
                for key in keys[:2]:
                    if key is None:
                        break
                    literal.append(key)
                first = literal[0] if literal and isinstance(literal[0], str) else None
                text = current.id + "".join(_format_key(k) for k in literal)
                reads[RootRead(current.id, first, text)] = None
            else:
                visit(current)
            for child in reversed(dynamic):
                visit(child)
        elif isinstance(node, ast.Name):
            if id(node) not in callees:
                reads[RootRead(node.id, None, node.id)] = None
        else:
            for sub_node in ast.iter_child_nodes(node):
                visit(sub_node)

    visit(tree)
    return tuple(reads)


@lru_cache(maxsize=_CACHE_SIZE)
def _compile(source: str) -> _Compiled:
    text = source.strip()
    if not text:
        raise ExpressionError(source, "empty expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(text[:80] + "...", f"longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        detail = "" if exc.msg == "invalid syntax" else f": {exc.msg}"
        raise ExpressionError(text, f"invalid syntax{detail}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(text, f"cannot parse: {exc}") from None
    callees: set[int] = set()
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(text, f"expression nests more than {MAX_EXPRESSION_DEPTH} levels deep")
        _check_node(node, text, callees)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return _Compiled(text, tree, _collect_reads(tree, callees))


def _expression_end(text: str, start: int) -> int:
    """Index of the `}}` closing the expression starting at `start`, skipping strings and brackets."""
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]" or (char == "}" and depth > 0):
            depth = max(depth - 1, 0)
        elif char == "}" and text.startswith(CLOSE, i):
            return i
        i += 1
    raise ExpressionError(text[start - len(OPEN):].strip(), "unclosed `${{` (missing `}}`)")


def _split_template(text: str) -> Iterator[tuple[bool, str]]:
    """Yield (is_expression, piece) for a template string; raise ExpressionError if unclosed."""
    position = 0
    while (start := text.find(OPEN, position)) != -1:
        end = _expression_end(text, start + len(OPEN))
        if start > position:
            yield False, text[position:start]
        yield True, text[start + len(OPEN):end].strip()
        position = end + len(CLOSE)
    if position < len(text):
        yield False, text[position:]


@lru_cache(maxsize=_CACHE_SIZE)
def _template(text: str) -> _Template:
    parts = tuple(_compile(piece) if is_expr else piece for is_expr, piece in _split_template(text))
    expressions = [part for part in parts if isinstance(part, _Compiled)]
    literal_blank = all(isinstance(part, _Compiled) or not part.strip() for part in parts)
    single = expressions[0] if len(expressions) == 1 and literal_blank else None
    return _Template(text, parts, single)


# ---- evaluation -----------------------------------------------------------------------------


def _type_name(value: object) -> str:
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


def _keys_hint(mapping: Mapping[object, object]) -> str:
    keys = [str(key) for key in list(mapping)[:12]]
    if not keys:
        return " (it is empty)"
    more = ", ..." if len(mapping) > len(keys) else ""
    return f" (keys: {', '.join(keys)}{more})"


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval with strict, data-only name, attribute and subscript semantics.

    Trees reaching it have passed `_check_node`, so only whitelisted node types occur and calls
    always name an entry of FUNCTIONS.
    """

    def __init__(self) -> None:
        super().__init__(operators=dict(_OPERATORS), functions=dict(FUNCTIONS), names={})

    def run(self, compiled: _Compiled, context: Mapping[str, object]) -> object:
        self.names = context
        self.expr = compiled.source
        try:
            return self._eval(compiled.node)
        except ExpressionError:
            raise
        except _LimitError as exc:
            raise ExpressionError(compiled.source, str(exc)) from None
        except RecursionError:
            raise ExpressionError(compiled.source, "value is nested too deeply") from None
        except ZeroDivisionError:
            raise ExpressionError(compiled.source, "division by zero") from None
        except OverflowError:
            raise ExpressionError(compiled.source, "the number is too large to represent") from None
        except Exception as exc:  # any library or type error becomes an ExpressionError
            reason = str(exc) or type(exc).__name__
            raise ExpressionError(compiled.source, reason) from exc
        finally:
            self.names = {}

    def _eval(self, node: ast.AST) -> object:
        return self.nodes[type(node)](node)

    def _fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.expr, reason)

    def _eval_name(self, node: ast.Name) -> object:
        try:
            return self.names[node.id]
        except KeyError:
            available = ", ".join(sorted(self.names)) or "none"
            raise self._fail(f"unknown name '{node.id}' (available here: {available})") from None

    def _read_key(self, container: object, key: object, base: ast.expr) -> object:
        if isinstance(container, Mapping):
            try:
                return container[key]
            except KeyError:
                where = ast.unparse(base)  # only on failure: this is the hot path
                raise self._fail(f"{where} has no key {key!r}{_keys_hint(container)}") from None
        where = ast.unparse(base)
        if container is None:
            raise self._fail(f"cannot read {key!r}: {where} is null")
        raise self._fail(f"cannot read {key!r}: {where} is {_type_name(container)}, not a mapping")

    def _eval_attribute(self, node: ast.Attribute) -> object:
        return self._read_key(self._eval(node.value), node.attr, node.value)

    def _eval_subscript(self, node: ast.Subscript) -> object:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, list | tuple | str) and not isinstance(container, Mapping):
            if isinstance(key, slice):
                return container[key]
            if isinstance(key, bool) or not isinstance(key, int):
                raise self._fail(f"{ast.unparse(node.value)} is a list or string: index it with an integer")
            if not -len(container) <= key < len(container):
                raise self._fail(
                    f"index {key} is out of range for {ast.unparse(node.value)} (length {len(container)})"
                )
            return container[key]
        return self._read_key(container, key, node.value)

    def _eval_call(self, node: ast.Call) -> object:
        assert isinstance(node.func, ast.Name)  # guaranteed by _check_node
        func = self.functions[node.func.id]
        args = [self._eval(arg) for arg in node.args]
        kwargs = {str(kw.arg): self._eval(kw.value) for kw in node.keywords}  # **spread is refused earlier
        return func(*args, **kwargs)


_local = threading.local()


def _evaluator() -> _Evaluator:
    evaluator: _Evaluator | None = getattr(_local, "evaluator", None)
    if evaluator is None:
        evaluator = _local.evaluator = _Evaluator()
    return evaluator


def _interpolate(template: _Template, context: Mapping[str, object], evaluator: _Evaluator) -> str:
    pieces: list[str] = []
    length = 0
    for part in template.parts:
        if isinstance(part, str):
            piece = part
        else:
            value = evaluator.run(part, context)
            try:
                piece = to_text(value)
            except _LimitError as exc:
                raise ExpressionError(part.source, str(exc)) from None
            except (TypeError, ValueError, RecursionError) as exc:
                raise ExpressionError(part.source, f"cannot convert the value to text: {exc}") from None
        length += len(piece)
        if length > MAX_TEXT_LENGTH:
            raise ExpressionError(template.source[:200], f"the rendered string would be longer than "
                                                         f"{MAX_TEXT_LENGTH} characters")
        pieces.append(piece)
    return "".join(pieces)


def _render(value: object, context: Mapping[str, object], evaluator: _Evaluator) -> object:
    if isinstance(value, str):
        if OPEN not in value:
            return value
        template = _template(value)
        if template.single is not None:
            result = evaluator.run(template.single, context)
            return list(result) if isinstance(result, tuple) else result
        return _interpolate(template, context, evaluator)
    if isinstance(value, Mapping):
        return {key: _render(item, context, evaluator) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, context, evaluator) for item in value]
    return value


# ---- public API -----------------------------------------------------------------------------


def _strings(value: object) -> Iterator[str]:
    """Every string inside a nested JSON-like value (mapping values, list items; not keys)."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))


def find_expressions(value: object) -> list[str]:
    """Return the source of every `${{ ... }}` segment inside `value`, in document order.

    Mapping keys are not templates; values, list items and plain strings are. Raises
    ExpressionError for an unclosed `${{`.
    """
    return [piece for text in _strings(value) if OPEN in text
            for is_expr, piece in _split_template(text) if is_expr]


def check_expression(expr: str) -> None:
    """Parse `expr` and raise ExpressionError if it is invalid or uses anything not allowed."""
    _compile(expr)


def check_template(text: str) -> None:
    """Check every expression in a template string (and that every `${{` is closed)."""
    _template(text)


def root_reads(value: object) -> list[RootRead]:
    """Every context root read by the expressions inside `value` (checked first), in order."""
    reads: dict[RootRead, None] = {}
    for text in _strings(value):
        if OPEN in text:
            for part in _template(text).parts:
                if isinstance(part, _Compiled):
                    reads.update(dict.fromkeys(part.reads))
    return list(reads)


def referenced_roots(expr: str) -> set[str]:
    """The top-level names `expr` reads (function names excluded)."""
    return {read.root for read in _compile(expr).reads}


def referenced_steps(value: object) -> set[str]:
    """Ids X used as `steps.X` or `steps['X']` by any expression inside `value`."""
    return {read.key for read in root_reads(value) if read.root == "steps" and read.key is not None}


def single_expression(text: str) -> str | None:
    """The expression source if `text` is exactly one `${{ ... }}` (whitespace around allowed)."""
    if OPEN not in text:
        return None
    template = _template(text)
    return template.single.source if template.single is not None else None


def is_template(value: object) -> bool:
    """True if any string inside `value` contains `${{`."""
    return any(OPEN in text for text in _strings(value))


def evaluate(expr: str, context: Mapping[str, object]) -> object:
    """Evaluate one expression (without the `${{ }}` markers) against `context`.

    Values read from the context are returned as they are (not copied): treat them as read-only.
    """
    return _evaluator().run(_compile(expr), context)


def render(value: object, context: Mapping[str, object]) -> object:
    """Render every template inside a nested JSON-like value; the input is never modified.

    Mappings and lists are rebuilt (tuples become lists); values taken from the context are
    inserted as they are and never rendered again.
    """
    try:
        return _render(value, context, _evaluator())
    except RecursionError:
        raise ExpressionError("", "the value to render is nested too deeply") from None


def truthy(value: object) -> bool:
    """Python truthiness, nothing more: the strings "false" and "0" are true, "" is false.

    A `when:` that should test a string must compare it, e.g. `${{ inputs.flag == 'yes' }}`.
    """
    return bool(value)


__all__ = [
    "FUNCTIONS",
    "MAX_TEXT_LENGTH",
    "RootRead",
    "check_expression",
    "check_template",
    "evaluate",
    "find_expressions",
    "is_template",
    "referenced_roots",
    "referenced_steps",
    "render",
    "root_reads",
    "single_expression",
    "to_text",
    "truthy",
]
