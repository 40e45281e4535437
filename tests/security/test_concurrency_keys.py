"""Hostile concurrency keys: a key is rendered by the bounded expression engine from a run's inputs only, and a
workflow's keys count only its own runs.

- A key expression that would build a huge string fails on the engine's limits, quickly, and the start is
  refused with a reason that names the concurrency key; a key that renders long text, a mapping, null or
  control characters is refused too. Nothing is created for a refused start.
- Keys are per workflow: a workflow holding the key `shared` (limit 1) does not hold up another workflow's
  runs with the same key value (a workflow's name is unique across the directory, so no file can count
  another's runs as its own).
- The key can read only `inputs`: `steps`, `secrets`, `run` are refused when the file loads.
"""

from __future__ import annotations

import time

import pytest

from tests.support.runtime import client_for, pending_task, running_worker, write_workflow
from worker.client import load_workflow_file
from worker.config import Settings
from worker.errors import DefinitionError, WorkerError


def keyed(name: str, key: str, inputs: str = "{s: {type: any}}") -> str:
    return f"""
name: {name}
inputs: {inputs}
concurrency: {{key: "{key}", limit: 1}}
steps:
  - {{id: a, uses: set, with: {{x: 1}}}}
"""


@pytest.mark.parametrize(("key", "given", "reason"), [
    ("${{ inputs.s * 100000000 }}", "ab", "cannot render the concurrency key"),
    ("${{ join([inputs.s] * 100000, ',') }}", "abcdefgh", "characters; at most 256 are allowed"),
    ("${{ inputs.s }}", {"nested": ["a"] * 10}, "must render to a string or an integer, not dict"),
    ("${{ inputs.s }}", None, "must render to a string or an integer, not null"),
    ("${{ inputs.s }}", True, "must render to a string or an integer, not bool"),
    ("k-${{ inputs.s }}", "\x1b[2J", "printable"),
    ("${{ inputs.s }}", "", "empty string"),
])
async def test_a_hostile_key_is_bounded_and_refused_clearly(settings: Settings, key: str, given: object,
                                                             reason: str) -> None:
    write_workflow(settings, "hostile.yaml", keyed("hostile", key))
    async with client_for(settings) as client:
        started = time.monotonic()
        with pytest.raises(WorkerError, match=reason) as refused:
            await client.start_run("hostile", {"s": given})
        elapsed = time.monotonic() - started
        assert "concurrency key" in str(refused.value)
        assert await client.list_runs(workflow="hostile") == []  # nothing was created
    assert elapsed < 5.0


async def test_keys_are_per_workflow_one_cannot_hold_up_anothers_runs(settings: Settings) -> None:
    gate = """
name: {name}
inputs: {{s: {{type: string}}}}
concurrency: {{key: "${{{{ inputs.s }}}}", limit: 1}}
steps:
  - {{id: ask, uses: approval, with: {{prompt: "hold the key"}}}}
"""
    write_workflow(settings, "squatter.yaml", gate.format(name="squatter"))
    write_workflow(settings, "victim.yaml", gate.format(name="victim"))
    async with running_worker(settings), client_for(settings) as client:
        held = [await client.start("squatter", {"s": "shared"}) for _ in range(3)]
        assert [h.status for h in held] == ["pending", "queued", "queued"]
        await pending_task(client, held[0].run_id)
        victim = await client.start("victim", {"s": "shared"})
        assert victim.status == "pending"
        await pending_task(client, victim.run_id)  # it runs while the squatter holds its own `shared`
        for h in held + [victim]:
            await client.cancel(h.run_id)
        for h in held + [victim]:
            assert (await client.wait_for_run(h.run_id, timeout=30)).status.value == "cancelled"


@pytest.mark.parametrize(("key", "reason"), [
    ("${{ steps.a.output }}", "may read only inputs, not 'steps'"),
    ("${{ secrets.token }}", "may read only inputs, not 'secrets'"),
    ("${{ run.id }}", "may read only inputs, not 'run'"),
    ("${{ inputs.nope }}", "there is no input 'nope'"),
    ("${{ __import__('os') }}", "concurrency.key"),
    ("${{ inputs.s", "concurrency.key"),
    ("line\\nbreak", "printable"),
])
def test_a_key_that_reads_anything_but_inputs_is_refused_at_load_time(tmp_path, key: str,  # type: ignore[no-untyped-def]
                                                                         reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(keyed("bad", key, inputs="{s: {type: string}}"), encoding="utf-8")
    with pytest.raises(DefinitionError, match=reason) as refused:
        load_workflow_file(path)
    assert "bad.yaml:4:" in str(refused.value)  # file:line:column of the key
