"""`agentrt doctor` against real servers: healthy, and each dependency broken in turn."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.runtime import running_worker
from tests.support.services import REPO_ROOT, OwnServices, unique_name, worker_environment
from worker.config import Settings
from worker.devstack import EmbeddedOpenBao
from worker.devstack._process import free_port
from worker.history.partitions import list_partitions
from worker.ops.doctor import Check, check_postgres, run_checks
from worker.store.pool import create_pool


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@asynccontextmanager
async def otlp_listener() -> AsyncIterator[str]:
    """Something that accepts TCP on a free port, standing in for an OTLP collector."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def _worker_token(vault: EmbeddedOpenBao) -> str:
    """A non-root, renewable token, as a worker would hold after an AppRole login."""
    resp = httpx.post(f"{vault.addr}/v1/auth/token/create", headers={"X-Vault-Token": vault.root_token},
                      json={"policies": ["default"], "ttl": "2h", "renewable": True}, timeout=10)
    resp.raise_for_status()
    return str(resp.json()["auth"]["client_token"])


def _doctor_cli(settings: Settings, env: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run([sys.executable, "-m", "worker", "doctor", "--json"], cwd=REPO_ROOT,
                          env={**worker_environment(settings), **env}, capture_output=True, timeout=60, check=False)
    assert proc.stdout.strip(), f"doctor printed nothing (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    return proc.returncode, json.loads(proc.stdout)


async def test_healthy_stack_passes_and_reports_facts(settings: Settings, own_services: OwnServices,
                                                       vault_server: EmbeddedOpenBao) -> None:
    redis = own_services.redis(appendonly=True)
    settings = replace(settings, redis_url=redis.url(), vault_addr=vault_server.addr, lease_ttl=15.0,
                       vault_token=_worker_token(vault_server))
    # a worker creates the stream and group (it needs no Vault for that)
    async with running_worker(replace(settings, vault_addr=None, vault_token=None)), otlp_listener() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "AGENTRT_DATABASE_URL": settings.database_url,
               "AGENTRT_REDIS_URL": settings.redis_url}
        checks = _by_name(await run_checks(settings, env))
        code, report = await asyncio.to_thread(_doctor_cli, settings, {
            **env, "VAULT_ADDR": vault_server.addr, "VAULT_TOKEN": settings.vault_token or ""})
    assert {n: c.status for n, c in checks.items()} == {
        "config": "ok", "egress": "ok", "postgres": "ok", "redis": "ok", "vault": "ok", "otlp": "ok"}, \
        {n: c.details for n, c in checks.items()}
    pg = checks["postgres"]
    assert pg.facts["migrations_pending"] == [] and pg.facts["migrations_applied"]
    assert pg.facts["workers_alive"] == 1
    assert pg.facts["history_partitions_days_ahead"] >= 6  # a week of daily partitions (worker/history/)
    assert checks["redis"].facts["group"] == "workers" and checks["redis"].facts["aof_enabled"] is True
    assert "policies default" in checks["vault"].details[0]
    assert checks["vault"].facts["sealed"] is False
    assert code == 0 and report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["config", "egress", "postgres", "redis", "vault", "otlp"]


async def test_postgres_down_fails_with_exit_1(settings: Settings, own_services: OwnServices) -> None:
    pg = own_services.postgres()
    url = pg.url("postgres")
    await asyncio.to_thread(pg.stop)
    settings = replace(settings, database_url=url)
    check = _by_name(await run_checks(settings, {}))["postgres"]
    assert check.status == "fail" and "not reachable" in check.summary
    assert "AGENTRT_DATABASE_URL" in check.details[0]
    code, report = await asyncio.to_thread(_doctor_cli, settings, {})
    assert code == 1 and report["ok"] is False
    assert {c["name"]: c["status"] for c in report["checks"]}["postgres"] == "fail"


async def test_missing_and_pending_migrations_are_named(settings: Settings, pg, pg_template: str) -> None:  # type: ignore[no-untyped-def]
    empty = unique_name("t_empty")
    await asyncio.to_thread(pg.create_database, empty)
    try:
        check = _by_name(await run_checks(replace(settings, database_url=pg.url(empty)), {}))["postgres"]
        assert check.status == "fail"
        assert any("schema is not installed" in d and "agentrt migrate" in d for d in check.details)
    finally:
        await asyncio.to_thread(pg.drop_database, empty)
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        last = await conn.fetchval("SELECT max(name) FROM schema_migrations")
        await conn.execute("DELETE FROM schema_migrations WHERE name = $1", last)
    finally:
        await conn.close()
    check = _by_name(await run_checks(settings, {}))["postgres"]
    assert check.status == "fail" and check.facts["migrations_pending"] == [last]
    assert any(f"1 migration(s) pending ({last})" in d for d in check.details)


