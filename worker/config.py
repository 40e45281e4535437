"""Settings, built once from the environment and passed down."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from worker.errors import ConfigError


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc


def _list_env(env: os._Environ[str] | dict[str, str], name: str) -> tuple[str, ...] | None:
    """A comma-separated list; None when the variable is unset (an empty value is an empty list)."""
    raw = env.get(name)
    if raw is None:
        return None
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _bool_env(env: os._Environ[str] | dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _trust_settings(env: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """The trust-boundary settings from the environment (only variables that are set override defaults)."""
    out: dict[str, Any] = {}
    modules = _list_env(env, "AGENTRT_TASK_MODULES")
    if modules is not None:
        out["task_modules"] = modules
    isolation = env.get("AGENTRT_PYTHON_ISOLATION", "").strip().lower()
    if isolation:
        if isolation not in ("process", "inline"):
            raise ConfigError(f"AGENTRT_PYTHON_ISOLATION={isolation!r}: use 'process' (default) or 'inline'")
        out["python_isolation"] = isolation
    for name, key in (("AGENTRT_SANDBOX_MIN", "sandbox_min"), ("AGENTRT_SANDBOX_MAX", "sandbox_max"),
                      ("AGENTRT_SANDBOX_ASYNC_CALLS", "sandbox_async_calls"),
                      ("AGENTRT_SANDBOX_MEMORY_MB", "sandbox_memory_mb"),
                      ("AGENTRT_SANDBOX_CPU_SECONDS", "sandbox_cpu_seconds")):
        if env.get(name):
            out[key] = _int_env(name, 0)
    if env.get("AGENTRT_SANDBOX_USER"):
        out["sandbox_user"] = env["AGENTRT_SANDBOX_USER"].strip()
    for name, key in (("AGENTRT_SANDBOX_ENV_ALLOW", "sandbox_env_allow"),
                      ("AGENTRT_STEP_ENV_ALLOW", "step_env_allow"),
                      ("AGENTRT_STEP_ENV_HOSTS", "step_env_hosts"),
                      ("AGENTRT_EGRESS_ALLOWED_HOSTS", "egress_allowed_hosts")):
        values = _list_env(env, name)
        if values is not None:
            out[key] = tuple(v.lower() for v in values) if key.endswith("hosts") else values
    out["workflow_stdio_tools"] = _bool_env(env, "AGENTRT_WORKFLOW_STDIO_TOOLS", False)
    if env.get("AGENTRT_EXPRESSION_BUDGET_MS"):
        out["expression_budget_ms"] = _float_env("AGENTRT_EXPRESSION_BUDGET_MS", 50.0)
    return out


POOLER_MODES = ("none", "session", "transaction")
"""AGENTRT_DATABASE_POOLER values: what sits between the workers and Postgres (worker/store/pool.py)."""


def database_pooler(env: os._Environ[str] | dict[str, str] | None = None) -> str:
    """AGENTRT_DATABASE_POOLER, validated: "none" (default: Postgres itself, or a session-mode pooler, which
    behaves the same), "session", or "transaction" (PgBouncer pool_mode=transaction: no prepared statements, no
    startup settings, no session state; see README, Scaling out)."""
    raw = (os.environ if env is None else env).get("AGENTRT_DATABASE_POOLER", "").strip().lower() or "none"
    if raw not in POOLER_MODES:
        raise ConfigError(
            f"AGENTRT_DATABASE_POOLER={raw!r}: use 'none' (Postgres directly, the default), 'session' (a "
            "session-mode pooler) or 'transaction' (PgBouncer pool_mode=transaction); statement mode is not "
            "supported (the engine commits multi-statement transactions)")
    return raw


def check_failover_dsn(url: str, name: str) -> None:
    """A URL listing several hosts (failover: `postgresql://u@h1:5432,h2:5432/db`) must say which one to keep:
    asyncpg takes the first that answers, and after a failover that may be the old primary come back as a
    replica, where every commit fails. `target_session_attrs=read-write` (or `primary`) makes it skip those."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2]
    if "," not in hosts and not any("," in h for h in query.get("host", [])):
        return
    attrs = (query.get("target_session_attrs") or [os.environ.get("PGTARGETSESSIONATTRS", "")])[-1]
    if attrs not in ("read-write", "primary"):
        raise ConfigError(f"{name} lists several hosts but not target_session_attrs=read-write: add "
                          "?target_session_attrs=read-write so that connections go to the primary only")


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/agentrt"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration. Every field has an environment variable (see README, Configuration)."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    workflows_dir: Path = Path("workflows")
    redis_prefix: str = "agentrt"
    redis_cluster: bool = False  # AGENTRT_REDIS_CLUSTER: Redis is a Redis Cluster (worker/bus/connect.py)
    vault_addr: str | None = None
    vault_token: str | None = field(default=None, repr=False)  # never in a repr, a log line or a report
    vault_role_id: str | None = None
    vault_secret_id: str | None = field(default=None, repr=False)
    vault_approle_mount: str = "approle"
    vault_token_role: str | None = "agentrt-step"  # token role step tokens are created with
    vault_step_token_ttl: float = 120.0  # seconds a step token lives (reused for half of that)
    secret_cache_ttl: float = 30.0  # seconds a fetched secret stays in worker memory
    http_allowed_hosts: tuple[str, ...] = ()
    concurrency: int = 200
    lease_ttl: float = 15.0
    heartbeat_interval: float = 2.0
    reconcile_interval: float = 2.0
    redeliver_after: float = 30.0
    liveness: bool = True  # fast death detection (worker/engine/liveness.py); off behind a transaction pooler
    liveness_database_url: str | None = field(default=None, repr=False)  # its session connection; None: database_url
    database_read_url: str | None = field(default=None, repr=False)  # replica for listings (client/replica.py)
    database_pooler: str = "none"  # "none" | "session" | "transaction" (AGENTRT_DATABASE_POOLER; worker/store/pool.py)
    event_lookback: float = 3600.0  # an event this much older than a `wait` step still resumes it (raced ahead)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    db_pool_size: int = 8
    log_level: str = "INFO"
    policy_file: Path | None = None
    shutdown_grace: float = 10.0
    python_threads: int = 32
    encrypt_payloads: bool = False  # every workflow's payloads as Vault transit ciphertext
    transit_key: str = "agentrt-payloads"
    transit_mount: str = "transit"
    notify_file: Path | None = None  # the operator's notify.yaml; None: notify.yaml beside the workflows
    notify_vault_mount: str = "secret"  # KV v2 mount of the notification secrets (worker/notify)
    notify_vault_path: str = "agentrt/notify"  # their path prefix: read with the worker's own token only
    # ---- the trust boundary (README, "Trust model"): what a workflow file may reach ----
    task_modules: tuple[str, ...] | None = None  # modules/prefixes `python` steps may call; None: the workflows dir's
    python_isolation: str = "process"  # "process" (sandbox pool, the default) | "inline" (trusted single tenant)
    sandbox_min: int = 2  # sandbox processes kept warm
    sandbox_max: int = 32  # most sandbox processes at once (= most sync python steps running at once)
    sandbox_async_calls: int = 64  # most calls of async task functions one sandbox process serves at once
    sandbox_memory_mb: int = 1024  # RLIMIT_AS per sandbox process; 0: no limit
    sandbox_cpu_seconds: int = 0  # RLIMIT_CPU per sandbox process over its life; 0: no limit
    sandbox_user: str | None = None  # run sandboxes as this user (name or uid); needs root
    sandbox_env_allow: tuple[str, ...] = ()  # environment variables a sandbox inherits, by name
    step_env_allow: tuple[str, ...] = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AGENTRT_DEMO_MODEL_URL")
    step_env_hosts: tuple[str, ...] = ()  # hosts (besides the provider's own) an environment key may be sent to
    egress_allowed_hosts: tuple[str, ...] = ()  # if set, every outbound call a workflow causes must go to one of these
    workflow_stdio_tools: bool = False  # may workflow files declare stdio MCP servers (commands)? operator opt-in
    expression_budget_ms: float = 50.0  # CPU time one expression evaluation may take

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        hosts = tuple(h.strip().lower() for h in env.get("AGENTRT_HTTP_ALLOWED_HOSTS", "").split(",") if h.strip())
        for host in hosts:
            if "/" in host:
                try:
                    ipaddress.ip_network(host, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"AGENTRT_HTTP_ALLOWED_HOSTS: {host!r} is not a valid network") from exc
        settings = cls(
            database_url=env.get("AGENTRT_DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=env.get("AGENTRT_REDIS_URL", DEFAULT_REDIS_URL),
            workflows_dir=Path(env.get("AGENTRT_WORKFLOWS_DIR", "workflows")),
            redis_prefix=env.get("AGENTRT_REDIS_PREFIX", "agentrt"),
            redis_cluster=_bool_env(env, "AGENTRT_REDIS_CLUSTER", False),
            vault_addr=env.get("VAULT_ADDR") or None,
            vault_token=env.get("VAULT_TOKEN") or None,
            vault_role_id=env.get("AGENTRT_VAULT_ROLE_ID") or None,
            vault_secret_id=env.get("AGENTRT_VAULT_SECRET_ID") or None,
            vault_approle_mount=env.get("AGENTRT_VAULT_APPROLE_MOUNT") or "approle",
            vault_token_role=env.get("AGENTRT_VAULT_TOKEN_ROLE") or "agentrt-step",
            vault_step_token_ttl=_float_env("AGENTRT_VAULT_STEP_TOKEN_TTL", 120.0),
            secret_cache_ttl=_float_env("AGENTRT_SECRET_CACHE_TTL", 30.0),
            http_allowed_hosts=hosts,
            concurrency=_int_env("AGENTRT_CONCURRENCY", 200),
            lease_ttl=_float_env("AGENTRT_LEASE_TTL", 15.0),
            heartbeat_interval=_float_env("AGENTRT_HEARTBEAT_INTERVAL", 2.0),
            reconcile_interval=_float_env("AGENTRT_RECONCILE_INTERVAL", 2.0),
            redeliver_after=_float_env("AGENTRT_REDELIVER_AFTER", 30.0),
            liveness=env.get("AGENTRT_LIVENESS", "on").lower() not in ("0", "false", "no", "off"),
            liveness_database_url=env.get("AGENTRT_LIVENESS_DATABASE_URL") or None,
            database_read_url=env.get("AGENTRT_DATABASE_READ_URL") or None,
            database_pooler=database_pooler(env),
            event_lookback=_float_env("AGENTRT_EVENT_LOOKBACK", 3600.0),
            db_pool_size=_int_env("AGENTRT_DB_POOL_SIZE", 8),
            log_level=env.get("AGENTRT_LOG_LEVEL", "INFO").upper(),
            policy_file=Path(env["AGENTRT_POLICY_FILE"]) if env.get("AGENTRT_POLICY_FILE") else None,
            shutdown_grace=_float_env("AGENTRT_SHUTDOWN_GRACE", 10.0),
            python_threads=_int_env("AGENTRT_PYTHON_THREADS", 32),
            encrypt_payloads=env.get("AGENTRT_ENCRYPT_PAYLOADS", "").lower() in ("1", "true", "yes", "on"),
            transit_key=env.get("AGENTRT_TRANSIT_KEY") or "agentrt-payloads",
            transit_mount=env.get("AGENTRT_TRANSIT_MOUNT") or "transit",
            notify_file=Path(env["AGENTRT_NOTIFY_FILE"]) if env.get("AGENTRT_NOTIFY_FILE") else None,
            notify_vault_mount=(env.get("AGENTRT_NOTIFY_VAULT_MOUNT") or "secret").strip("/"),
            notify_vault_path=(env.get("AGENTRT_NOTIFY_VAULT_PATH") or "agentrt/notify").strip("/"),
        )
        settings = replace(settings, **_trust_settings(env))
        if env.get("AGENTRT_WORKER_ID"):
            settings = replace(settings, worker_id=env["AGENTRT_WORKER_ID"])
        if settings.heartbeat_interval * 2 > settings.lease_ttl:
            raise ConfigError(
                f"AGENTRT_LEASE_TTL ({settings.lease_ttl}s) must be at least twice "
                f"AGENTRT_HEARTBEAT_INTERVAL ({settings.heartbeat_interval}s)"
            )
        check_failover_dsn(settings.database_url, "AGENTRT_DATABASE_URL")
        if settings.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        return settings
