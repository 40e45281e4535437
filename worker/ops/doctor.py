"""`agentrt doctor`: check configuration and every dependency, and say exactly what is wrong.

Each check returns a `Check`: `ok`, `warn` (works, but not as production expects), `fail` (a required
piece is broken: the worker cannot do its job) or `skip` (not configured, and not required). Checks run
concurrently, each under its own timeout, so a dead service costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping

import asyncpg
from redis.exceptions import ResponseError

from worker.bus.connect import REDIS_ERRORS, redis_client, redis_keys
from worker.bus.streams import WORK_GROUP
from worker.bus.topology import cluster_hint, cluster_mismatch, node_of, server_infos
from worker.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings
from worker.errors import ConfigError
from worker.ops.check import TIMEOUT, Check, redact_url, text_of
from worker.ops.doctor_vault import check_otlp, check_vault
from worker.ops.read_replica import check_read_replica
from worker.store.migrate import migration_files, redact_dsn
from worker.store.pool import connect_options


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
        conn = await asyncpg.connect(settings.database_url, timeout=TIMEOUT,
                                     **connect_options(settings.database_pooler))
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
            # live runs by the status index (a few thousand at most); all runs as Postgres's estimate: an exact
            # count reads every row, seconds at 10M runs
            row = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM runs WHERE status IN ('pending', 'running', 'waiting', 'paused'))
                              AS active,
                          (SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'runs'::regclass)
                              AS total""")
            workers = await conn.fetchval(
                """SELECT count(*) FROM workers WHERE stopped_at IS NULL
                   AND heartbeat_at > now() - make_interval(secs => lease_ttl)""")
            c.facts.update(runs_active=row["active"], runs_total_estimate=row["total"], workers_alive=workers)
            if workers == 0:
                c.worst("warn", "no live worker is heartbeating: runs will not progress until one starts.")
            await _check_partitions(conn, c)
        await _check_pooler(conn, settings, c)
        await check_read_replica(settings, c, TIMEOUT)  # AGENTRT_DATABASE_READ_URL (worker/ops/read_replica.py)
        c.summary = f"{where}: reachable, PostgreSQL {version}" + (
            f", schema up to date ({len(applied)} migrations)" if has_table and not pending else "") + (
            ", through a transaction pooler" if settings.database_pooler == "transaction" else "")
        return c
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Check("postgres", "fail", f"{where}: query failed", [f"{type(exc).__name__}: {exc}"])
    finally:
        await conn.close(timeout=2)


async def _check_partitions(conn: asyncpg.Connection, c: Check) -> None:
    """How far ahead the daily partitions of history go (worker/history/): new runs cannot record history
    past the last one."""
    days = await conn.fetchval(
        """SELECT extract(epoch FROM max(hi) - now()) / 86400 FROM (
               SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''(.*)''\\)'))[1]::timestamptz AS hi
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'events'::regclass AND c.relkind = 'r') b""")
    if days is None:
        return
    c.facts["history_partitions_days_ahead"] = round(float(days), 1)
    if days < 2:
        c.worst("fail" if days <= 0 else "warn",
                f"the history's daily partitions end in {max(days, 0):.1f} day(s): workers create them a week "
                "ahead at start and hourly; start a worker or run `agentrt gc` (new runs cannot record history "
                "past the last one).")


async def _check_pooler(conn: asyncpg.Connection, settings: Settings, c: Check) -> None:
    """What AGENTRT_DATABASE_POOLER implies (README, Scaling out: PgBouncer)."""
    c.facts["pooler"] = settings.database_pooler
    if settings.database_pooler != "transaction":
        return
    c.worst("ok", "AGENTRT_DATABASE_POOLER=transaction: no prepared statements, no startup settings, "
                  "migrations under a transaction-scoped lock.")
    if settings.liveness and not settings.liveness_database_url:
        c.worst("warn", "fast death detection is off behind the transaction pooler: a dead worker's runs move only "
                        f"when their leases expire ({settings.lease_ttl:.0f}s). Set AGENTRT_LIVENESS_DATABASE_URL "
                        "to a direct Postgres URL (one connection per worker), or AGENTRT_LIVENESS=off.")
    timeout = await conn.fetchval("SELECT current_setting('idle_in_transaction_session_timeout')")
    c.facts["idle_in_transaction_session_timeout"] = timeout
    if timeout in ("0", "0ms"):
        c.worst("ok", "idle_in_transaction_session_timeout is off for this role: set PgBouncer's "
                      "idle_transaction_timeout (or ALTER ROLE ... SET idle_in_transaction_session_timeout = '60s') "
                      "so a frozen worker cannot hold row locks for ever.")


