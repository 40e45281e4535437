"""`agentrt doctor`: check configuration and every dependency, and say exactly what is wrong.

Each check returns a `Check`: `ok`, `warn` (works, but not as production expects), `fail` (a required
piece is broken: the worker cannot do its job) or `skip` (not configured, and not required). Checks run
concurrently, each under its own timeout, so a dead service costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from worker.bus.streams import WORK_GROUP, Keys
from worker.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings
from worker.errors import ConfigError
from worker.store.migrate import migration_files, redact_dsn

Status = Literal["ok", "warn", "fail", "skip"]

TIMEOUT = 5.0  # per check: connect + queries


@dataclass(slots=True)
class Check:
    """The verdict on one dependency."""

    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)
    """Further findings, each a full sentence an operator can act on."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Machine-readable figures (versions, counts) for `--json`."""

    def worst(self, status: Status, line: str) -> None:
        """Record a finding and lower the status if it is worse than the current one."""
        self.details.append(line)
        if _RANK[status] > _RANK[self.status]:
            self.status = status


_RANK: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}


def _redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


# -- configuration -------------------------------------------------------------------------------
def check_config(settings: Settings, env: Mapping[str, str]) -> Check:
    c = Check("config", "ok", "configuration parsed")
    if "AGENTRT_DATABASE_URL" not in env:
        c.worst("warn", f"AGENTRT_DATABASE_URL is not set: using the default {DEFAULT_DATABASE_URL}.")
    if "AGENTRT_REDIS_URL" not in env:
        c.worst("warn", f"AGENTRT_REDIS_URL is not set: using the default {DEFAULT_REDIS_URL}.")
    wf = settings.workflows_dir
    if not wf.is_dir():
        c.worst("warn", f"workflows directory {wf} (AGENTRT_WORKFLOWS_DIR) does not exist here; a worker "
                        "started with this configuration would load no workflows.")
    if settings.lease_ttl < 5:
        c.worst("warn", f"AGENTRT_LEASE_TTL={settings.lease_ttl:g}s is short: a GC pause or a slow Postgres "
                        "commit can make a healthy worker lose its runs.")
    if settings.vault_token and (settings.vault_role_id or settings.vault_secret_id):
        c.worst("warn", "both VAULT_TOKEN and AGENTRT_VAULT_ROLE_ID/SECRET_ID are set; prefer AppRole in "
                        "production and leave VAULT_TOKEN unset.")
    if bool(settings.vault_role_id) != bool(settings.vault_secret_id):
        c.worst("fail", "AppRole needs both AGENTRT_VAULT_ROLE_ID and AGENTRT_VAULT_SECRET_ID; only one is set.")
    c.facts = {"workflows_dir": str(wf), "concurrency": settings.concurrency, "lease_ttl": settings.lease_ttl,
               "db_pool_size": settings.db_pool_size, "redis_prefix": settings.redis_prefix,
               "worker_id": settings.worker_id if "AGENTRT_WORKER_ID" in env else None}
    if c.details and c.status == "warn":
        c.summary = "configuration parsed, with warnings"
    elif c.status == "fail":
        c.summary = "configuration is incomplete"
    return c


# -- egress policy -------------------------------------------------------------------------------
def check_egress(settings: Settings) -> Check:
    """What workflow files may reach: addresses, hosts, environment variables, stdio tool servers."""
    from worker.egress.policy import EgressPolicy
    from worker.steps.providers import get_provider

    try:
        policy = EgressPolicy.from_settings(settings)
    except ConfigError as exc:
        return Check("egress", "fail", "the egress policy is invalid", [f"{exc}."])
    private = ", ".join(policy.http_allowed_hosts) or "none"
    hosts = ", ".join(policy.allowed_hosts.entries)
    own = [h for name in ("openai", "anthropic") for h in get_provider(name).key_hosts]
    key_hosts = [*(f"https://{h}" for h in own), *policy.env_hosts.entries]
    c = Check("egress", "ok", f"address guard on; {'only ' + hosts if hosts else 'any public host'}; workflow "
                              f"stdio tools {'allowed' if policy.workflow_stdio_tools else 'refused'}")
    c.details.append(f"Address guard on: loopback, private, link-local and metadata addresses are refused, except "
                     f"those in AGENTRT_HTTP_ALLOWED_HOSTS ({private}).")
    c.details.append(f"Workflows may reach only AGENTRT_EGRESS_ALLOWED_HOSTS: {hosts} (tools.yaml servers are "
                     "exempt)." if hosts else "Workflows may reach any public host (AGENTRT_EGRESS_ALLOWED_HOSTS "
                     "is unset).")
    c.details.append(f"Environment variables a workflow may name (AGENTRT_STEP_ENV_ALLOW): "
                     f"{', '.join(policy.env_allow) or 'none'}; a key read from one is sent only to "
                     f"{', '.join(key_hosts)} (the providers' own hosts and AGENTRT_STEP_ENV_HOSTS).")
    if policy.workflow_stdio_tools:
        c.worst("warn", "AGENTRT_WORKFLOW_STDIO_TOOLS is on: workflow files may start commands (stdio tool "
                        "servers) as the worker's user; whoever edits the workflows directory can run code here.")
    else:
        c.details.append("Workflow files may not declare stdio tool servers (AGENTRT_WORKFLOW_STDIO_TOOLS is off); "
                         "the operator's tools.yaml servers run, with a scrubbed environment.")
    c.facts = {"address_guard": True, "http_allowed_hosts": list(policy.http_allowed_hosts),
               "egress_allowed_hosts": list(policy.allowed_hosts.entries) or None,
               "step_env_allow": list(policy.env_allow), "step_env_key_hosts": key_hosts,
               "workflow_stdio_tools": policy.workflow_stdio_tools}
    return c


