"""`${{ ... }}` expressions: parsed once, checked against a whitelist, evaluated with simpleeval.

A string may contain any number of `${{ expr }}` segments. A string that is exactly one segment
(surrounding whitespace allowed) renders to the typed value of `expr`; any other string renders to
text, each segment converted with `to_text` (None -> "", booleans -> "true"/"false", mappings and
lists -> compact JSON). `$${{` has no special meaning. There is no escape syntax.

The grammar is a small subset of Python: literals (strings, numbers, booleans, None, lists,
dicts, tuples), names, `a.b` and `a['b']` / `a[0]` / `a[1:3]`, arithmetic (`+ - * / // % **`),
comparisons (including `in`, `not in`, `is`, `is not`), `and`/`or`/`not`, `x if c else y`, and
calls to the functions in `FUNCTIONS`. Everything else (lambda, comprehensions, `:=`, f-strings,
`*`/`**` unpacking, set literals, bitwise operators, method calls, names starting with `_`, any
function not in `FUNCTIONS` such as `range`) is refused before anything is evaluated.

Values reached through the context are data: `.name` and `['name']` on a mapping read a key (never
a Python attribute), and a string read from the context is never rendered again, so a step output
containing `${{ 1+1 }}` stays that literal string. A missing key is an error that names the key;
nothing silently becomes None. Every failure, whatever its cause, is raised as `ExpressionError`.

Evaluation is bounded (see `limits`): every intermediate result is checked against `MAX_ITEMS` /
`MAX_TEXT_LENGTH` before it is built, and one evaluation (one `evaluate`, one `render`) has a work
budget: `MAX_WORK_UNITS` in total and a CPU time set with `set_budget` (AGENTRT_EXPRESSION_BUDGET_MS).

Modules: `limits` (constants, the budget), `sizes` (size estimates, `to_text`), `operators`,
`functions` (FUNCTIONS), `compile`
(parsing, checking, templates), `evaluate` (the evaluator, `render`, `evaluate`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from worker.definitions.expressions.compile import (
    CLOSE,
    OPEN,
    Compiled,
    RootRead,
    compile_expression,
    compile_template,
    split_template,
)
from worker.definitions.expressions.evaluate import evaluate, render, truthy
from worker.definitions.expressions.functions import FUNCTIONS
from worker.definitions.expressions.limits import (
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_JSON_DEPTH,
    MAX_TEXT_LENGTH,
    MAX_WORK_UNITS,
    budget_ms,
    set_budget,
)
from worker.definitions.expressions.sizes import to_text
from worker.errors import ExpressionError


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
            for is_expr, piece in split_template(text) if is_expr]


def check_expression(expr: str) -> None:
    """Parse `expr` and raise ExpressionError if it is invalid or uses anything not allowed."""
    compile_expression(expr)


def check_template(text: str) -> None:
    """Check every expression in a template string (and that every `${{` is closed)."""
    compile_template(text)


def root_reads(value: object) -> list[RootRead]:
    """Every context root read by the expressions inside `value` (checked first), in order."""
    reads: dict[RootRead, None] = {}
    for text in _strings(value):
        if OPEN in text:
            for part in compile_template(text).parts:
                if isinstance(part, Compiled):
                    reads.update(dict.fromkeys(part.reads))
    return list(reads)


def referenced_roots(expr: str) -> set[str]:
    """The top-level names `expr` reads (function names excluded)."""
    return {read.root for read in compile_expression(expr).reads}


def referenced_steps(value: object) -> set[str]:
    """Ids X used as `steps.X` or `steps['X']` by any expression inside `value`."""
    return {read.key for read in root_reads(value) if read.root == "steps" and read.key is not None}


def single_expression(text: str) -> str | None:
    """The expression source if `text` is exactly one `${{ ... }}` (whitespace around allowed)."""
    if OPEN not in text:
        return None
    template = compile_template(text)
    return template.single.source if template.single is not None else None


def is_template(value: object) -> bool:
    """True if any string inside `value` contains `${{`."""
    return any(OPEN in text for text in _strings(value))


def has_heavy_expressions(value: object) -> bool:
    """True if any expression inside `value` can do work that grows with its input.

    Those are calls to `sorted`, `join`, `split`, `fromjson`, `json`, `str`, `min`/`max`/`sum`,
    `lower`/`upper`, `int`/`float`, and the operators `+`, `*`, `**`. Every other expression is a
    bounded sequence of lookups, comparisons and literals. Invalid templates count as not heavy
    (they are reported by the definition checks).
    """
    for text in _strings(value):
        if OPEN in text:
            try:
                if compile_template(text).heavy:
                    return True
            except ExpressionError:  # an invalid template is reported by the checks, and fails if rendered
                continue
    return False


__all__ = [
    "CLOSE",
    "FUNCTIONS",
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_LENGTH",
    "MAX_WORK_UNITS",
    "OPEN",
    "RootRead",
    "budget_ms",
    "check_expression",
    "check_template",
    "evaluate",
    "find_expressions",
    "has_heavy_expressions",
    "is_template",
    "referenced_roots",
    "referenced_steps",
    "render",
    "root_reads",
    "set_budget",
    "single_expression",
    "to_text",
    "truthy",
]
