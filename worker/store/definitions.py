"""Definition versions (by content hash) and the state of each workflow file."""

from __future__ import annotations

from typing import Any

import asyncpg

from worker.definitions.model import Definition
from worker.errors import DefinitionError


async def save_definition_txn(conn: asyncpg.Connection, defn: Definition, source: str) -> None:
    await conn.execute(
        """INSERT INTO definitions (def_hash, name, spec, source, source_path) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (def_hash) DO NOTHING""",
        defn.def_hash, defn.name, defn.to_json(), source, defn.source_path,
    )


async def record_loaded(pool: asyncpg.Pool, path: str, defn: Definition, source: str, kind: str) -> None:
    """A file loaded (or reloaded) successfully: it becomes the active version of its workflow."""
    async with pool.acquire() as conn, conn.transaction():
        await save_definition_txn(conn, defn, source)
        await conn.execute(
            """INSERT INTO workflow_files (path, name, def_hash, status, error, error_line, error_column, excerpt,
                                          updated_at)
               VALUES ($1, $2, $3, 'active', NULL, NULL, NULL, NULL, now())
               ON CONFLICT (path) DO UPDATE SET name = EXCLUDED.name, def_hash = EXCLUDED.def_hash,
                   status = 'active', error = NULL, error_line = NULL, error_column = NULL, excerpt = NULL,
                   updated_at = now()""",
            path, defn.name, defn.def_hash,
        )
        if kind != "unchanged":
            await conn.execute("INSERT INTO workflow_events (path, name, kind, def_hash) VALUES ($1, $2, $3, $4)",
                               path, defn.name, kind, defn.def_hash)


def _text(value: str | None) -> str | None:
    """Postgres text cannot hold NUL: a hostile file's excerpt must still be recordable."""
    return None if value is None else value.replace("\x00", "\\0")


async def record_invalid(pool: asyncpg.Pool, path: str, error: DefinitionError) -> None:
    """A file failed to load: keep its previous version active, record the error."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO workflow_files (path, status, error, error_line, error_column, excerpt, updated_at)
               VALUES ($1, 'invalid', $2, $3, $4, $5, now())
               ON CONFLICT (path) DO UPDATE SET status = 'invalid', error = EXCLUDED.error,
                   error_line = EXCLUDED.error_line, error_column = EXCLUDED.error_column,
                   excerpt = EXCLUDED.excerpt, updated_at = now()""",
            _text(path), _text(error.reason), error.line, error.column, _text(error.excerpt),
        )
        name = await conn.fetchval("SELECT name FROM workflow_files WHERE path = $1", _text(path))
        await conn.execute("INSERT INTO workflow_events (path, name, kind, error) VALUES ($1, $2, 'invalid', $3)",
                           _text(path), name, _text(str(error)))


async def clear_tools_error(pool: asyncpg.Pool, path: str) -> bool:
    """The shared tools file is valid again (or gone): drop the error row it had. True if there was one."""
    async with pool.acquire() as conn, conn.transaction():
        cleared = await conn.fetchval(
            "DELETE FROM workflow_files WHERE path = $1 AND name IS NULL AND status = 'invalid' RETURNING path", path)
        if cleared is not None:
            await conn.execute("INSERT INTO workflow_events (path, kind) VALUES ($1, 'loaded')", path)
    return cleared is not None


async def record_deleted(pool: asyncpg.Pool, path: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        name = await conn.fetchval(
            "UPDATE workflow_files SET status = 'deleted', updated_at = now() WHERE path = $1 RETURNING name", path)
        await conn.execute("INSERT INTO workflow_events (path, name, kind) VALUES ($1, $2, 'deleted')", path, name)


async def active_version(conn: asyncpg.Pool | asyncpg.Connection, name: str) -> tuple[str, dict[str, Any]] | None:
    """(def_hash, spec) of the version new runs of `name` use, or None (unknown or deleted)."""
    row = await conn.fetchrow(
        """SELECT d.def_hash, d.spec FROM workflow_files f JOIN definitions d ON d.def_hash = f.def_hash
           WHERE f.name = $1 AND f.status <> 'deleted' ORDER BY f.updated_at DESC LIMIT 1""", name)
    return None if row is None else (row["def_hash"], row["spec"])


async def load_spec(conn: asyncpg.Pool | asyncpg.Connection, def_hash: str) -> tuple[dict[str, Any], str | None] | None:
    row = await conn.fetchrow("SELECT spec, source_path FROM definitions WHERE def_hash = $1", def_hash)
    return None if row is None else (row["spec"], row["source_path"])


class DefinitionCache:
    """Pinned versions by hash, loaded from Postgres once per process."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, Definition] = {}

    def put(self, defn: Definition) -> None:
        self._cache[defn.def_hash] = defn

    async def get(self, def_hash: str) -> Definition:
        found = self._cache.get(def_hash)
        if found is not None:
            return found
        row = await load_spec(self._pool, def_hash)
        if row is None:
            raise DefinitionError(def_hash, "definition version not found in the database")
        defn = Definition.from_json(row[0], source_path=row[1])
        self._cache[def_hash] = defn
        return defn