# -- Postgres ------------------------------------------------------------------------------------
async def check_postgres(settings: Settings) -> Check:
    where = redact_dsn(settings.database_url)
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=TIMEOUT)
    except asyncpg.InvalidPasswordError as exc:
        return Check("postgres", "fail", f"{where}: authentication failed",
                     [f"{exc}. Check the user and password in AGENTRT_DATABASE_URL."])
    except asyncpg.InvalidCatalogNameError as exc:
        return Check("postgres", "fail", f"{where}: database does not exist",
                     [f"{exc}. Create it (createdb) and run `agentrt migrate`."])
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Check("postgres", "fail", f"{where}: not reachable",
                     [f"{type(exc).__name__}: {exc}. Is Postgres running and AGENTRT_DATABASE_URL right?"])
    try:
        c = Check("postgres", "ok", f"{where}: reachable")
        version = await conn.fetchval("SHOW server_version")
        c.facts["server_version"] = version
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            c.worst("fail", "this server is a read-only replica: point AGENTRT_DATABASE_URL at the primary.")
        has_table = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        known = [name for name, _ in migration_files()]
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")] \
            if has_table else []
        pending = [n for n in known if n not in applied]
        unknown = [n for n in applied if n not in known]
        c.facts.update(migrations_applied=applied, migrations_pending=pending, migrations_unknown=unknown)
        if not has_table:
            c.worst("fail", "the schema is not installed (no schema_migrations table): run `agentrt migrate`.")
        elif pending:
            c.worst("fail", f"{len(pending)} migration(s) pending ({', '.join(pending)}): run `agentrt migrate`.")
        if unknown:
            c.worst("warn", f"the database has migration(s) this version does not know ({', '.join(unknown)}): "
                            "this binary is older than the schema; upgrade it.")
        conns = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM pg_stat_activity) AS used, "
            "current_setting('max_connections')::int AS max")
        c.facts.update(connections=conns["used"], max_connections=conns["max"])
        if conns["used"] > 0.8 * conns["max"]:
            c.worst("warn", f"{conns['used']} of max_connections={conns['max']} connections are in use; each "
                            f"worker opens up to AGENTRT_DB_POOL_SIZE={settings.db_pool_size}.")
        if has_table and not pending:
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE status IN ('pending', 'running', 'waiting', 'paused')) AS active,
                          count(*) AS total FROM runs""")
            workers = await conn.fetchval(
                """SELECT count(*) FROM workers WHERE stopped_at IS NULL
                   AND heartbeat_at > now() - make_interval(secs => lease_ttl)""")
            c.facts.update(runs_active=row["active"], runs_total=row["total"], workers_alive=workers)
            if workers == 0:
                c.worst("warn", "no live worker is heartbeating: runs will not progress until one starts.")
        c.summary = f"{where}: reachable, PostgreSQL {version}" + (
            f", schema up to date ({len(applied)} migrations)" if has_table and not pending else "")
        return c
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Check("postgres", "fail", f"{where}: query failed", [f"{type(exc).__name__}: {exc}"])
    finally:
        await conn.close(timeout=2)


# -- Redis ---------------------------------------------------------------------------------------
async def check_redis(settings: Settings) -> Check:
    where = _redact_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    client = aioredis.from_url(settings.redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        try:
            await client.ping()
        except RedisError as exc:
            reason = str(exc).rstrip(".")
            return Check("redis", "fail", f"{where}: not reachable",
                         [f"{type(exc).__name__}: {reason}. Is Redis running and AGENTRT_REDIS_URL right?"])
        c = Check("redis", "ok", f"{where}: reachable")
        try:
            info = await client.info()
        except ResponseError:  # INFO can be renamed away on managed Redis: not fatal
            info = {}
        version = info.get("redis_version", "?")
        c.facts["server_version"] = version
        if info.get("role") not in (None, "master"):
            c.worst("fail", f"this server's role is {info.get('role')!r}: point AGENTRT_REDIS_URL at the primary.")
        if info and not info.get("aof_enabled"):
            c.worst("warn", "append-only file is off (appendonly no): a Redis restart loses the work stream; "
                            "the reconciler re-derives it from Postgres, but turn AOF on in production.")
        policy = info.get("maxmemory_policy")
        if policy not in (None, "noeviction"):
            c.worst("warn", f"maxmemory-policy is {policy!r}: Redis may evict stream keys; use noeviction.")
        c.facts.update(aof_enabled=bool(info.get("aof_enabled")), maxmemory_policy=policy)
        try:
            groups = await client.xinfo_groups(keys.work)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise
            groups = None
        if groups is None:
            c.worst("warn", f"the work stream {keys.work} does not exist yet: no worker has started with "
                            f"AGENTRT_REDIS_PREFIX={settings.redis_prefix!r}.")
        else:
            group = next((g for g in groups if _text(g.get("name")) == WORK_GROUP), None)
            if group is None:
                c.worst("warn", f"the stream {keys.work} has no consumer group {WORK_GROUP!r}: a worker "
                                "recreates it on start.")
            else:
                pending, consumers, lag = group.get("pending", 0), group.get("consumers", 0), group.get("lag")
                c.facts.update(stream=keys.work, group=WORK_GROUP, pending=pending, consumers=consumers, lag=lag)
                c.details.append(f"stream {keys.work}: group {WORK_GROUP!r}, {consumers} consumer(s), "
                                 f"{pending} pending entr{'y' if pending == 1 else 'ies'}"
                                 + (f", lag {lag}" if lag is not None else ""))
        c.summary = f"{where}: reachable, Redis {version}"
        return c
    except (RedisError, OSError) as exc:
        return Check("redis", "fail", f"{where}: command failed", [f"{type(exc).__name__}: {exc}"])
    finally:
        await client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- Vault ---------------------------------------------------------------------------------------
_HEALTH = {200: "initialized, unsealed, active", 429: "unsealed standby", 472: "DR secondary",
           473: "performance standby", 501: "not initialized", 503: "sealed"}


async def check_vault(settings: Settings, env: Mapping[str, str]) -> Check:
    addr = settings.vault_addr
    has_creds = bool(settings.vault_token or settings.vault_role_id)
    if not addr:
        if has_creds:
            return Check("vault", "fail", "credentials are set but VAULT_ADDR is not",
                         ["Set VAULT_ADDR to the Vault/OpenBao API address (e.g. https://vault:8200)."])
        return Check("vault", "skip", "VAULT_ADDR is not set: steps that name `secrets:` will fail",
                     ["Set VAULT_ADDR and VAULT_TOKEN (or AGENTRT_VAULT_ROLE_ID/SECRET_ID) to use credentials."])
    verify: bool | str = env.get("VAULT_CACERT") or True
    if isinstance(verify, str) and not await asyncio.to_thread(os.path.isfile, verify):
        return Check("vault", "fail", f"{addr}: VAULT_CACERT={verify} is not a readable file")
    try:
        async with httpx.AsyncClient(base_url=addr, timeout=TIMEOUT, verify=verify) as http:
            resp = await http.get("/v1/sys/health", params={"standbyok": "true", "perfstandbyok": "true"})
            c = Check("vault", "ok", f"{addr}: reachable")
            state = _HEALTH.get(resp.status_code, f"HTTP {resp.status_code}")
            body = _json(resp)
            c.facts.update(health=state, version=body.get("version"), sealed=body.get("sealed"),
                           initialized=body.get("initialized"))
            if resp.status_code == 503 or body.get("sealed"):
                c.worst("fail", "Vault is sealed: unseal it (bao operator unseal) before workers can read secrets.")
            elif resp.status_code == 501:
                c.worst("fail", "Vault is not initialized: run `bao operator init` (the compose stack's "
                                "vault-init service does this).")
            elif resp.status_code not in _HEALTH:
                c.worst("fail", f"unexpected answer from /v1/sys/health: HTTP {resp.status_code}.")
            if c.status != "fail":
                await _check_vault_auth(http, settings, c)
            c.summary = f"{addr}: {state}" + (f", version {body['version']}" if body.get("version") else "")
            return c
    except httpx.HTTPError as exc:
        return Check("vault", "fail", f"{addr}: not reachable",
                     [f"{type(exc).__name__}: {exc or 'no answer'}. Is VAULT_ADDR right (scheme, host, port)?"
                      + (" For TLS, VAULT_CACERT must name the CA that signed Vault's certificate."
                         if addr.startswith("https") else "")])


async def _check_vault_auth(http: httpx.AsyncClient, settings: Settings, c: Check) -> None:
    if settings.vault_token:
        resp = await http.get("/v1/auth/token/lookup-self", headers={"X-Vault-Token": settings.vault_token})
        if resp.status_code == 200:
            data = _json(resp).get("data") or {}
            policies = data.get("policies") or []
            ttl = data.get("ttl") or 0
            c.facts.update(token_policies=policies, token_ttl=ttl, token_renewable=data.get("renewable"))
            c.details.append(f"VAULT_TOKEN is valid: policies {', '.join(policies) or '-'}, "
                             + ("no expiry" if not ttl else f"expires in {ttl}s"))
            if "root" in policies:
                c.worst("warn", "VAULT_TOKEN is a root token: give workers an AppRole with the policies from "
                                "`agentrt vault policies` instead.")
            elif ttl and ttl < 3600 and not data.get("renewable"):
                c.worst("warn", f"VAULT_TOKEN expires in {ttl}s and is not renewable.")
        else:
            c.worst("fail", f"VAULT_TOKEN was refused (HTTP {resp.status_code}): it is expired, revoked or "
                            "belongs to another Vault.")
    elif settings.vault_role_id:
        # Logging in would spend a use of the secret id (wrapped or num_uses-limited ones are single use).
        c.details.append("AppRole credentials are set (AGENTRT_VAULT_ROLE_ID/SECRET_ID); not tested, because "
                         "logging in would spend a use of the secret id.")
        c.facts["auth"] = "approle"
    else:
        c.worst("fail", "VAULT_ADDR is set but there are no credentials: set AGENTRT_VAULT_ROLE_ID and "
                        "AGENTRT_VAULT_SECRET_ID (or VAULT_TOKEN).")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- OpenTelemetry -------------------------------------------------------------------------------
def otlp_target(env: Mapping[str, str]) -> tuple[str, str, int] | None:
    """(endpoint, host, port) of the OTLP trace exporter from the standard variables, or None."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    default = 4317 if protocol == "grpc" else 4318
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return endpoint, parts.hostname or "", port