# -- Redis ---------------------------------------------------------------------------------------
async def check_redis(settings: Settings) -> Check:
    where = redact_url(settings.redis_url)
    keys = redis_keys(settings)
    try:
        client = redis_client(settings, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    except ConfigError as exc:
        return Check("redis", "fail", f"{where}: not usable", [str(exc)])
    try:
        try:
            await client.ping()
        except REDIS_ERRORS as exc:
            reason = str(exc).rstrip(".")
            return Check("redis", "fail", f"{where}: not reachable",
                         [f"{type(exc).__name__}: {reason}. Is Redis running and AGENTRT_REDIS_URL right?"
                          + cluster_hint(settings, exc)])
        c = Check("redis", "ok", f"{where}: reachable")
        try:
            infos = await server_infos(client)
        except ResponseError:  # INFO can be renamed away on managed Redis: not fatal
            infos = {}
        info = next(iter(infos.values()), {})
        version = info.get("redis_version", "?")
        c.facts["server_version"] = version
        mismatch = cluster_mismatch(settings, info)
        if mismatch:
            c.worst("fail", mismatch)
            return c
        if settings.redis_cluster:
            c.facts.update(cluster_primaries=sorted(infos), work_streams_node=node_of(client, keys.work))
            c.details.append(f"Redis Cluster: {len(infos)} primaries; the work streams are on "
                             f"{c.facts['work_streams_node']}")
        for node, node_info in infos.items():
            on = f"{node}: " if settings.redis_cluster else ""
            if node_info.get("role") not in (None, "master"):
                c.worst("fail", f"{on}this server's role is {node_info.get('role')!r}: point AGENTRT_REDIS_URL at "
                                "the primary.")
            if node_info and not node_info.get("aof_enabled"):
                c.worst("warn", f"{on}append-only file is off (appendonly no): a Redis restart loses the work "
                                "stream; the reconciler re-derives it from Postgres, but turn AOF on in production.")
            policy = node_info.get("maxmemory_policy")
            if policy not in (None, "noeviction"):
                c.worst("warn", f"{on}maxmemory-policy is {policy!r}: Redis may evict stream keys; use noeviction.")
        c.facts.update(aof_enabled=all(bool(i.get("aof_enabled")) for i in infos.values()) if infos else False,
                       maxmemory_policy=info.get("maxmemory_policy"))
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
            group = next((g for g in groups if text_of(g.get("name")) == WORK_GROUP), None)
            if group is None:
                c.worst("warn", f"the stream {keys.work} has no consumer group {WORK_GROUP!r}: a worker "
                                "recreates it on start.")
            else:
                pending, consumers, lag = group.get("pending", 0), group.get("consumers", 0), group.get("lag")
                c.facts.update(stream=keys.work, group=WORK_GROUP, pending=pending, consumers=consumers, lag=lag)
                c.details.append(f"stream {keys.work}: group {WORK_GROUP!r}, {consumers} consumer(s), "
                                 f"{pending} pending entr{'y' if pending == 1 else 'ies'}"
                                 + (f", lag {lag}" if lag is not None else ""))
        c.summary = f"{where}: reachable, Redis {version}" + (" (cluster)" if settings.redis_cluster else "")
        return c
    except REDIS_ERRORS as exc:
        return Check("redis", "fail", f"{where}: command failed",
                     [f"{type(exc).__name__}: {exc}." + cluster_hint(settings, exc)])
    finally:
        await client.aclose()


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
