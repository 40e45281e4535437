"""`concurrency:` and `priority:` in a workflow file (located load-time errors, the key's rendering, stable
hashes), and the weighted round-robin of worker/bus/intake.py."""

from __future__ import annotations

import itertools
import textwrap
from collections import Counter

import pytest

from worker.bus.intake import WorkIntake
from worker.bus.streams import LANES, Keys
from worker.definitions import load_text
from worker.definitions.flow import ConcurrencyKeyError, render_key
from worker.errors import DefinitionError

BASE = """\
name: keyed
inputs: {customer: {type: string}}
EXTRA
steps:
  - {id: a, uses: set, with: {x: 1}}
"""


def load(extra: str):  # type: ignore[no-untyped-def]
    return load_text(BASE.replace("EXTRA", textwrap.dedent(extra).strip()), "keyed.yaml")


@pytest.mark.parametrize(("extra", "where", "reason"), [
    ('concurrency: {key: "${{ inputs.customer }}", limit: -1}', "keyed.yaml:3:", "greater than or equal to 1"),
    ('concurrency: {key: "${{ inputs.customer }}", limit: 0}', "keyed.yaml:3:", "greater than or equal to 1"),
    ('concurrency: {key: "${{ inputs.customer }}", limit: 1.5}', "keyed.yaml:3:", "valid integer"),
    ('concurrency: {key: "${{ inputs.customer }}", limit: "2"}', "keyed.yaml:3:", "valid integer"),
    ('concurrency: {key: "${{ inputs.customer }}", limit: true}', "keyed.yaml:3:", "valid integer"),
    ('concurrency: {key: "${{ inputs.customer }}"}', "keyed.yaml:3:", "missing required key 'limit'"),
    ('concurrency: {key: "${{ inputs.customer }}", limit: 1, on_full: drop}', "keyed.yaml:3:",
     "'queue', 'cancel_newest' or 'cancel_oldest'"),
    ('concurrency: {key: "${{ steps.a.output }}", limit: 1}', "keyed.yaml:3:20",
     "concurrency.key: may read only inputs, not 'steps'"),
    ('concurrency: {key: "${{ inputs.who }}", limit: 1}', "keyed.yaml:3:20", "there is no input 'who'"),
    ('concurrency: {key: "${{ inputs.customer", limit: 1}', "keyed.yaml:3:20", "concurrency.key"),
    ('concurrency: {key: "x", limit: 1, burst: 2}', "keyed.yaml:3:", "unknown key 'burst'"),
    ("priority: urgent", "keyed.yaml:3:11", "'high', 'normal' or 'low'"),
])
def test_bad_flow_control_is_a_located_error(extra: str, where: str, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason) as refused:
        load(extra)
    assert where in str(refused.value)


def test_a_valid_key_renders_from_the_inputs() -> None:
    defn = load('priority: low\nconcurrency: {key: "cust-${{ inputs.customer }}", limit: 2, on_full: cancel_oldest}')
    assert defn.spec.priority == "low" and defn.spec.concurrency is not None
    assert defn.spec.concurrency.on_full == "cancel_oldest"
    assert render_key(defn.spec, {"customer": "7"}) == "cust-7"
    with pytest.raises(ConcurrencyKeyError, match="cannot render the concurrency key"):
        render_key(defn.spec, {})
    constant = load('concurrency: {key: "everyone", limit: 3}')  # a workflow-wide limit
    assert render_key(constant.spec, {"customer": "x"}) == "everyone"
    assert render_key(load("").spec, {"customer": "x"}) is None


def test_a_file_without_flow_control_keeps_its_hash() -> None:
    """The new keys are left out of the stored form while unset: no new version of every file on upgrade."""
    plain = load("")
    stored = plain.to_json()
    assert "concurrency" not in stored and "priority" not in stored
    assert load("priority: normal").def_hash == plain.def_hash
    assert load("priority: high").def_hash != plain.def_hash
    assert load("priority: high").to_json()["priority"] == "high"


def _intake() -> WorkIntake:
    return WorkIntake(None, Keys("t"), "c")  # type: ignore[arg-type]  # pick() needs no Redis


def test_weighted_round_robin_gives_4_2_1_interleaved() -> None:
    intake = _intake()
    picks = [intake.pick(list(LANES)) for _ in range(700)]
    assert Counter(picks) == {"high": 400, "normal": 200, "low": 100}
    assert "".join(p[0] for p in picks[:7]) == "hnhlhnh"  # interleaved, not 4 highs in a row
    gaps = [i for i, p in enumerate(picks) if p == "low"]
    assert max(b - a for a, b in itertools.pairwise(gaps)) == 7  # low never waits more than 7 picks


def test_an_empty_lanes_share_goes_to_the_others_in_proportion() -> None:
    intake = _intake()
    picks = Counter(intake.pick(["high", "low"]) for _ in range(500))
    assert picks == {"high": 400, "low": 100}
    assert Counter(intake.pick(["low"]) for _ in range(10)) == {"low": 10}