async def test_redis_down_and_without_aof(settings: Settings) -> None:
    down = _by_name(await run_checks(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"), {}))
    assert down["redis"].status == "fail" and "not reachable" in down["redis"].summary
    assert down["postgres"].status in ("ok", "warn")
    # the session Redis has no AOF and no worker has used this prefix yet: working, but warned
    up = _by_name(await run_checks(settings, {}))["redis"]
    assert up.status == "warn"
    assert any("append-only file is off" in d for d in up.details)
    assert any("does not exist yet" in d for d in up.details)


async def test_vault_unreachable_bad_token_and_sealed(settings: Settings, own_services: OwnServices) -> None:
    closed = replace(settings, vault_addr=f"http://127.0.0.1:{free_port()}", vault_token="x")
    check = _by_name(await run_checks(closed, {}))["vault"]
    assert check.status == "fail" and "not reachable" in check.summary

    vault = own_services.openbao()
    bad = _by_name(await run_checks(replace(settings, vault_addr=vault.addr, vault_token="s.nope"), {}))["vault"]
    assert bad.status == "fail" and any("VAULT_TOKEN was refused" in d for d in bad.details)

    no_creds = _by_name(await run_checks(replace(settings, vault_addr=vault.addr), {}))["vault"]
    assert no_creds.status == "fail" and any("no credentials" in d for d in no_creds.details)

    root = _by_name(await run_checks(replace(settings, vault_addr=vault.addr, vault_token=vault.root_token),
                                     {}))["vault"]
    assert root.status == "warn" and any("root token" in d for d in root.details)

    async with httpx.AsyncClient(timeout=10) as http:
        (await http.put(f"{vault.addr}/v1/sys/seal", headers={"X-Vault-Token": vault.root_token})).raise_for_status()
    sealed = _by_name(await run_checks(replace(settings, vault_addr=vault.addr, vault_token=vault.root_token),
                                       {}))["vault"]
    assert sealed.status == "fail" and any("Vault is sealed" in d for d in sealed.details)
    assert sealed.facts["sealed"] is True


async def test_vault_and_otlp_not_configured_are_skipped_but_otlp_down_only_warns(settings: Settings) -> None:
    checks = _by_name(await run_checks(settings, {}))
    assert checks["vault"].status == "skip" and "VAULT_ADDR is not set" in checks["vault"].summary
    assert checks["otlp"].status == "skip"
    port = free_port()
    otlp = _by_name(await run_checks(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}))["otlp"]
    assert otlp.status == "warn" and f"127.0.0.1:{port} not reachable" in otlp.summary
    disabled = _by_name(await run_checks(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1",
                                                    "OTEL_SDK_DISABLED": "true"}))["otlp"]
    assert disabled.status == "skip"
    half = _by_name(await run_checks(replace(settings, vault_role_id="r"), {}))["config"]
    assert half.status == "fail" and any("needs both" in d for d in half.details)


async def test_egress_policy_is_reported(settings: Settings) -> None:
    default = _by_name(await run_checks(replace(settings, http_allowed_hosts=()), {}, only=["egress"]))["egress"]
    assert default.status == "ok" and "any public host" in default.summary
    assert default.facts["egress_allowed_hosts"] is None and default.facts["workflow_stdio_tools"] is False
    assert default.facts["step_env_allow"] == ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTRT_DEMO_MODEL_URL"]
    assert default.facts["step_env_key_hosts"] == ["https://api.openai.com", "https://api.anthropic.com"]
    assert any("AGENTRT_HTTP_ALLOWED_HOSTS (none)" in d for d in default.details)

    narrowed = replace(settings, egress_allowed_hosts=("*.example.com", "10.0.0.0/8"),
                       step_env_hosts=("http://127.0.0.1:9/v1",), workflow_stdio_tools=True)
    env = {"AGENTRT_DATABASE_URL": settings.database_url, "AGENTRT_REDIS_URL": settings.redis_url}
    _, report = await asyncio.to_thread(_doctor_cli, narrowed, {
        **env, "AGENTRT_EGRESS_ALLOWED_HOSTS": "*.example.com,10.0.0.0/8",
        "AGENTRT_STEP_ENV_HOSTS": "http://127.0.0.1:9/v1", "AGENTRT_WORKFLOW_STDIO_TOOLS": "1"})
    egress = {c["name"]: c for c in report["checks"]}["egress"]
    assert egress["status"] == "warn" and "only *.example.com, 10.0.0.0/8" in egress["summary"]
    assert egress["facts"]["step_env_key_hosts"][-1] == "http://127.0.0.1:9/v1"
    assert any("AGENTRT_WORKFLOW_STDIO_TOOLS is on" in d for d in egress["details"])

    code, report = await asyncio.to_thread(_doctor_cli, settings, {**env, "AGENTRT_STEP_ENV_ALLOW": "VAULT_TOKEN"})
    egress = {c["name"]: c for c in report["checks"]}["egress"]
    assert code == 1 and egress["status"] == "fail"
    assert "AGENTRT_STEP_ENV_ALLOW names VAULT_TOKEN" in egress["details"][0]


async def test_history_partitions_about_to_run_out_are_a_finding(settings: Settings) -> None:
    """Workers keep a week of daily partitions ahead; with fewer than two days left doctor warns, with none, fails."""
    pool = await create_pool(settings.database_url)
    try:
        for part in await list_partitions(pool, "events"):
            if part.lo is not None and part.lo > datetime.now(tz=UTC) + timedelta(hours=6):
                await pool.execute(f'ALTER TABLE events DETACH PARTITION "{part.name}"')
    finally:
        await pool.close()
    pg = await check_postgres(settings)
    assert pg.facts["history_partitions_days_ahead"] < 2
    assert pg.status in ("warn", "fail")
    assert any("daily partitions end in" in d and "agentrt gc" in d for d in pg.details), pg.details

