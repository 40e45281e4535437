"""Webhooks over real HTTP: `POST /hooks/<path>` against a real `agentrt serve` logged in to a real OpenBao
(AppRole, the agentrt-worker policy), real Postgres and Redis, and a real worker where runs must finish."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.api_server import ApiServer, stop_api
from tests.support.runtime import client_for, eventually, running_worker
from tests.support.vault_support import uid
from tests.support.webhook_support import grant, hook_workflow, new_secret, sign, signed, start_hook_api, write_hook
from worker.client import RuntimeClient
from worker.config import Settings


@pytest.fixture
def hook_server(settings: Settings, vault_server: Any, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_hook_api(settings, vault_server, tmp_path / "api.log")
    yield server
    stop_api(server)


@pytest.fixture
async def hooks(hook_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hook_server.url, timeout=20.0) as client:
        yield client


@dataclasses.dataclass
class Hook:
    name: str
    path: str
    secret: str
    text: str


def make_hook(settings: Settings, vault: Any, name: str = "helpdesk", path: str = "helpdesk", **kw: Any) -> Hook:
    vault_path, secret = new_secret(vault)
    text = hook_workflow(name, path, vault_path, **kw)
    write_hook(settings, f"{name}.yaml", text)
    grant(vault, text)
    return Hook(name, path, secret, text)


async def runs_of(client: RuntimeClient, workflow: str) -> list[Any]:
    return await client.list_runs(workflow=workflow)


async def refusals(client: RuntimeClient) -> list[Any]:
    return [r for r in await client.audit_records() if r.action == "webhook.refused"]


async def test_a_signed_delivery_starts_a_run_with_the_body_as_its_inputs(
        settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    hook = make_hook(settings, vault_server)
    body = orjson.dumps({"ticket_id": "T-42"})
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: _receives(client, hook.path), 20, what="the workflow is loaded")
        r = await hooks.post(f"/hooks/{hook.path}", content=body, headers=signed(hook.secret, body))
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["workflow"] == "helpdesk" and answer["created"] is True
        summary = await client.wait_for_run(answer["run_id"], timeout=30)
        detail = await client.get_run(answer["run_id"])
    assert summary.status.value == "completed", summary.error
    assert detail.inputs == {"ticket_id": "T-42"}
    assert detail.steps[0].output == {"got": {"ticket_id": "T-42"}}
    created = detail.events[0].data
    assert created["requested_by"] == "webhook:helpdesk"
    assert created["trigger"] == {"kind": "webhook", "path": "helpdesk"}


async def _receives(client: RuntimeClient, path: str, workflow: str | None = None) -> bool:
    target = await client.webhook_target(path)
    return target is not None and (workflow is None or target.workflow == workflow)


async def test_unsigned_malformed_and_wrong_signatures_are_refused_audited_and_start_nothing(
        settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    hook = make_hook(settings, vault_server)
    body = orjson.dumps({"ticket_id": "T-1"})
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        good = sign(hook.secret, body)
        cases = {
            "missing": {"Content-Type": "application/json"},
            "empty": {"X-Signature": ""},
            "no algorithm": {"X-Signature": good.removeprefix("sha256=")},
            "another algorithm": {"X-Signature": "sha1=" + good.removeprefix("sha256=")[:40]},
            "not hex": {"X-Signature": "sha256=" + "z" * 64},
            "too short": {"X-Signature": good[:-2]},
            "another secret": {"X-Signature": sign("not-the-secret-at-all", body)},
            "another body": {"X-Signature": sign(hook.secret, body + b" ")},
            "the API token way": {"Authorization": "Bearer agentrt_" + "x" * 43},
        }
        answers = {what: await hooks.post("/hooks/helpdesk", content=body, headers=h) for what, h in cases.items()}
        for what, r in answers.items():
            assert r.status_code == 401, (what, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized", what
        assert "missing signature" in answers["missing"].json()["error"]["message"]
        assert "malformed signature" in answers["not hex"].json()["error"]["message"]
        assert "wrong signature" in answers["another body"].json()["error"]["message"]
        assert await runs_of(client, "helpdesk") == []
        entries = await refusals(client)
    assert len(entries) == len(cases)
    assert {e.actor for e in entries} == {"webhook:helpdesk"}
    assert {e.workflow for e in entries} == {"helpdesk"}
    assert all(e.outcome == "denied" and e.origin == "webhook 127.0.0.1" for e in entries)
    assert sum("wrong signature" in (e.reason or "") for e in entries) == 2
    everything = json.dumps([dataclasses.asdict(e) for e in entries], default=str)
    assert hook.secret not in everything and "T-1" not in everything  # neither the secret nor the body
    # and the right signature still works (uppercase hex too)
    ok = await hooks.post("/hooks/helpdesk", content=body,
                          headers={"X-Signature": "sha256=" + good.removeprefix("sha256=").upper()})
    assert ok.status_code == 202, ok.text


async def test_an_unknown_path_is_a_404_and_audited(settings: Settings, vault_server: Any,
                                                    hooks: httpx.AsyncClient) -> None:
    make_hook(settings, vault_server)
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        r = await hooks.post("/hooks/no-such-hook", content=b"{}", headers={"X-Signature": "sha256=" + "0" * 64})
        assert r.status_code == 404 and r.json()["error"]["message"] == "no webhook at /hooks/no-such-hook"
        wrong_method = await hooks.get("/hooks/helpdesk")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        entries = await refusals(client)
    assert [(e.actor, e.seen["path"]) for e in entries] == [("webhook:?", "no-such-hook")]


async def test_an_oversized_body_is_a_413_before_anything_else(settings: Settings, vault_server: Any,
                                                               hooks: httpx.AsyncClient) -> None:
    hook = make_hook(settings, vault_server)
    body = orjson.dumps({"ticket_id": "x" * (1024 * 1024)})
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        r = await hooks.post("/hooks/helpdesk", content=body, headers=signed(hook.secret, body))
        assert r.status_code == 413 and "AGENTRT_API_MAX_BODY" in r.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(20):
                yield b" " * 65536

        chunked = await hooks.post("/hooks/helpdesk", content=chunks(), headers={"X-Signature": sign(hook.secret, b"")})
        assert chunked.status_code == 413
        assert await runs_of(client, "helpdesk") == []


async def test_bodies_that_are_not_json_objects(settings: Settings, vault_server: Any,
                                                hooks: httpx.AsyncClient) -> None:
    strict = make_hook(settings, vault_server)  # inputs: {ticket_id: string}
    loose = make_hook(settings, vault_server, name="inbox", path="inbox", inputs="")  # no inputs declared
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        await client.register_local("inbox")

        async def post(hook: Hook, body: bytes, content_type: str | None) -> httpx.Response:
            headers = {"X-Signature": sign(hook.secret, body)}
            if content_type is not None:
                headers["Content-Type"] = content_type
            return await hooks.post(f"/hooks/{hook.path}", content=body, headers=headers)

        async def inputs_of(r: httpx.Response) -> Any:
            assert r.status_code == 202, r.text
            return (await client.get_run(r.json()["run_id"])).inputs

        assert await inputs_of(await post(loose, b"hello there", "text/plain")) == {"body": "hello there"}
        assert await inputs_of(await post(loose, b"a=1&b=2", "application/x-www-form-urlencoded")) == {
            "body": "a=1&b=2"}
        assert await inputs_of(await post(loose, b"[1, 2]", "application/json")) == {"body": [1, 2]}
        assert await inputs_of(await post(loose, b'"just text"', None)) == {"body": "just text"}
        assert await inputs_of(await post(loose, b"", None)) == {}
        assert await inputs_of(await post(loose, b'{"any": {"thing": 1}}', "application/vnd.x+json")) == {
            "any": {"thing": 1}}
        malformed = await post(loose, b"{not json", "application/json")
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
        binary = await post(loose, b"\xff\xfe\x00\x01", "application/octet-stream")
        assert binary.status_code == 415
        unfit = await post(strict, b'{"ticket": 5}', "application/json")
        assert unfit.status_code == 422 and "unknown input" in unfit.json()["error"]["message"]
        text_for_strict = await post(strict, b"T-1", "text/plain")
        assert text_for_strict.status_code == 422
        assert await runs_of(client, "helpdesk") == []
        assert len(await runs_of(client, "inbox")) == 6
        reasons = [e.reason for e in await refusals(client)]
    assert len(reasons) == 4 and any("not valid JSON" in (r or "") for r in reasons)


async def test_two_workflows_never_share_a_path(settings: Settings, vault_server: Any, hooks: httpx.AsyncClient,
                                                tmp_path: Path) -> None:
    first = make_hook(settings, vault_server, name="a-helpdesk")
    make_hook(settings, vault_server, name="b-helpdesk")  # the same path, in a later file
    async with client_for(settings) as client:
        await client.register_local("a-helpdesk")
        files = {Path(w.path).name: w for w in await client.list_workflows()}
        assert files["a-helpdesk.yaml"].status == "active"
        assert files["b-helpdesk.yaml"].status == "invalid"
        assert "webhook path 'helpdesk' is already used by workflow 'a-helpdesk'" in (
            files["b-helpdesk.yaml"].error or "")
        body = orjson.dumps({"ticket_id": "T-2"})
        r = await hooks.post("/hooks/helpdesk", content=body, headers=signed(first.secret, body))
        assert r.status_code == 202 and r.json()["workflow"] == "a-helpdesk"
        # a worker with another directory registers a third claim: the path then starts nothing at all
        other = tmp_path / "other-workflows"
        other.mkdir()
        vault_path, _ = new_secret(vault_server)
        (other / "c.yaml").write_text(hook_workflow("c-helpdesk", "helpdesk", vault_path))
        async with client_for(dataclasses.replace(settings, workflows_dir=other)) as elsewhere:
            assert await elsewhere.register_local("c-helpdesk")
        clash = await hooks.post("/hooks/helpdesk", content=body, headers=signed(first.secret, body))
        assert clash.status_code == 409, clash.text
        assert "claimed by several active workflows (a-helpdesk, c-helpdesk)" in clash.json()["error"]["message"]
        assert len(await runs_of(client, "a-helpdesk")) == 1 and await runs_of(client, "c-helpdesk") == []
        clashes = [e for e in await refusals(client) if "claimed by several" in (e.reason or "")]
        assert [e.actor for e in clashes] == ["webhook:helpdesk"]


async def test_hot_reload_moves_the_path(settings: Settings, vault_server: Any, hooks: httpx.AsyncClient) -> None:
    hook = make_hook(settings, vault_server)
    body = orjson.dumps({"ticket_id": "T-3"})
    async with running_worker(settings), client_for(settings) as client:
        await eventually(lambda: _receives(client, "helpdesk"), 20, what="the workflow is loaded")
        assert (await hooks.post("/hooks/helpdesk", content=body, headers=signed(hook.secret, body))).status_code == 202
        write_hook(settings, "helpdesk.yaml", hook.text.replace("path: helpdesk,", "path: helpdesk-v2,"))
        await eventually(lambda: _receives(client, "helpdesk-v2"), 20, what="the edit is loaded")
        old = await hooks.post("/hooks/helpdesk", content=body, headers=signed(hook.secret, body))
        new = await hooks.post("/hooks/helpdesk-v2", content=body, headers=signed(hook.secret, body))
    assert old.status_code == 404
    assert new.status_code == 202, new.text


async def test_a_delivery_id_starts_one_run_however_often_it_is_sent(settings: Settings, vault_server: Any,
                                                                      hooks: httpx.AsyncClient) -> None:
    hook = make_hook(settings, vault_server)
    body = orjson.dumps({"ticket_id": "T-4"})
    async with client_for(settings) as client:
        await client.register_local("helpdesk")
        key = f"delivery-{uid()}"
        answers = await asyncio.gather(*(
            hooks.post("/hooks/helpdesk", content=body, headers=signed(hook.secret, body, X_Delivery_Id=key))
            for _ in range(20)))
        assert sorted(a.status_code for a in answers) == [200] * 19 + [202], [a.text for a in answers]
        assert len({a.json()["run_id"] for a in answers}) == 1
        assert sum(a.json()["created"] for a in answers) == 1
        again = await hooks.post("/hooks/helpdesk", content=body,
                                 headers=signed(hook.secret, body, Idempotency_Key=key))
        assert again.status_code == 200 and again.json()["run_id"] == answers[0].json()["run_id"]
        other = orjson.dumps({"ticket_id": "T-5"})
        clash = await hooks.post("/hooks/helpdesk", content=other,
                                 headers=signed(hook.secret, other, X_Delivery_Id=key))
        assert clash.status_code == 409 and "used for another request" in clash.json()["error"]["message"]
        bad_key = await hooks.post("/hooks/helpdesk", content=body,
                                   headers=signed(hook.secret, body, X_Delivery_Id="k" * 300))
        assert bad_key.status_code == 422
        runs = await runs_of(client, "helpdesk")
        created = (await client.get_run(runs[0].run_id)).events[0].data
    assert len(runs) == 1
    assert created["trigger"] == {"kind": "webhook", "path": "helpdesk", "delivery_id": key}
