"""Workflows with Vault credentials, run by real workers against a real OpenBao, Postgres and Redis."""

from __future__ import annotations

import base64
import textwrap
import urllib.parse
from dataclasses import replace
from typing import Any

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, pending_task, running_worker, write_workflow
from tests.support.vault_support import (
    dump_database,
    dump_redis,
    leaks,
    make_approle,
    root_client,
    uid,
    write_secret,
)
from worker.client import RuntimeClient
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.secrets.policies import STEP_TOKEN_ROLE, WORKER_POLICY, apply_policies, policies_for

FUNCS = '''
import base64, hashlib, logging, urllib.parse

def report(key, ctx=None):
    return {"credentials": sorted(ctx.secrets), "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:8]}

def echo(key, ctx=None):
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    return {"raw": key, "b64": b64(key), "basic": "Basic " + b64("user:" + key),
            "url": "https://x/?k=" + urllib.parse.quote(key, safe=""), "plus": urllib.parse.quote_plus(key),
            "from_ctx": dict(ctx.secrets), "literal": "${{ secrets.c.token }}"}

def fail(key, ctx=None):
    logging.getLogger("user.code").warning("about to fail with %s", key)
    raise RuntimeError("bad key " + key + " " + base64.b64encode(key.encode()).decode() + " "
                       + urllib.parse.quote(key, safe=""))
'''


def setup_module_file(settings: Settings) -> str:
    module = f"vault_fns_{uid()}"  # unique: an in-process worker keeps imported modules
    (settings.workflows_dir / f"{module}.py").write_text(FUNCS)
    return module


def grant(vault: Any, settings: Settings, *files: str) -> None:
    apply_policies(root_client(vault), policies_for([load_file(settings.workflows_dir / f) for f in files]))


async def step_errors(client: RuntimeClient, run_id: str, step_id: str) -> list[str]:
    detail = await client.get_run(run_id)
    return [a.error or "" for s in detail.steps if s.step_id == step_id for a in s.attempts]


async def test_a_workflow_reads_its_secret_and_another_workflow_naming_its_path_is_denied(
        settings: Settings, vault_server: Any) -> None:
    tag = uid()
    module = setup_module_file(settings)
    secret = f"sk-{tag}-do-not-store"
    write_secret(vault_server, f"{tag}/stripe", {"api_key": secret})
    write_workflow(settings, "pay.yaml", f"""
        name: pay-{tag}
        credentials: {{stripe: {{path: {tag}/stripe}}}}
        steps:
          - id: charge
            uses: python
            secrets: [stripe]
            with: {{function: "{module}:report", args: {{key: "Bearer ${{{{ secrets.stripe.api_key }}}}"}}}}
        """)
    grant(vault_server, settings, "pay.yaml")
    write_workflow(settings, "snoop.yaml", f"""
        name: snoop-{tag}
        credentials: {{theirs: {{path: {tag}/stripe}}}}
        steps:
          - id: peek
            uses: python
            secrets: [theirs]
            retry: {{max_attempts: 3, initial_interval: 100ms}}
            with: {{function: "{module}:report", args: {{key: "${{{{ secrets.theirs.api_key }}}}"}}}}
        """)
    worker_settings = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token)
    async with running_worker(worker_settings), client_for(settings) as client:
        ok = await client.start_run(f"pay-{tag}")
        denied = await client.start_run(f"snoop-{tag}")
        assert (await client.wait_for_run(ok, timeout=30)).status.value == "completed"
        summary = await client.wait_for_run(denied, timeout=30)
        detail = await client.get_run(ok)
        errors = await step_errors(client, denied, "peek")
    assert detail.output["credentials"] == ["stripe"]
    assert detail.steps[0].inputs["args"]["key"] == "Bearer [secret:stripe.api_key]"  # stored: a placeholder
    assert summary.status.value == "failed"
    assert len(errors) == 1  # permission denied is final: no retry
    assert f"permission denied reading secret/data/{tag}/stripe with policy agentrt-wf-snoop-{tag}" in errors[0]


