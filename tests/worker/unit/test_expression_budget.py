"""Expressions have a work budget: every intermediate result counts, and one evaluation is bounded in
total size and CPU time. Each hostile expression fails fast with an error naming the limit it hit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from worker.definitions.expressions import (
    MAX_ITEMS,
    MAX_WORK_UNITS,
    budget_ms,
    check_expression,
    evaluate,
    has_heavy_expressions,
    render,
    set_budget,
)
from worker.definitions.model import Definition, WorkflowSpec
from worker.errors import ExpressionError

SORTED_LIST = "[" + ", ".join(["sorted('ab' * 4000000)"] * 140) + "]"  # the 4 KB expression of issue 15
ROUND_TRIPS = "len(" + "split(join(" * 8 + "['a'] * 100000" + ", ','), ',')" * 8 + ")"
CONTEXT: dict[str, object] = {"inputs": {"n": 5, "name": "Ada", "tags": ["b", "a", "c"], "doc": '{"a": [1, 2]}',
                                         "big": "X" * 8_000_000},
                              "steps": {"fetch": {"output": {"items": [3, 1, 2], "text": "x,y,z"}}}}


def failure(expr: str) -> tuple[str, float]:
    """The reason `expr` is refused, and how long refusing it took (s)."""
    started = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, CONTEXT)
    return info.value.reason, time.perf_counter() - started


@pytest.fixture
def budget_20ms() -> Iterator[None]:
    before = budget_ms()
    set_budget(cpu_ms=20)
    yield
    set_budget(cpu_ms=before)


def test_the_4kb_sorted_list_of_issue_15_is_refused_before_sorting() -> None:
    assert len(SORTED_LIST) <= 4096
    check_expression(SORTED_LIST)  # it is a valid expression: the limit is on the work
    reason, took = failure(SORTED_LIST)
    assert reason == f"sorted() of a string would make 8000000 items (at most {MAX_ITEMS})"
    assert took < 2


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("sorted('ab' * 4000000)", "sorted() of a string would make 8000000 items"),
        ("min('ab' * 4000000)", "min() of a string would make 8000000 items"),
        ("max('ab' * 60000)", "max() of a string would make 120000 items"),
        ("sum([1] * 100000 + [1])", "+ would make 100001 items"),
        ("'ab' * 8000000", "* would make 16000000 characters (at most 8388608)"),
        (" + ".join(["('x' * 4000000)"] * 3), "+ would make 12000000 characters"),
        ("upper('\ufb03' * 4000000)", "upper() of 4000000 non-ASCII characters would make 12000000 characters"),
        ("split('a,' * 200000, ',')", f"split() would make more than {MAX_ITEMS} parts"),
        ("split('a ' * 200000)", f"split() would make more than {MAX_ITEMS} parts"),
        ("fromjson('[' + '1,' * 3000000 + '1]')", "fromjson() of this document would make 3000002 items"),
        ("fromjson('[' * 100000 + ']' * 100000)", "fromjson() of this document would make 100001 items"),
        ("fromjson('[' * 5000 + ']' * 5000)", "fromjson(): the document nests more than 100 levels deep"),
        ("fromjson('[' * 500 + ']' * 500)", "fromjson(): the document nests more than 100 levels deep"),
        ("join(['x' * 100] * 100000, ',')", "the result of join() would be longer than 8388608 characters"),
        ("str(['x' * 1000] * 10000)", "the result would be longer than 8388608 characters"),
        ("range(10)", "unknown function 'range'"),
    ],
)
def test_each_intermediate_result_is_bounded_before_it_is_built(expr: str, reason: str) -> None:
    got, took = failure(expr)
    assert reason in got
    assert took < 2


@pytest.mark.parametrize(
    ("expr", "what"),
    [
        # each step is within the limits; together they are far more than one evaluation may do
        ("[" + ", ".join(["lower(inputs.big)"] * 5) + "]", "lower()"),
        ("[" + ", ".join(["json(inputs.big)"] * 5) + "]", "json()"),
        ("[" + ", ".join(["split(inputs.big, 'X' * 100)"] * 5) + "]", "split()"),
        ("len([" + ", ".join(f"('x' * 8000000)[{i}:]" for i in range(5)) + "])", "*"),
        ("['x' * 4000000] * 100000 == ['x' * 4000000] * 100000", "comparison"),
        ("sorted([['x' * 1000] * 1000] * 1000)", "sorted()"),
        ("('y' * 1000000) in ['y' * 1000000 + 'z'] * 100000", "in"),
    ],
)
def test_total_work_of_one_evaluation_is_bounded(expr: str, what: str) -> None:
    got, took = failure(expr)
    units = f"{what}: the expression exceeded its work budget of {MAX_WORK_UNITS} units"
    cpu = f"the expression exceeded its work budget of {budget_ms():g} ms CPU (AGENTRT_EXPRESSION_BUDGET_MS)"
    assert got.startswith(units) or got == cpu, got  # whichever runs out first on this machine
    assert took < 2


def test_cpu_time_of_one_evaluation_is_bounded() -> None:
    reason, took = failure(ROUND_TRIPS)
    assert reason == f"the expression exceeded its work budget of {budget_ms():g} ms CPU (AGENTRT_EXPRESSION_BUDGET_MS)"
    assert took < 2


def test_the_cpu_budget_is_configurable(budget_20ms: None) -> None:
    reason, took = failure(ROUND_TRIPS)
    assert reason.endswith("work budget of 20 ms CPU (AGENTRT_EXPRESSION_BUDGET_MS)")
    assert took < 0.5
    with pytest.raises(ValueError, match="must be positive"):
        set_budget(cpu_ms=0)


def test_one_render_is_one_evaluation_and_the_next_starts_afresh() -> None:
    part = "${{ len('x' * 8000000 + 'y') }}"
    with pytest.raises(ExpressionError, match="work budget of"):
        render({f"k{i}": part for i in range(5)}, CONTEXT)  # 5 x 16M units in one render
    assert render({"k": part}, CONTEXT) == {"k": 8000001}  # a new render has its whole budget again
    assert evaluate("len('x' * 8000000)", CONTEXT) == 8000000


def test_deep_nesting_of_the_expression_itself_is_refused_before_evaluation() -> None:
    with pytest.raises(ExpressionError, match="nests more than 64 levels deep"):
        check_expression("[" * 70 + "]" * 70)
    with pytest.raises(ExpressionError, match="nests more than 64 levels deep"):
        check_expression("len(" * 70 + "1" + ")" * 70)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sorted(inputs.tags)", ["a", "b", "c"]),
        ("sorted(steps.fetch.output.items, reverse=True)", [3, 2, 1]),
        ("join(sorted(split(steps.fetch.output.text, ',')), '-')", "x-y-z"),
        ("min(3, 1, 2) + max(steps.fetch.output.items) + sum(steps.fetch.output.items)", 10),
        ("fromjson(inputs.doc).a[1] + len(json(fromjson(inputs.doc)))", 13),
        ("upper(inputs.name) + lower('ÄB') + str(inputs.n)", "ADAäb5"),
        ("len(sorted('ab' * 40000))", 80000),
        ("len('x' * 8000000)", 8000000),
        ("len(split('a,' * 99999, ','))", 100000),
        ("fromjson('[' * 100 + ']' * 100) is not None", True),
        ("inputs.tags == ['b', 'a', 'c'] and 'a' in inputs.tags", True),
        ("(inputs.name * 3)[1:4]", "daA"),
    ],
)
def test_honest_expressions_still_work(expr: str, expected: object) -> None:
    assert evaluate(expr, CONTEXT) == expected


def definition(with_: dict[str, object], when: str | None = None) -> Definition:
    step: dict[str, object] = {"id": "a", "uses": "set", "with": with_}
    if when is not None:
        step["when"] = when
    return Definition.build(WorkflowSpec.model_validate({"name": "w", "steps": [step]}))


@pytest.mark.parametrize(
    ("with_", "when", "heavy"),
    [
        ({"x": "${{ inputs.n }}", "y": "n=${{ inputs.n > 3 and get(inputs, 'm', 1) == 1 }}"}, None, False),
        ({"x": "${{ len(inputs.tags) }}", "y": "${{ default(inputs.none, [1, 2])[0:1] }}"}, "inputs.n > 1", False),
        ({"x": "${{ sorted(inputs.tags) }}"}, None, True),
        ({"x": ["plain", {"deep": "a ${{ join(inputs.tags) }}"}]}, None, True),
        ({"x": "${{ inputs.n * 2 }}"}, None, True),
        ({"x": "ok"}, "len(fromjson(inputs.doc)) > 0", True),
    ],
)
def test_definitions_know_whether_their_expressions_can_do_real_work(
        with_: dict[str, object], when: str | None, heavy: bool) -> None:
    assert definition(with_, when).heavy_expressions is heavy
    assert has_heavy_expressions(with_) is (heavy and when is None)
