"""The asyncpg pool, with JSON codecs (orjson) installed on every connection."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import orjson

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


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 8,
                      settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """Open a pool; a clear StoreError when Postgres cannot be reached. `settings`: more server settings for its
    sessions."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_no_reset, timeout=10,
            command_timeout=60, max_inactive_connection_lifetime=120,
            # a frozen process (SIGSTOP, a debugger) must not hold row locks for ever
            server_settings={"idle_in_transaction_session_timeout": "60000", **(settings or {})},
        )
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to Postgres at {redact_dsn(dsn)}: {exc}") from exc
    assert pool is not None
    return pool