async def check_otlp(env: Mapping[str, str]) -> Check:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
        return Check("otlp", "skip", "tracing is disabled (OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none)")
    target = otlp_target(env)
    if target is None:
        return Check("otlp", "skip", "OTEL_EXPORTER_OTLP_ENDPOINT is not set: spans are not exported",
                     ["Set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://jaeger:4317) to see traces."])
    endpoint, host, port = target
    if not host or port <= 0:
        return Check("otlp", "fail", f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} is not a valid URL")
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        # Tracing is not required for runs to progress: a dead collector loses spans, not work.
        return Check("otlp", "warn", f"{endpoint}: TCP {host}:{port} not reachable ({reason})",
                     ["Spans are dropped until the collector is back; runs are not affected."])
    return Check("otlp", "ok", f"{endpoint}: TCP {host}:{port} reachable", facts={"host": host, "port": port})


# -- all of it ------------------------------------------------------------------------------------
async def run_checks(settings: Settings, env: Mapping[str, str] | None = None, *,
                     only: Iterable[str] | None = None) -> list[Check]:
    """The checks named in `only` (default: all), concurrently, in a fixed order:
    config, egress, postgres, redis, vault, otlp."""
    env = os.environ if env is None else env
    wanted = set(only) if only else {"config", "egress", "postgres", "redis", "vault", "otlp"}

    async def guarded(name: str, make: Callable[[], Awaitable[Check]]) -> Check:
        try:
            return await asyncio.wait_for(make(), TIMEOUT * 3)
        except TimeoutError:
            return Check(name, "fail", f"no answer within {TIMEOUT * 3:g}s")
        except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
            return Check(name, "fail", f"check crashed: {type(exc).__name__}: {exc}")

    makers: dict[str, Callable[[], Awaitable[Check]]] = {
        "postgres": lambda: check_postgres(settings),
        "redis": lambda: check_redis(settings),
        "vault": lambda: check_vault(settings, env),
        "otlp": lambda: check_otlp(env),
    }
    names = [n for n in makers if n in wanted]
    results = await asyncio.gather(*(guarded(n, makers[n]) for n in names))
    local = [check_config(settings, env)] if "config" in wanted else []
    local += [check_egress(settings)] if "egress" in wanted else []
    return local + list(results)
