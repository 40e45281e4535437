"""Bearer tokens: missing, unknown, revoked, expired, without the scope; stored only as a hash; the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest

from tests.support.api_server import bearer, make_token
from tests.support.runtime import client_for, write_workflow
from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings
from worker.errors import Conflict, WorkerError


async def test_every_refusal_is_a_json_401_or_403_that_says_why(settings: Settings, api: httpx.AsyncClient) -> None:
    reader = await make_token(settings, "reader", "runs:read")
    revoked = await make_token(settings, "gone", "runs:read")
    async with client_for(settings) as client:
        await client.revoke_api_token("gone")
    expiring = await make_token(settings, "brief", "runs:read", expires_in=timedelta(seconds=1))
    await asyncio.sleep(1.2)
    cases = [
        (401, "missing bearer token", {}),
        (401, "missing bearer token", {"Authorization": "Basic dXNlcjpwYXNz"}),
        (401, "unknown API token", bearer("agentrt_not-a-real-token")),
        (401, "unknown API token", bearer("something else entirely")),
        (401, "API token 'gone' is revoked", bearer(revoked)),
        (401, "API token 'brief' is expired", bearer(expiring)),
    ]
    for status, words, headers in cases:
        r = await api.get("/v1/runs", headers=headers)
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["error"]["message"], r.json()
        assert r.headers["www-authenticate"].startswith("Bearer")
    denied = await api.post("/v1/runs", json={"workflow": "x"}, headers=bearer(reader))
    assert denied.status_code == 403
    assert denied.json()["error"]["message"] == ("API token 'reader' lacks the scope 'runs:write' (it has: "
                                                 "runs:read)")
    assert (await api.get("/v1/runs", headers=bearer(reader))).status_code == 200
    # a token in the query string is not a credential
    assert (await api.get("/v1/runs", params={"access_token": reader})).status_code == 401


async def test_a_revocation_takes_effect_within_two_seconds(settings: Settings, api: httpx.AsyncClient) -> None:
    token = await make_token(settings, "soon-gone", "runs:read")
    assert (await api.get("/v1/runs", headers=bearer(token))).status_code == 200  # cached as valid
    async with client_for(settings) as client:
        await client.revoke_api_token("soon-gone")
    await asyncio.sleep(2.1)
    r = await api.get("/v1/runs", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


async def test_tokens_are_stored_hashed_and_names_are_unique_while_active(settings: Settings) -> None:
    token = await make_token(settings, "ci", "runs:read", "runs:write")
    async with client_for(settings) as client:
        stored = await client.pool.fetch("SELECT * FROM api_tokens")
        assert token not in json.dumps([dict(r) for r in stored], default=str)
        with pytest.raises(Conflict, match="already named 'ci'"):
            await client.create_api_token("ci", ["runs:read"])
        with pytest.raises(WorkerError, match="unknown scope"):
            await client.create_api_token("bad", ["runs:admin"])
        with pytest.raises(WorkerError, match="printable characters without spaces"):
            await client.create_api_token("two words", ["runs:read"])
        await client.revoke_api_token("ci")
        again, record = await client.create_api_token("ci", ["runs:read"])  # the name is free again
        assert again != token and record.scopes == ("runs:read",)
        trail = [(a.action, a.actor) for a in await client.audit_records()]
    assert [a for a, _ in trail if a.startswith("api-token")] == ["api-token.create", "api-token.revoke",
                                                                   "api-token.create"]


def test_the_cli_prints_a_token_once_and_lists_only_names(settings: Settings) -> None:
    env = worker_environment(settings)

    def agentrt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    created = agentrt("api-token", "create", "deploy-bot", "--scope", "runs:write", "--scope", "runs:read",
                      "--expires-in", "30d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("agentrt_") and len(token) > 40
    assert "shown this once" in created.stderr
    listed = agentrt("api-token", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["scopes"], r["state"]) for r in rows] == [("deploy-bot", ["runs:read", "runs:write"],
                                                                      "active")]
    assert token not in listed.stdout
    bad_scope = agentrt("api-token", "create", "x", "--scope", "everything")
    assert bad_scope.returncode == 2 and "invalid choice" in bad_scope.stderr
    assert agentrt("api-token", "revoke", "deploy-bot").returncode == 0
    missing = agentrt("api-token", "revoke", "deploy-bot")
    assert missing.returncode == 4 and "no active API token named 'deploy-bot'" in missing.stderr


async def test_the_policy_file_applies_to_api_principals(settings: Settings, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.api_server import start_api, stop_api

    assert isinstance(tmp_path, Path)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - workflows: ['secret-*']\n    allow: {view: ['api:auditor']}\n"
                      "  - workflows: ['*']\n    allow: {view: ['*'], cancel: ['*'], approve: ['*'], replay: ['*']}\n")
    write_workflow(settings, "secret.yaml", "name: secret-sauce\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    server = start_api(settings, tmp_path / "api.log", {"AGENTRT_POLICY_FILE": str(policy)})
    try:
        starter = await make_token(settings, "starter", "runs:write", "runs:read")
        auditor = await make_token(settings, "auditor", "runs:read")
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as api:
            run_id = (await api.post("/v1/runs", json={"workflow": "secret-sauce"},
                                     headers=bearer(starter))).json()["run_id"]
            hidden = await api.get(f"/v1/runs/{run_id}", headers=bearer(starter))
            seen = await api.get(f"/v1/runs/{run_id}", headers=bearer(auditor))
            listed = await api.get("/v1/runs", headers=bearer(starter))
    finally:
        stop_api(server)
    assert hidden.status_code == 403 and "api:starter" in hidden.json()["error"]["message"]
    assert seen.status_code == 200 and seen.json()["workflow"] == "secret-sauce"
    assert listed.json()["runs"] == []
