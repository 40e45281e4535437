"""What the worker's own Vault identity and its step tokens may do: only what running steps needs.

The worker logs in with the `agentrt-worker` policy (as `agentrt dev` and deploy/vault_init.py set
it up). With that token it can mint step tokens through the `agentrt-step` role, renew itself and use
the payload transit key, and nothing else: no secret is readable with the worker token itself, no
policy can be written, and a step token carries its workflow's read policy alone (not even Vault's
`default` policy), so it cannot look itself up, mint tokens or reach cubbyhole.
"""

from __future__ import annotations

from typing import Any

import hvac
import hvac.exceptions
import pytest

from tests.support.vault_support import make_approle, root_client, uid, write_secret
from worker.secrets.dev import dev_worker_login
from worker.secrets.policies import STEP_TOKEN_ROLE, WORKER_POLICY, apply_policies
from worker.secrets.vault import VaultSession


def _worker_session(vault: Any) -> VaultSession:
    apply_policies(root_client(vault), [])
    login = dev_worker_login(vault.addr, vault.root_token)
    return VaultSession(vault.addr, role_id=login["AGENTRT_VAULT_ROLE_ID"],
                        secret_id=login["AGENTRT_VAULT_SECRET_ID"], token_role=STEP_TOKEN_ROLE)


def test_the_worker_token_has_only_the_worker_policy_and_reads_no_secret(vault_server: Any) -> None:
    session = _worker_session(vault_server)
    token = session.worker_token().value
    client = hvac.Client(url=vault_server.addr, token=token, timeout=10)
    assert client.auth.token.lookup_self()["data"]["policies"] == [WORKER_POLICY]
    path = f"{uid()}/db"
    write_secret(vault_server, path, {"password": "not-for-the-worker"})
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.create_or_update_policy(name="agentrt-wf-evil", policy='path "*" { capabilities = ["read"] }')
    with pytest.raises(hvac.exceptions.Forbidden):  # a plain child token (no role) could carry any policy
        client.auth.token.create(policies=["agentrt-wf-x"], ttl="60s")


def test_a_step_token_carries_its_workflow_policy_and_nothing_else(vault_server: Any) -> None:
    session = _worker_session(vault_server)
    step = session.step_token(("agentrt-wf-x",))
    client = hvac.Client(url=vault_server.addr, token=step, timeout=10)
    info = root_client(vault_server).auth.token.lookup(step)["data"]
    assert info["policies"] == ["agentrt-wf-x"]  # no `default`
    assert 0 < info["ttl"] <= 120
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()  # the default policy would allow this
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.create(policies=["agentrt-wf-x"], ttl="60s")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.write("cubbyhole/loot", value="x")


def test_the_step_role_refuses_the_worker_and_root_policies(vault_server: Any) -> None:
    session = _worker_session(vault_server)
    for forbidden in (("root",), (WORKER_POLICY,), ("default",), ("other-team",)):
        with pytest.raises(Exception, match=r"(?i)permission|not allowed|denied|invalid|forbidden"):
            session.step_token(forbidden, fresh=True)


def test_a_worker_role_made_by_hand_still_gets_narrow_step_tokens(vault_server: Any) -> None:
    # an operator who followed the README's `vault write auth/approle/role/agentrt-worker ...` by hand
    apply_policies(root_client(vault_server), [])
    role_id, secret_id = make_approle(vault_server, f"w-{uid()}", policies=[WORKER_POLICY])
    session = VaultSession(vault_server.addr, role_id=role_id, secret_id=secret_id, token_role=STEP_TOKEN_ROLE)
    step = session.step_token(("agentrt-wf-y",))
    assert root_client(vault_server).auth.token.lookup(step)["data"]["policies"] == ["agentrt-wf-y"]
