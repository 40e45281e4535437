"""VaultSecretProvider, VaultSession, policies, the CLI and the dev seeding against a real OpenBao."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.support.services import REPO_ROOT
from tests.support.vault_support import make_approle, root_client, uid, write_secret
from worker.cli import main as agentrt_main
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.devstack._process import free_port
from worker.errors import StepFailed
from worker.secrets import build_secret_provider
from worker.secrets.dev import seed_dev_vault
from worker.secrets.policies import STEP_TOKEN_ROLE, WORKER_POLICY, apply_policies, policies_for
from worker.secrets.provider import VaultSecretProvider


def two_workflows(tag: str) -> tuple[Any, Any]:
    first = load_text(textwrap.dedent(f"""
        name: pay-{tag}
        credentials: {{stripe: {{path: {tag}/payments/stripe}}}}
        steps:
          - id: charge
            uses: python
            secrets: [stripe]
            with: {{function: "m:f", args: {{key: "${{{{ secrets.stripe.api_key }}}}", n: 1}}}}
        """), "pay.yaml")
    # a second workflow that names the first one's path: its own policy was never granted that path
    second = load_text(textwrap.dedent(f"""
        name: snoop-{tag}
        credentials: {{theirs: {{path: {tag}/payments/stripe}}}}
        steps:
          - id: peek
            uses: python
            secrets: [theirs]
            with: {{function: "m:f", args: {{key: "${{{{ secrets.theirs.api_key }}}}"}}}}
        """), "snoop.yaml")
    return first, second


def vault_settings(vault: Any, **kw: Any) -> Settings:
    return replace(Settings(), vault_addr=vault.addr, vault_token=vault.root_token, secret_cache_ttl=0.0, **kw)


async def test_a_step_reads_only_what_its_workflow_was_granted(vault_server: Any) -> None:
    tag = uid()
    first, second = two_workflows(tag)
    write_secret(vault_server, f"{tag}/payments/stripe", {"api_key": f"sk-{tag}-secret"})
    apply_policies(root_client(vault_server), policies_for([first]))  # only the first workflow is granted
    provider = build_secret_provider(vault_settings(vault_server))
    assert isinstance(provider, VaultSecretProvider)
    try:
        args, secrets = await provider.prepare(first, first.step("charge"),
                                               {"function": "m:f", "args": {"key": "[secret:stripe.api_key]", "n": 1}},
                                               dict)
        assert secrets == {"stripe": {"api_key": f"sk-{tag}-secret"}}
        assert args["args"] == {"key": f"sk-{tag}-secret", "n": 1}
        with pytest.raises(StepFailed) as info:
            await provider.prepare(second, second.step("peek"), {}, dict)
        assert not info.value.retryable
        assert f"permission denied reading secret/data/{tag}/payments/stripe" in info.value.reason
        assert f"agentrt-wf-snoop-{tag}" in info.value.reason
        assert f"sk-{tag}-secret" not in info.value.reason
    finally:
        await provider.aclose()


async def test_missing_secret_is_final_and_names_the_path(vault_server: Any) -> None:
    tag = uid()
    first, _ = two_workflows(tag)
    apply_policies(root_client(vault_server), policies_for([first]))
    provider = VaultSecretProvider(vault_settings(vault_server))
    try:
        with pytest.raises(StepFailed) as info:
            await provider.prepare(first, first.step("charge"), {}, dict)
        assert not info.value.retryable
        assert f"no secret at secret/data/{tag}/payments/stripe" in info.value.reason
    finally:
        await provider.aclose()


async def test_unreachable_vault_is_a_retryable_wait() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    first, _ = two_workflows(uid())
    provider = VaultSecretProvider(replace(Settings(), vault_addr=addr, vault_token="t"))
    try:
        with pytest.raises(StepFailed) as info:
            await provider.prepare(first, first.step("charge"), {}, dict)
        assert info.value.retryable
        assert info.value.reason.startswith(f"waiting for credentials: Vault unreachable at {addr}")
    finally:
        await provider.aclose()


async def test_approle_with_wrapped_secret_id_token_role_and_relogin_after_expiry(vault_server: Any) -> None:
    tag = uid()
    first, _ = two_workflows(tag)
    write_secret(vault_server, f"{tag}/payments/stripe", {"api_key": "v1"})
    apply_policies(root_client(vault_server), policies_for([first]))
    role_id, wrapped = make_approle(vault_server, f"worker-{tag}", policies=[WORKER_POLICY], token_ttl="2s",
                                    token_max_ttl="2s", wrapped=True)
    settings = replace(Settings(), vault_addr=vault_server.addr, vault_role_id=role_id, vault_secret_id=wrapped,
                       vault_token_role=STEP_TOKEN_ROLE, secret_cache_ttl=0.0)
    provider = VaultSecretProvider(settings)
    try:
        _, secrets = await provider.prepare(first, first.step("charge"), {}, dict)
        assert secrets["stripe"]["api_key"] == "v1"
        generation = provider.session._generation
        await asyncio.sleep(2.5)  # the worker's token (and its step tokens) expired
        write_secret(vault_server, f"{tag}/payments/stripe", {"api_key": "v2"})
        _, secrets = await provider.prepare(first, first.step("charge"), {}, dict)
        assert secrets["stripe"]["api_key"] == "v2"
        assert provider.session._generation > generation  # logged in again with the unwrapped secret id
    finally:
        await provider.aclose()


def test_step_tokens_carry_only_the_workflow_policy(vault_server: Any) -> None:
    from worker.secrets.vault import VaultSession

    # a token role that was never created: plain child tokens, still with only the asked policy
    session = VaultSession(vault_server.addr, token=vault_server.root_token, token_role=f"missing-{uid()}")
    token = session.step_token(("agentrt-wf-x",))
    info = hvac.Client(url=vault_server.addr, token=token).auth.token.lookup_self()["data"]
    assert set(info["policies"]) <= {"agentrt-wf-x", "default"}
    assert 0 < info["ttl"] <= 120


def test_cli_shows_and_applies_policies(vault_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    tag = uid()
    (tmp_path / "pay.yaml").write_text(textwrap.dedent(f"""
        name: cli-{tag}
        credentials: {{a: {{path: {tag}/a}}, b: {{path: {tag}/b, mount: secret}}}}
        steps: [{{id: s, uses: python, secrets: [a, b], with: {{function: "m:f"}}}}]
        """))
    (tmp_path / "broken.yaml").write_text("name: [\n")
    monkeypatch.setenv("VAULT_ADDR", vault_server.addr)
    monkeypatch.setenv("VAULT_TOKEN", vault_server.root_token)
    rc = agentrt_main(["vault", "policies", "--workflows", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1  # one file is invalid (and reported), the valid ones are still listed
    assert [p["name"] for p in out] == [f"agentrt-wf-cli-{tag}"]
    assert out[0]["paths"] == [f"secret/data/{tag}/a", f"secret/data/{tag}/b"] and not out[0]["applied"]
    (tmp_path / "broken.yaml").unlink()
    assert agentrt_main(["vault", "policies", "--workflows", str(tmp_path), "--apply", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["applied"]
    policy = root_client(vault_server).sys.read_policy(f"agentrt-wf-cli-{tag}")["data"]["rules"]
    assert f'path "secret/data/{tag}/a"' in policy and "read" in policy


async def test_seed_dev_vault_makes_the_demo_workflow_readable(vault_server: Any, tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "workflows" / "vault-demo.yaml", tmp_path / "vault-demo.yaml")
    seed_dev_vault(vault_server.addr, vault_server.root_token, tmp_path)
    defn = load_text((tmp_path / "vault-demo.yaml").read_text(), "vault-demo.yaml")
    provider = VaultSecretProvider(vault_settings(vault_server))
    try:
        step = defn.step("call")
        _, secrets = await provider.prepare(defn, step, {}, dict)
        assert secrets["demo_api"]["api_key"].startswith("dev-fake-vault-demo-demo_api-")
    finally:
        await provider.aclose()
    seed_dev_vault(vault_server.addr, vault_server.root_token, tmp_path)  # idempotent


async def test_tool_server_credentials_are_read_with_the_servers_own_policy(vault_server: Any) -> None:
    tag = uid()
    defn = load_text(textwrap.dedent(f"""
        name: tools-{tag}
        credentials:
          stripe: {{path: {tag}/stripe}}
          other: {{path: {tag}/other}}
        tools:
          payments:
            {{command: python, args: ["-m", "nothing"], credential: stripe, env: {{KEY: "${{credential.api_key}}"}}}}
        steps:
          - id: refund
            uses: tool
            secrets: [stripe]
            with: {{server: payments, tool: refund}}
          - id: note
            uses: python
            secrets: [other]
            with: {{function: "m:f"}}
        """), "tools.yaml")
    write_secret(vault_server, f"{tag}/stripe", {"api_key": "sk"})
    write_secret(vault_server, f"{tag}/other", {"v": "o"})
    policies = {p.name: p for p in policies_for([defn])}
    tool_policy = f"agentrt-wf-tools-{tag}@payments"
    assert set(policies) == {f"agentrt-wf-tools-{tag}", tool_policy}
    assert policies[f"agentrt-wf-tools-{tag}"].paths == (f"secret/data/{tag}/other",)  # not the tool's
    assert policies[tool_policy].paths == (f"secret/data/{tag}/stripe",)
    apply_policies(root_client(vault_server), list(policies.values()))
    role_id, secret_id = make_approle(vault_server, f"w-{tag}", policies=[WORKER_POLICY])
    provider = VaultSecretProvider(replace(Settings(), vault_addr=vault_server.addr, vault_role_id=role_id,
                                           vault_secret_id=secret_id, vault_token_role=STEP_TOKEN_ROLE))
    try:
        _, secrets = await provider.prepare(defn, defn.step("refund"), {}, dict)
        assert secrets == {"stripe": {"api_key": "sk"}}
        _, secrets = await provider.prepare(defn, defn.step("note"), {}, dict)
        assert secrets == {"other": {"v": "o"}}
        with pytest.raises(StepFailed) as info:  # the workflow's own policy does not reach the tool's secret
            await provider.fetch(defn, ["stripe"])
        assert f"permission denied reading secret/data/{tag}/stripe" in info.value.reason
    finally:
        await provider.aclose()


def test_worker_logs_in_again_when_its_token_is_revoked(vault_server: Any) -> None:
    from worker.secrets.vault import VaultSession

    tag = uid()
    role_id, secret_id = make_approle(vault_server, f"w-{tag}", policies=[WORKER_POLICY])
    apply_policies(root_client(vault_server), [])
    session = VaultSession(vault_server.addr, role_id=role_id, secret_id=secret_id, token_role=STEP_TOKEN_ROLE)
    session.step_token(("agentrt-wf-x",))
    root_client(vault_server).auth.token.revoke(session.worker_token().value)
    session.step_token(("agentrt-wf-x",), fresh=True)  # 403 with the revoked token: log in, try again
    assert session._generation == 2


async def test_a_failing_secret_expression_never_quotes_the_value(vault_server: Any) -> None:
    tag = uid()
    defn = load_text(textwrap.dedent(f"""
        name: bad-{tag}
        credentials: {{c: {{path: {tag}/c}}}}
        steps:
          - id: s
            uses: python
            secrets: [c]
            with: {{function: "m:f", args: {{n: "${{{{ int(secrets.c.k) }}}}", m: "${{{{ secrets.c.nope }}}}"}}}}
        """), "bad.yaml")
    write_secret(vault_server, f"{tag}/c", {"k": "not-a-number-secret"})
    apply_policies(root_client(vault_server), policies_for([defn]))
    provider = VaultSecretProvider(vault_settings(vault_server))
    try:
        with pytest.raises(StepFailed) as info:
            await provider.prepare(defn, defn.step("s"), {"function": "m:f", "args": {"n": 0, "m": ""}}, dict)
    finally:
        await provider.aclose()
    assert not info.value.retryable
    assert "cannot render secret references" in info.value.reason
    assert "not-a-number-secret" not in info.value.reason and "[redacted:c.k]" in info.value.reason


async def test_a_static_token_is_renewed_before_it_expires(vault_server: Any) -> None:
    from worker.secrets.vault import VaultSession

    apply_policies(root_client(vault_server), [])
    token = root_client(vault_server).auth.token.create(policies=[WORKER_POLICY], ttl="3s", renewable=True,
                                                        period=None)["auth"]["client_token"]
    session = VaultSession(vault_server.addr, token=token, token_role=STEP_TOKEN_ROLE)
    session.worker_token()
    for _ in range(5):  # 5 s in all: longer than the token's 3 s TTL
        await asyncio.sleep(1.0)
        await asyncio.to_thread(session.renew_if_due)
    session.step_token(("agentrt-wf-x",), fresh=True)  # still valid: it was renewed
    assert session._generation == 1  # same token, no new identity
