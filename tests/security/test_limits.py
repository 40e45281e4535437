"""Hostile workflows against the operator's limits: a workflow file may only opt in to a limit of `limits.yaml`.

It cannot define or widen one (no `limits:` of its own, no inline rates, no `burst`), cannot name one it was
not given (including by an expression), cannot take a limit on a step kind that has none, and cannot slip past a
limit that matches its calls by host by naming another provider or model. Each is refused at load time with
file:line:column, or, for the host match, throttled at run time like any other call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.limits.support import sized_answer, write_limits
from tests.support.llm_peer import LlmPeer
from tests.support.runtime import client_for, running_worker, wait_status, write_workflow
from worker.boundary import load_checks
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.errors import DefinitionError
from worker.limits.gate import Limiter

LIMITS = ("limits:\n  shared-api: {requests: 60/min, burst: 1}\n"
          "  guard: {requests: 12/min, burst: 1, match: {host: 127.0.0.1}}\n")


def refused(settings: Settings, name: str, text: str) -> DefinitionError:
    path = write_workflow(settings, name, text)
    with pytest.raises(DefinitionError) as caught:
        load_file(path, checks=load_checks(settings))
    return caught.value


@pytest.mark.parametrize(("text", "where", "reason"), [
    # its own limits, or a wider one: the top level knows no `limits:`
    ("""
     name: own
     limits:
       shared-api: {requests: 1000000/s}
     steps:
       - {id: a, uses: http, with: {url: "https://example.com"}, limit: shared-api}
     """, "2:1", "unknown key 'limits'"),
    # an inline definition where a name belongs
    ("""
     name: inline
     steps:
       - {id: a, uses: http, with: {url: "https://example.com"}, limit: {requests: 1000000/s}}
     """, "3:68", "valid string"),
    # a step-level burst or rate
    ("""
     name: burst
     steps:
       - {id: a, uses: http, with: {url: "https://example.com"}, limit: shared-api, burst: 1000}
     """, "3:80", "unknown key 'burst'"),
    # a name the operator did not define
    ("""
     name: unknown
     steps:
       - {id: a, uses: http, with: {url: "https://example.com"}, limits: [shared-api, unlimited]}
     """, "3:82", "unknown limit 'unlimited'"),
    # a name chosen by an expression (at run time, from inputs): names are literal
    ("""
     name: dynamic
     inputs: {which: {type: string}}
     steps:
       - {id: a, uses: http, with: {url: "https://example.com"}, limit: "${{ inputs.which }}"}
     """, "4:68", "unknown limit '${{ inputs.which }}'"),
    # a step kind without calls to limit
    ("""
     name: sleepy
     steps:
       - {id: a, uses: sleep, with: {duration: 1s}, limit: shared-api}
     """, "3:55", "a sleep step cannot take a limit"),
])
def test_a_workflow_can_only_opt_in(settings: Settings, text: str, where: str, reason: str) -> None:
    write_limits(settings.workflows_dir, LIMITS)
    error = refused(settings, "hostile.yaml", "\n".join(line[5:] for line in text.splitlines()))
    assert error.location.endswith(f"hostile.yaml:{where}") and reason in error.reason, (error.location, error.reason)


def test_a_workflow_file_named_limits_yaml_is_never_loaded_as_a_workflow(settings: Settings) -> None:
    from worker.definitions.registry import scan_directory

    (settings.workflows_dir / "limits.yaml").write_text("name: sneaky\nsteps:\n  - {id: a, uses: set, with: {}}\n")
    scanned = scan_directory(settings.workflows_dir, load_checks(settings))
    (result,) = scanned.values()
    assert isinstance(result, DefinitionError) and "unknown key 'name'" in result.reason


def test_host_matching_catches_any_provider_and_model(settings: Settings) -> None:
    write_limits(settings.workflows_dir, LIMITS)
    limiter = Limiter(settings)
    for provider, model in (("openai", "gpt-4o"), ("ollama", "renamed"), ("anthropic", "x")):
        assert [b.name for b in limiter.applicable((), "llm", provider, model, "127.0.0.1")] == ["guard"]
    assert limiter.applicable((), "llm", "openai", "gpt-4o", "api.openai.com") == []
    assert limiter.applicable((), "http", "openai", "gpt-4o", "127.0.0.1") == []  # match: LLM calls only


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        p.responder = sized_answer
        yield p


async def test_another_wire_format_to_the_same_host_is_throttled_all_the_same(settings: Settings,
                                                                             peer: LlmPeer, tmp_path: Path) -> None:
    write_limits(settings.workflows_dir, LIMITS)
    write_workflow(settings, "evade.yaml", f"""
        name: evade
        steps:
          - id: ask
            uses: llm
            with: {{provider: ollama, model: not-the-matched-one, base_url: "{peer.openai_url}", prompt: hi}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start_run("evade")
        await wait_status(client, first, "completed")
        second = await client.start_run("evade")
        await wait_status(client, second, "waiting", timeout=10)
        summary = (await client.get_run(second)).summary
        assert (summary.waiting_on or "").startswith("throttled: guard"), summary.waiting_on
        assert len(peer.requests) == 1
        await client.cancel(second, reason="done")
