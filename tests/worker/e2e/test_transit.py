"""Encrypted payloads with Vault transit: ciphertext at rest, plaintext for the engine and for display,
key rotation keeps old runs readable and replayable (real OpenBao, Postgres, Redis)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from tests.support.runtime import client_for, running_worker, write_workflow
from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings
from worker.errors import WorkerError


def workflow(name: str, key: str) -> str:
    return f"""
        name: {name}
        encrypt_payloads: true
        inputs: {{patient: {{type: string}}}}
        steps:
          - {{id: note, uses: set, with: {{text: "diagnosis for ${{{{ inputs.patient }}}}", key: "{key}"}}}}
          - {{id: echo, uses: set, with: {{again: "${{{{ steps.note.output.text }}}}"}}}}
    """


async def agentrt(settings: Settings, *args: str) -> tuple[int, str, str]:
    """The CLI as an operator with Vault access runs it."""
    import asyncio
    import sys

    env = {**worker_environment(settings), "VAULT_ADDR": settings.vault_addr or "",
           "VAULT_TOKEN": settings.vault_token or "", "AGENTRT_TRANSIT_KEY": settings.transit_key}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "worker", *args, cwd=REPO_ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def _stored(url: str, run_id: str) -> str:
    """Everything Postgres holds for a run, as text: the event log and the run row."""
    conn = await asyncpg.connect(url)
    try:
        events = await conn.fetch("SELECT data::text AS d FROM events WHERE run_id = $1", run_id)
        row = await conn.fetchrow("SELECT inputs::text AS i, output::text AS o FROM runs WHERE run_id = $1", run_id)
    finally:
        await conn.close()
    return "\n".join([*(r["d"] for r in events), row["i"], row["o"] or ""])


async def test_payloads_are_ciphertext_in_postgres_and_plaintext_for_readers(
        settings: Settings, vault_server: Any) -> None:
    key = f"agentrt-test-{uuid.uuid4().hex[:8]}"
    settings = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token,
                       transit_key=key)
    marker = f"secret-patient-{uuid.uuid4().hex[:6]}"
    write_workflow(settings, "enc.yaml", workflow("enc", key))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("enc", {"patient": marker})
        summary = await client.wait_for_run(run_id, timeout=30)
        assert summary.status.value == "completed", summary.error
        detail = await client.get_run(run_id)
        stored = await _stored(settings.database_url, run_id)
        assert marker not in stored and "diagnosis" not in stored
        assert stored.count("vault:v1:") >= 5  # run inputs, created event, step inputs/outputs, run output
        # readers see plaintext
        assert detail.inputs == {"patient": marker}
        assert detail.output == {"again": f"diagnosis for {marker}"}
        assert detail.steps[0].inputs == {"text": f"diagnosis for {marker}", "key": key}
        rc, out, err = await agentrt(settings, "show", run_id, "--json")
        assert rc == 0, err
        assert json.loads(out)["output"] == {"again": f"diagnosis for {marker}"}

        # rotation: new runs use the new key version, old runs stay readable and replayable
        rc, out, err = await agentrt(settings, "vault", "rotate-payload-key", "--json")
        assert rc == 0 and json.loads(out)["latest_version"] == 2, err
        second = await client.start_run("enc", {"patient": marker})
        assert (await client.wait_for_run(second, timeout=30)).status.value == "completed"
        assert "vault:v2:" in await _stored(settings.database_url, second)
        assert (await client.get_run(run_id)).output == {"again": f"diagnosis for {marker}"}
        plan, new_id = await client.replay(run_id, from_step="echo")
        assert plan.reused == ["note"] and new_id is not None
        replayed = await client.wait_for_run(new_id, timeout=30)
        assert replayed.status.value == "completed", replayed.error
        assert (await client.get_run(new_id)).output == {"again": f"diagnosis for {marker}"}
        assert marker not in await _stored(settings.database_url, new_id)


async def test_a_reader_without_vault_sees_a_clear_marker_not_ciphertext(settings: Settings,
                                                                          vault_server: Any) -> None:
    key = f"agentrt-test-{uuid.uuid4().hex[:8]}"
    with_vault = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token, transit_key=key)
    write_workflow(with_vault, "enc.yaml", workflow("enc", key))
    async with running_worker(with_vault), client_for(with_vault) as client:
        run_id = await client.start_run("enc", {"patient": "p"})
        assert (await client.wait_for_run(run_id, timeout=30)).status.value == "completed"
    async with client_for(replace(settings, vault_addr=None, vault_token=None)) as blind:
        detail = await blind.get_run(run_id)
        assert isinstance(detail.output, str) and detail.output.startswith("<encrypted with Vault transit")
        with pytest.raises(WorkerError, match="encrypt_payloads needs Vault"):
            await blind.start_run("enc", {"patient": "p"})
