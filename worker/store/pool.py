"""The asyncpg pool, with JSON codecs (orjson) installed on every connection.

Behind a transaction-mode pooler (AGENTRT_DATABASE_POOLER=transaction, PgBouncer pool_mode=transaction) each
transaction, and each statement outside one, may run on a different server connection, so connections are
opened without what a pooled server connection cannot keep for us:
- no named prepared statements (`statement_cache_size=0`, PgBouncer 1.18, Debian 12's, has no prepared-statement
  support): asyncpg describes each query as an unnamed statement, then sends the Parse again with its Bind and
  Execute, so no round trip relies on the server connection of the one before (one more round trip per query);
- no server settings in the startup packet: PgBouncer refuses a startup parameter it does not track
  ("unsupported startup parameter"). `idle_in_transaction_session_timeout` (a frozen worker must not hold row
  locks for ever) is then the pooler's job: PgBouncer's `idle_transaction_timeout`, or
  `ALTER ROLE ... SET idle_in_transaction_session_timeout` on the database side (`agentrt doctor` reminds of it
  when the role has none). Tuning settings such as telemetry's `synchronous_commit=off` are dropped: spans then commit
  durably, which costs a little throughput and nothing else.
The engine itself keeps no session state on pooled connections (no LISTEN, no SET, no session advisory locks,
no temporary tables); migrations take a transaction-scoped lock (store/migrate.py), and the liveness lock, the
one session-level lock, needs a direct connection (engine/liveness.py).
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import orjson

from worker.config import database_pooler
from worker.errors import StoreError
from worker.store.migrate import redact_dsn

# errors that mean "Postgres is unreachable or restarting": retry later, never crash the worker
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.PostgresConnectionError,
)


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
"""A JSON `\\u0000` escape that is not itself the escaped text of a backslash followed by "u0000"."""


def dumps(value: Any) -> str:
    """JSON for a jsonb column. Postgres cannot store U+0000 in jsonb (or text): a NUL that a step returned
    (a binary HTTP body, a C string) is stored as U+FFFD, so the output is kept instead of the commit
    failing on every attempt."""
    return jsonb_text(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def jsonb_text(raw: bytes) -> str:
    """Serialized JSON made fit for a jsonb column (U+0000 stored as U+FFFD, as `dumps` does)."""
    text = raw.decode()
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=dumps, decoder=orjson.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Connections carry no session state (no LISTEN, no session locks held across uses, no SET):
    skipping asyncpg's default reset saves a round trip every time a connection is returned."""


SESSION_SETTINGS: dict[str, str] = {
    # a frozen process (SIGSTOP, a debugger) must not hold row locks for ever
    "idle_in_transaction_session_timeout": "60000",
}


def connect_options(pooler: str | None = None, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """asyncpg.connect / create_pool keyword arguments for the pooler mode (None: AGENTRT_DATABASE_POOLER).

    `settings`: more server settings for the sessions; sent only when no transaction pooler sits in between."""
    mode = database_pooler() if pooler is None else pooler
    if mode == "transaction":
        return {"statement_cache_size": 0, "server_settings": {}}
    return {"server_settings": {**SESSION_SETTINGS, **(settings or {})}}


def connect_error(dsn: str, exc: BaseException) -> StoreError:
    """The StoreError for a failed connect; PgBouncer's refusal of our startup settings names the fix."""
    hint = (" (a transaction-mode pooler such as PgBouncer in between? set AGENTRT_DATABASE_POOLER=transaction)"
            if "unsupported startup parameter" in str(exc) else "")
    return StoreError(f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}{hint}")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 8,
                      settings: dict[str, str] | None = None, pooler: str | None = None) -> asyncpg.Pool:
    """Open a pool; a clear StoreError when Postgres cannot be reached. `settings`: more server settings for its
    sessions (left out behind a transaction pooler, see above). `pooler`: None reads AGENTRT_DATABASE_POOLER, so
    every pool of the process (worker, CLI, console, telemetry) follows the operator's setting."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_no_reset, timeout=10,
            command_timeout=60, max_inactive_connection_lifetime=120, **connect_options(pooler, settings),
        )
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        raise connect_error(dsn, exc) from exc
    assert pool is not None
    return pool
