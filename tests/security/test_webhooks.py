"""Hostile webhooks: a workflow file cannot take another's path or verify with another's secret, the endpoint
is neither an oracle nor a Vault hammer nor an audit-log flood, and the secret appears nowhere."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.api_server import ApiServer, stop_api
from tests.support.runtime import client_for
from tests.support.vault_support import dump_database, dump_redis, leaks, uid
from tests.support.webhook_support import grant, hook_workflow, new_secret, sign, signed, start_hook_api, write_hook
from worker.api.webhooks import BURST
from worker.client import webhooks as client_hooks
from worker.client.webhooks import WebhookSecretUnavailable, WebhookTarget, _Secrets
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.definitions.registry import Registry
from worker.errors import DefinitionError, StepFailed


@pytest.fixture
def hook_server(settings: Settings, vault_server: Any, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_hook_api(settings, vault_server, tmp_path / "api.log")
    yield server
    stop_api(server)


@pytest.fixture
async def hooks(hook_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hook_server.url, timeout=20.0) as client:
        yield client


def test_a_file_cannot_take_over_a_path_another_file_holds(tmp_path: Path) -> None:
    legit = load_text(hook_workflow("helpdesk", "helpdesk", "hd/webhook"), tmp_path / "z-helpdesk.yaml")
    hostile = load_text(hook_workflow("aaa-evil", "helpdesk", "evil/webhook"), tmp_path / "aaa-evil.yaml")
    registry = Registry()
    assert registry.apply(tmp_path / "z-helpdesk.yaml", legit).kind == "loaded"
    refused = registry.apply(tmp_path / "aaa-evil.yaml", hostile)
    assert refused.kind == "invalid" and refused.error is not None
    assert "webhook path 'helpdesk' is already used by workflow 'helpdesk' (z-helpdesk.yaml)" in str(refused.error)
    assert set(registry.active()) == {"helpdesk"}
    # the holder may edit its own file; when it moves to another path, the old one is free for others
    assert registry.apply(tmp_path / "z-helpdesk.yaml", legit).kind == "unchanged"
    moved = load_text(hook_workflow("helpdesk", "helpdesk-v2", "hd/webhook"), tmp_path / "z-helpdesk.yaml")
    assert registry.apply(tmp_path / "z-helpdesk.yaml", moved).kind == "loaded"
    assert registry.apply(tmp_path / "aaa-evil.yaml", hostile).kind == "loaded"
    assert registry.apply(tmp_path / "z-helpdesk.yaml", legit).kind == "invalid"  # now the path is taken
    registry.remove(tmp_path / "aaa-evil.yaml")
    assert registry.apply(tmp_path / "z-helpdesk.yaml", legit).kind == "loaded"


def test_a_webhook_names_only_its_own_credentials_and_a_plain_path() -> None:
    base = hook_workflow("t", "helpdesk", "t/webhook")
    cases = {
        base.replace("secret: hook}", "secret: helpdesk}"): "no credential 'helpdesk' is declared",
        base.replace("path: helpdesk,", "path: '../admin',"): "webhook path '../admin'",
        base.replace("path: helpdesk,", "path: 'a/b',"): "webhook path 'a/b'",
        base.replace("path: helpdesk,", "path: Helpdesk,"): "webhook path 'Helpdesk'",
        base.replace("path: helpdesk,", "path: '',"): "webhook path ''",
        base.replace("path: helpdesk,", f"path: {'h' * 101},"): "1-100 characters",
        base.replace("path: helpdesk,", "path: '%2e%2e',"): "webhook path '%2e%2e'",
        base.replace("secret: hook}", "secret: hook, url: 'http://x'}"): "url",
    }
    for text, message in cases.items():
        with pytest.raises(DefinitionError) as info:
            load_text(text, "t.yaml")
        assert message in str(info.value), str(info.value)
        assert str(info.value).startswith("t.yaml:4:"), str(info.value)  # the `on:` line, with a column


async def test_a_hostile_workflow_cannot_verify_with_another_workflows_secret(
        settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    vault_path, secret = new_secret(vault_server)
    legit = hook_workflow(f"helpdesk-{uid()}", "helpdesk", vault_path)
    evil_name = f"evil-{uid()}"
    evil = hook_workflow(evil_name, "evil", vault_path)  # the same Vault path, declared as its own credential
    write_hook(settings, "helpdesk.yaml", legit)
    write_hook(settings, "evil.yaml", evil)
    grant(vault_server, legit)  # the operator reviewed and applied the helpdesk's policy, not the new file's
    body = orjson.dumps({"ticket_id": "T-1"})
    async with client_for(settings) as client:
        assert await client.register_local(evil_name)
        r = await hooks.post("/hooks/evil", content=body, headers=signed(secret, body))
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"]["message"] == "the webhook cannot verify signatures right now; try again later"
        assert vault_path not in r.text and "permission" not in r.text  # nothing about why, for the sender
        assert await client.list_runs(workflow=evil_name) == []
        entries = [e for e in await client.audit_records() if e.action == "webhook.refused"]
        assert len(entries) == 1 and "permission denied" in (entries[0].reason or "")
        assert f"agentrt-wf-{evil_name}" in (entries[0].reason or "")  # read with its own policy, nothing wider
        ok = await hooks.post("/hooks/helpdesk", content=body, headers=signed(secret, body))
        assert ok.status_code == 202, ok.text


async def test_a_missing_short_or_unset_secret_refuses_without_saying_why(
        settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    short_path, _ = new_secret(vault_server, value="too-short")
    texts = {"short": hook_workflow("short", "short", short_path),
             "missing": hook_workflow("missing", "missing", f"{uid()}/nothing-here")}
    for name, text in texts.items():
        write_hook(settings, f"{name}.yaml", text)
    grant(vault_server, *texts.values())
    async with client_for(settings) as client:
        for name in texts:
            await client.register_local(name)
            r = await hooks.post(f"/hooks/{name}", content=b"{}", headers={"X-Signature": sign("x" * 32, b"{}")})
            assert r.status_code == 503 and "try again later" in r.json()["error"]["message"], r.text
        reasons = [e.reason or "" for e in await client.audit_records() if e.action == "webhook.refused"]
    assert any("at least 16 characters" in r for r in reasons), reasons
    assert any("no secret at" in r for r in reasons), reasons


async def test_without_vault_the_api_refuses_every_delivery(settings: Settings, api: httpx.AsyncClient) -> None:
    write_hook(settings, "helpdesk.yaml", hook_workflow("helpdesk", "helpdesk", "hd/webhook"))
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        r = await api.post("/hooks/helpdesk", content=b"{}", headers={"X-Signature": sign("x" * 32, b"{}")})
        assert r.status_code == 503
        reasons = [e.reason or "" for e in await client.audit_records() if e.action == "webhook.refused"]
    assert any("VAULT_ADDR is not set" in r for r in reasons)


async def test_a_flood_of_refusals_writes_a_bounded_number_of_audit_entries(
        settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    vault_path, _ = new_secret(vault_server)
    text = hook_workflow("helpdesk", "helpdesk", vault_path)
    write_hook(settings, "helpdesk.yaml", text)
    grant(vault_server, text)
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        wrong = {"X-Signature": sign("guess-" + "0" * 26, b"{}")}
        answers = await asyncio.gather(*(hooks.post("/hooks/helpdesk", content=b"{}", headers=wrong)
                                         for _ in range(BURST + 15)))
        assert {a.status_code for a in answers} == {401}
        unknown = await asyncio.gather(*(hooks.post(f"/hooks/scan-{i}", content=b"{}") for i in range(BURST + 5)))
        assert {a.status_code for a in unknown} == {404}
        entries = [e for e in await client.audit_records() if e.action == "webhook.refused"]
    assert sum(e.actor == "webhook:helpdesk" for e in entries) == BURST
    assert sum(e.actor == "webhook:?" for e in entries) == BURST


async def test_the_cache_reads_vault_once_per_secret_and_remembers_failures() -> None:
    defn = load_text(hook_workflow("helpdesk", "helpdesk", "hd/webhook"), "helpdesk.yaml")
    target = WebhookTarget("helpdesk", "helpdesk", defn.def_hash, defn, "hook")

    class Provider:
        def __init__(self) -> None:
            self.reads = 0
            self.answer: dict[str, Any] | Exception = {"secret": "s" * 32}

        async def fetch(self, d: Any, names: list[str]) -> dict[str, dict[str, Any]]:
            self.reads += 1
            await asyncio.sleep(0.05)
            if isinstance(self.answer, Exception):
                raise self.answer
            return {names[0]: self.answer}

        async def aclose(self) -> None:
            return None

    def expire() -> None:
        for key, (_, value) in list(cache.entries.items()):
            cache.entries[key] = (0.0, value)

    provider = Provider()
    cache = _Secrets(provider)  # type: ignore[arg-type]
    got = await asyncio.gather(*(cache.get(target) for _ in range(50)))
    assert set(got) == {b"s" * 32} and provider.reads == 1
    [(expires, _)] = cache.entries.values()
    assert client_hooks.SECRET_TTL - 1 < expires - time.monotonic() <= client_hooks.SECRET_TTL
    expire()
    provider.answer = StepFailed("waiting for credentials: Vault unreachable at http://127.0.0.1:1", retryable=True)
    results = await asyncio.gather(*(cache.get(target) for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, WebhookSecretUnavailable) for r in results) and provider.reads == 2
    [(expires, _)] = cache.entries.values()
    assert client_hooks.FAILURE_TTL - 1 < expires - time.monotonic() <= client_hooks.FAILURE_TTL
    with pytest.raises(WebhookSecretUnavailable, match="Vault unreachable"):
        await cache.get(target)
    assert provider.reads == 2  # the failure is remembered: Vault is not asked again yet
    expire()
    provider.answer = {"secret": "rotated-" + "r" * 24}
    assert await cache.get(target) == b"rotated-" + b"r" * 24 and provider.reads == 3
    expire()
    provider.answer = {"api_key": "k" * 32}  # the credential holds no `secret` key
    with pytest.raises(WebhookSecretUnavailable, match="holds no `secret` key"):
        await cache.get(target)


async def test_the_secret_appears_nowhere(settings: Settings, vault_server: Any, hooks: httpx.AsyncClient,
                                          hook_server: ApiServer) -> None:
    vault_path, secret = new_secret(vault_server, value=f"canary-webhook-{uid()}-{uid()}")
    text = hook_workflow("helpdesk", "helpdesk", vault_path)
    write_hook(settings, "helpdesk.yaml", text)
    grant(vault_server, text)
    body = orjson.dumps({"ticket_id": "T-9"})
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        answers = [
            await hooks.post("/hooks/helpdesk", content=body, headers=signed(secret, body)),
            await hooks.post("/hooks/helpdesk", content=body, headers=signed(secret[:-1], body)),
            await hooks.post("/hooks/helpdesk", content=b"{bad", headers=signed(secret, b"{bad")),
            await hooks.post("/hooks/helpdesk", content=orjson.dumps({"nope": 1}),
                             headers=signed(secret, orjson.dumps({"nope": 1}))),
        ]
        assert [a.status_code for a in answers] == [202, 401, 400, 422]
        audit = orjson.dumps([dataclasses.asdict(e) for e in await client.audit_records()], default=str).decode()
    places = {
        "pg_dump": await asyncio.to_thread(dump_database, settings.database_url),
        "redis": await asyncio.to_thread(dump_redis, settings.redis_url, settings.redis_prefix),
        "API server log": hook_server.log(),
        "responses": "\n".join(a.text for a in answers),
        "audit": audit,
    }
    for where, found in places.items():
        assert leaks(secret, found) == [], where


async def test_hostile_paths_get_json_404s_and_the_server_stays_up(settings: Settings, vault_server: Any,
                                                                    hooks: httpx.AsyncClient) -> None:
    write_hook(settings, "helpdesk.yaml", hook_workflow("helpdesk", "helpdesk", "hd/webhook"))
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        paths = ["..%2F..%2Fetc%2Fpasswd", "%00", "helpdesk%00", "HELPDESK", "helpdesk%20", "h" * 4000,
                 "helpdesk'%20OR%201=1", "%E2%80%AEkcehpled"]
        answers = {p: await hooks.post(f"/hooks/{p}", content=b"{}") for p in paths}
        for p, r in answers.items():
            assert r.status_code == 404, (p[:50], r.status_code, r.text[:200])
            assert "message" in r.json()["error"]
        assert (await hooks.get("/readyz")).status_code == 200
        entries = [e for e in await client.audit_records() if e.action == "webhook.refused"]
    assert len(entries) == len(paths) - 1  # the encoded slashes make another route: the router's 404, no entry
    assert all(len(e.seen["path"]) <= 100 and "\x00" not in e.seen["path"] for e in entries)
