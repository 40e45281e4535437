"""`budget:` in a workflow file: located load-time errors, and a file without one keeps its version hash."""

from __future__ import annotations

import pytest

from worker.budgets.check import over_budget
from worker.budgets.ledger import Spent
from worker.definitions import load_text
from worker.errors import DefinitionError

BASE = """\
name: spendy
EXTRA
steps:
  - {id: a, uses: set, with: {x: 1}}
"""


def load(extra: str):  # type: ignore[no-untyped-def]
    return load_text(BASE.replace("EXTRA", extra), "spendy.yaml")


@pytest.mark.parametrize(("extra", "where", "reason"), [
    ("budget: {usd_per_run: -2}", "spendy.yaml:2:", "greater than 0"),
    ("budget: {usd_per_day: 0}", "spendy.yaml:2:", "greater than 0"),
    ("budget: {tokens_per_run: 1.5}", "spendy.yaml:2:", "valid integer"),
    ("budget: {tokens_per_run: '200000'}", "spendy.yaml:2:", "valid integer"),
    ("budget: {usd_per_month: 5}", "spendy.yaml:2:", "unknown key 'usd_per_month'"),
    ("budget: {usd_per_run: 1, on_exceed: ignore}", "spendy.yaml:2:", "'ask' or 'fail'"),
    ("budget: {on_exceed: fail}", "spendy.yaml:2:", "at least one of tokens_per_run, usd_per_run, usd_per_day"),
    ("budget: 50", "spendy.yaml:2:", "budget"),
])
def test_a_bad_budget_is_a_located_error(extra: str, where: str, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason) as refused:
        load(extra)
    assert where in str(refused.value)


def test_a_budget_is_part_of_the_version_and_its_absence_changes_no_hash() -> None:
    plain = load("")
    budgeted = load("budget: {tokens_per_run: 200000, usd_per_run: 2.00, usd_per_day: 50.00}")
    assert budgeted.spec.budget is not None and budgeted.spec.budget.on_exceed == "ask"
    assert "budget" not in plain.spec.model_dump(mode="json")
    assert plain.def_hash != budgeted.def_hash


def test_which_budget_a_call_would_break() -> None:
    budget = load("budget: {tokens_per_run: 1000, usd_per_run: 2.00, usd_per_day: 50.00}").spec.budget
    fits = Spent(run_tokens=900, run_usd=1.5, day_usd=40.0)
    assert over_budget(budget, fits, tokens=100, usd=0.5) is None
    assert over_budget(budget, fits, tokens=101, usd=0.0) == "1,000 tokens per run (spent 900, this call up to 101)"
    assert over_budget(budget, fits, tokens=10, usd=0.51) == "$2.00 per run (spent $1.50, this call up to $0.51)"
    day = Spent(run_tokens=0, run_usd=0.0, day_usd=49.99)
    assert over_budget(budget, day, tokens=10, usd=0.0125) == "$50.00/day (spent $49.99 today, this call up to $0.0125)"