async def test_canary_never_reaches_postgres_redis_or_logs(settings: Settings, vault_server: Any,
                                                            worker_procs: Any, http_sink: HttpSink) -> None:
    tag = uid()
    canary = f"CANARY-{tag}/x+y=z&k?"
    b64 = base64.b64encode(canary.encode()).decode()
    module = setup_module_file(settings)
    write_secret(vault_server, f"{tag}/canary", {"token": canary})
    http_sink.script("/echo", [(200, {"X-Echo": f"Bearer {canary}"},
                                {"auth": f"Bearer {canary}", "b64": b64, "url": urllib.parse.quote(canary)})])
    http_sink.script("/reject", [(400, {}, f"invalid token {canary} ({b64})")])
    head = f"""
        credentials: {{c: {{path: {tag}/canary}}}}
        defaults: {{retry: {{max_attempts: 2, initial_interval: 100ms}}}}
        steps:
        """
    files = {
        "echo.yaml": f"""
            name: echo-{tag}{head}
              - id: echo
                uses: python
                secrets: [c]
                with: {{function: "{module}:echo", args: {{key: "${{{{ secrets.c.token }}}}"}}}}
              - id: after
                uses: set
                with: {{seen: "${{{{ steps.echo.output }}}}"}}
            """,
        "fail.yaml": f"""
            name: fail-{tag}{head}
              - id: boom
                uses: python
                secrets: [c]
                with: {{function: "{module}:fail", args: {{key: "${{{{ secrets.c.token }}}}"}}}}
            """,
        "http.yaml": f"""
            name: http-{tag}{head}
              - id: call
                uses: http
                secrets: [c]
                with:
                  method: POST
                  url: "{http_sink.url}/echo?k=${{{{ secrets.c.token }}}}"
                  headers: {{Authorization: "Bearer ${{{{ secrets.c.token }}}}"}}
                  json: {{token: "${{{{ secrets.c.token }}}}"}}
              - id: rejected
                uses: http
                secrets: [c]
                with:
                  url: "{http_sink.url}/reject"
                  headers: {{Authorization: "Basic ${{{{ secrets.c.token }}}}"}}
            """,
    }
    for name, text in files.items():
        write_workflow(settings, name, textwrap.dedent(text))
    grant(vault_server, settings, *files)
    worker = worker_procs.start(extra_env={"VAULT_ADDR": vault_server.addr, "VAULT_TOKEN": vault_server.root_token})
    async with client_for(settings) as client:
        runs = {name: await client.start_run(f"{name}-{tag}") for name in ("echo", "fail", "http")}
        results = {name: await client.wait_for_run(run_id, timeout=60) for name, run_id in runs.items()}
        echo = await client.get_run(runs["echo"])
        fail_errors = await step_errors(client, runs["fail"], "boom")
        http = await client.get_run(runs["http"])
    worker.stop()
    assert results["echo"].status.value == "completed", results["echo"].error
    assert results["fail"].status.value == "failed" and results["http"].status.value == "failed"
    # the secret did reach the callee and the step code...
    [sent] = [r for r in http_sink.requests if r.path == "/echo"]
    assert sent.headers["authorization"] == f"Bearer {canary}"
    out = echo.steps[0].output
    assert out["raw"] == "[redacted:c.token]" and out["from_ctx"] == {"c": {"token": "[redacted:c.token]"}}
    assert out["literal"] == "${{ secrets.c.token }}"  # data from a step is never rendered
    assert echo.steps[1].output["seen"]["literal"] == "${{ secrets.c.token }}"
    assert "[redacted:c.token]" in fail_errors[0]
    assert http.steps[0].status.value == "completed" and http.steps[1].status.value == "failed"
    # ...but it is nowhere at rest
    stores = {
        "postgres": dump_database(settings.database_url),
        "redis": dump_redis(settings.redis_url, settings.redis_prefix),
        "worker log": worker.log_text(),
    }
    assert "[redacted:c.token]" in stores["postgres"]
    for where, text in stores.items():
        assert leaks(canary, text) == [], f"the canary leaked into {where}"


