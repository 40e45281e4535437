"""Property tests of the expression engine: `evaluate` and `render` raise nothing but ExpressionError,
finish within their deadline, and never evaluate data read from the context."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.definitions.expressions import evaluate, render
from worker.errors import ExpressionError

# ast.parse of fuzzed text may warn (e.g. "invalid decimal literal"); only exceptions matter here
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

FUZZ = settings(database=None, max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

CONTEXT: dict[str, Any] = {
    "inputs": {"x": 3, "s": "abc", "l": [1, 2, 3], "d": {"k": "v"}, "n": None, "f": 1.5, "big": "y" * 1000,
               "evil": "${{ 7*7 }}", "jinja": "{{ 7*7 }}", "dunder": "__class__"},
    "steps": {"a": {"output": {"json": {"amount": 120, "items": [{"id": 1}]}, "text": "${{ inputs.x }}"},
                    "status": "completed", "error": None}},
    "run": {"id": "r", "workflow": "w", "version": "v"},
}

TOKENS = [
    "inputs", "steps", "run", "secrets", "item", "index", "x", "s", "l", "d", "a", "output", "json", "amount",
    ".", "[", "]", "(", ")", "{", "}", ",", ":", "'", '"', "0", "1", "-1", "2", "10", "99999999", "1e308",
    "0.5", "True", "False", "None", "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=",
    " and ", " or ", " not ", " in ", " not in ", " is ", " if ", " else ", "lambda", "for", ":=", "|", "&",
    "~", "^", "<<", ">>", "@", "len", "str", "int", "float", "bool", "json", "fromjson", "lower", "upper",
    "contains", "startswith", "endswith", "join", "split", "get", "default", "round", "sum", "min", "max",
    "abs", "keys", "values", "range", "__class__", "__mro__", "__subclasses__", "__globals__", "__import__",
    "_private", "eval", "exec", "open", "getattr", "type", "format", "f'", "'{}'", "*", "**",
]

EXPRESSION = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(TOKENS), max_size=25).map("".join),
    st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join),
)


def _evaluate(expr: str) -> None:
    with contextlib.suppress(ExpressionError):
        evaluate(expr, CONTEXT)


@FUZZ
@given(EXPRESSION)
def test_evaluate_raises_only_expression_error(expr: str) -> None:
    _evaluate(expr)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["${{", "}}", "${{ ", " }}", "$", "{", "}", "$${{"]), EXPRESSION),
                max_size=8).map("".join))
def test_render_templates_raise_only_expression_error(template: str) -> None:
    with contextlib.suppress(ExpressionError):
        render(template, CONTEXT)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
              EXPRESSION.map(lambda e: "${{ " + e + " }}")),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_render_nested_values(value: Any) -> None:
    with contextlib.suppress(ExpressionError):
        render(value, CONTEXT)


ARITH = st.recursive(
    st.one_of(st.integers(-10**6, 10**6).map(str), st.sampled_from(["inputs.x", "inputs.l", "inputs.s", "'ab'",
                                                                      "[1, 2]", "9", "99"])),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "*", "**", "-", "/", "//", "%"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"),
    max_leaves=12,
)


@settings(database=None, max_examples=300, deadline=3000)
@given(ARITH)
def test_arithmetic_is_bounded(expr: str) -> None:
    """Power towers and repeated multiplication are refused, not computed for minutes or gigabytes."""
    _evaluate(expr)


@FUZZ
@given(st.text(max_size=60).map(lambda t: t + "${{ 1 + 1 }}{{ 7*7 }}__class__"))
def test_context_strings_are_data(payload: str) -> None:
    """A value read from the context is returned as is, never rendered again."""
    ctx = {**CONTEXT, "steps": {"a": {"output": payload, "status": "completed", "error": None}}}
    assert render("${{ steps.a.output }}", ctx) == payload
    assert render({"k": ["${{ steps.a.output }}"]}, ctx) == {"k": [payload]}
    text = render("pre ${{ steps.a.output }} post", ctx)
    assert text == f"pre {payload} post"


@FUZZ
@given(st.sampled_from(["__class__", "__globals__", "__init__", "__dict__", "mro", "__subclasses__", "_x"]),
       st.sampled_from(["inputs", "inputs.s", "inputs.l", "run", "steps.a", "len", "(1)", "'s'"]))
def test_no_attribute_escape(attr: str, base: str) -> None:
    for expr in (f"{base}.{attr}", f"{base}['{attr}']", f"{base}.{attr}()", f"getattr({base}, '{attr}')"):
        try:
            value = evaluate(expr, CONTEXT)
        except ExpressionError:
            continue
        # reading a *key* named like a dunder from data is fine; it must be data, not a Python object
        assert isinstance(value, str | int | float | bool | list | dict | type(None)), (expr, value)
