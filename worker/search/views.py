"""Saved views: named RunFilters in `run_views` (migration 0013)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from worker.errors import NotFound, WorkerError
from worker.search.filters import RunFilter

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True, slots=True)
class SavedView:
    name: str
    filters: RunFilter
    created_by: str
    updated_at: datetime


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise WorkerError(f"a view name is lowercase letters, digits, '.', '_' or '-' (at most 63), not {name!r}")
    return name


def _view(row: asyncpg.Record) -> SavedView:
    return SavedView(row["name"], RunFilter.from_dict(dict(row["filters"])), row["created_by"], row["updated_at"])


async def save(pool: asyncpg.Pool, name: str, filters: RunFilter, by: str) -> SavedView:
    """Create or replace a view."""
    row = await pool.fetchrow(
        """INSERT INTO run_views (name, filters, created_by) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO UPDATE SET filters = EXCLUDED.filters, created_by = EXCLUDED.created_by,
                                           updated_at = now()
           RETURNING name, filters, created_by, updated_at""", check_name(name), filters.as_dict(), by)
    return _view(row)


async def get(pool: asyncpg.Pool, name: str) -> SavedView:
    row = await pool.fetchrow("SELECT name, filters, created_by, updated_at FROM run_views WHERE name = $1", name)
    if row is None:
        known = [r["name"] for r in await pool.fetch("SELECT name FROM run_views ORDER BY name LIMIT 20")]
        raise NotFound(f"no saved view {name!r}" + (f" (saved: {', '.join(known)})" if known else
                                                    " (none saved yet: agentrt runs ... --save-view NAME)"))
    return _view(row)


async def all_views(pool: asyncpg.Pool) -> list[SavedView]:
    rows = await pool.fetch("SELECT name, filters, created_by, updated_at FROM run_views ORDER BY name")
    return [_view(r) for r in rows]


async def delete(pool: asyncpg.Pool, name: str) -> None:
    if not await pool.fetchval("DELETE FROM run_views WHERE name = $1 RETURNING true", name):
        raise NotFound(f"no saved view {name!r}")
