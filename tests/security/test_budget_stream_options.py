"""Hostile values for the options this change added to workflow files: `budget:` and an llm step's `stream:`.

A budget is the workflow's own cap: it must be a literal (a run's inputs cannot lift it), bounded, and cannot
name another workflow's spend (the engine keys the ledger by the name of the definition it runs). `stream:` is a
plain boolean."""

from __future__ import annotations

import pytest

from worker.definitions import load_text
from worker.errors import DefinitionError

LLM = '{id: a, uses: llm, with: {model: m, base_url: "http://127.0.0.1:9/v1", prompt: hi, STREAM}}'


@pytest.mark.parametrize("budget", [
    'budget: {usd_per_run: "${{ inputs.cap }}"}',       # an input cannot lift the cap
    "budget: {usd_per_day: 1e30}",                      # bounded
    "budget: {tokens_per_run: -1}",
    "budget: {usd_per_run: 1, workflow: other}",        # cannot name another workflow's ledger
    "budget: {usd_per_run: .nan}",
])
def test_a_budget_is_a_bounded_literal_of_the_workflow_itself(budget: str) -> None:
    text = (f"name: spendy\ninputs: {{cap: {{type: number}}}}\n{budget}\n"
            "steps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    with pytest.raises(DefinitionError) as refused:
        load_text(text, "spendy.yaml")
    assert "spendy.yaml:3:" in str(refused.value)


# (`stream: "${{ inputs.x }}"` is rendered and validated when the step starts, like every `with:` value; it can
# only choose whether this step's own text goes to its own run's live stream)
@pytest.mark.parametrize("stream", ["stream: maybe", "stream: {to: elsewhere}"])
def test_stream_is_a_plain_boolean(stream: str) -> None:
    text = f"name: talky\ninputs: {{x: {{type: boolean}}}}\nsteps:\n  - {LLM.replace('STREAM', stream)}\n"
    with pytest.raises(DefinitionError):
        load_text(text, "talky.yaml")

