"""Parsing and checking: an expression source becomes a checked syntax tree, once (cached).

Trees are checked against a whitelist before anything is evaluated, and classified: an expression
is "heavy" when it calls a function or uses an operator whose work grows with its input (see
`HEAVY_FUNCTIONS`, `HEAVY_OPERATORS`); the engine evaluates definitions holding heavy expressions
off its event loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from worker.definitions.expressions.functions import FUNCTIONS, HEAVY_FUNCTIONS
from worker.definitions.expressions.limits import MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LENGTH, MAX_TEXT_LENGTH
from worker.definitions.expressions.operators import HEAVY_OPERATORS, OPERATOR_SYMBOLS, OPERATORS
from worker.errors import ExpressionError

OPEN = "${{"
CLOSE = "}}"

_CACHE_SIZE = 4096


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
class Compiled:
    source: str
    node: ast.expr
    reads: tuple[RootRead, ...]
    heavy: bool
    """It calls a function or uses an operator whose work grows with its input."""


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | Compiled, ...]
    single: Compiled | None
    heavy: bool


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
    ast.Dict, *OPERATORS,
)


def _check_node(node: ast.AST, source: str, callees: set[int]) -> None:
    """Refuse one syntax node that is unsafe or outside the expression language."""
    reason = _DISALLOWED.get(type(node))
    if reason is None and isinstance(node, ast.operator | ast.unaryop) and type(node) not in OPERATORS:
        reason = f"operator {OPERATOR_SYMBOLS.get(type(node), type(node).__name__)} is not supported"
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


def _is_heavy(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in HEAVY_FUNCTIONS
    return isinstance(node, ast.BinOp) and type(node.op) in HEAVY_OPERATORS


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
def compile_expression(source: str) -> Compiled:
    """Parse and check one expression (without the markers); raise ExpressionError if it is refused."""
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
    heavy = False
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(text, f"expression nests more than {MAX_EXPRESSION_DEPTH} levels deep")
        _check_node(node, text, callees)
        heavy = heavy or _is_heavy(node)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return Compiled(text, tree, _collect_reads(tree, callees), heavy)


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


def split_template(text: str) -> Iterator[tuple[bool, str]]:
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
def compile_template(text: str) -> Template:
    """Split a template string into literal text and compiled expressions (cached)."""
    parts = tuple(compile_expression(piece) if is_expr else piece for is_expr, piece in split_template(text))
    expressions = [part for part in parts if isinstance(part, Compiled)]
    literal_blank = all(isinstance(part, Compiled) or not part.strip() for part in parts)
    single = expressions[0] if len(expressions) == 1 and literal_blank else None
    return Template(text, parts, single, any(part.heavy for part in expressions))