def gated_workflow(tag: str, module: str, path: str) -> str:
    """first reads the secret, then a gate the test controls, then last reads it again (many retries)."""
    return f"""
        name: gated-{tag}
        credentials: {{c: {{path: {path}}}}}
        steps:
          - id: first
            uses: python
            secrets: [c]
            with: {{function: "{module}:report", args: {{key: "${{{{ secrets.c.token }}}}"}}}}
          - id: gate
            uses: approval
            with: {{prompt: "go on?"}}
          - id: last
            uses: python
            secrets: [c]
            retry: {{max_attempts: 60, initial_interval: 200ms, backoff: 1.5, max_interval: 1s}}
            with: {{function: "{module}:report", args: {{key: "${{{{ secrets.c.token }}}}"}}}}
        """


async def test_vault_down_mid_run_waits_and_the_run_finishes_when_it_returns(settings: Settings,
                                                                             own_services: Any) -> None:
    bao = own_services.openbao()
    tag = uid()
    module = setup_module_file(settings)
    path = f"{tag}/svc"
    write_workflow(settings, "gated.yaml", gated_workflow(tag, module, path))

    def seed() -> None:  # dev mode keeps nothing: after a restart, mount, write and grant again
        write_secret(bao, path, {"token": f"tok-{tag}"})
        grant(bao, settings, "gated.yaml")

    seed()
    worker_settings = replace(settings, vault_addr=bao.addr, vault_token=bao.root_token, secret_cache_ttl=0.0)
    async with running_worker(worker_settings), client_for(settings) as client:
        run_id = await client.start_run(f"gated-{tag}")
        task = await pending_task(client, run_id)
        bao.stop()
        await client.decide(task.task_id, approve=True, by="test")

        async def waiting() -> bool:
            return any("waiting for credentials: Vault unreachable at" in e
                       for e in await step_errors(client, run_id, "last"))

        await eventually(waiting, timeout=30, what="a retryable credentials failure")
        bao.start()
        bao.bootstrap()
        seed()
        summary = await client.wait_for_run(run_id, timeout=60)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    assert detail.output["credentials"] == ["c"]


async def test_worker_logs_in_again_when_its_approle_token_expires_mid_run(settings: Settings,
                                                                           vault_server: Any) -> None:
    tag = uid()
    module = setup_module_file(settings)
    path = f"{tag}/svc"
    write_secret(vault_server, path, {"token": f"tok-{tag}"})
    write_workflow(settings, "gated.yaml", gated_workflow(tag, module, path))
    grant(vault_server, settings, "gated.yaml")
    role_id, secret_id = make_approle(vault_server, f"w-{tag}", policies=[WORKER_POLICY], token_ttl="2s",
                                      token_max_ttl="2s")
    worker_settings = replace(settings, vault_addr=vault_server.addr, vault_role_id=role_id,
                              vault_secret_id=secret_id, vault_token_role=STEP_TOKEN_ROLE, secret_cache_ttl=0.0)
    async with running_worker(worker_settings) as service, client_for(settings) as client:
        run_id = await client.start_run(f"gated-{tag}")
        task = await pending_task(client, run_id)
        first_login = service.secrets.session._generation  # type: ignore[attr-defined]
        worker_token = service.secrets.session._token.value  # type: ignore[attr-defined]
        await eventually(lambda: _expired(vault_server, worker_token), timeout=10, what="token expiry")
        await client.decide(task.task_id, approve=True, by="test")
        summary = await client.wait_for_run(run_id, timeout=30)
        relogins = service.secrets.session._generation - first_login  # type: ignore[attr-defined]
    assert summary.status.value == "completed", summary.error
    assert relogins >= 1


async def _expired(vault: Any, token: str) -> bool:
    import hvac
    import hvac.exceptions

    try:
        hvac.Client(url=vault.addr, token=token, timeout=5).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return True
    return False
