"""What the schedule tests read from Postgres: fired ticks, the runs schedules started, the schedule rows."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg


def ticker(name: str, every: str = "1s", catch_up: str = "latest", extra_step: str = "") -> str:
    """A workflow that fires every `every` and echoes its tick (inputs `tick` and `at`); `extra_step` is the
    flow mapping of a second step."""
    more = f"\n          - {extra_step}" if extra_step else ""
    return f"""
        name: {name}
        inputs:
          tick: {{type: string}}
          at: {{type: integer}}
        on:
          schedule:
            every: {every}
            catch_up: {catch_up}
            inputs: {{tick: "${{{{ tick }}}}", at: "${{{{ tick_unix }}}}"}}
        steps:
          - {{id: echo, uses: set, with: {{tick: "${{{{ inputs.tick }}}}", at: "${{{{ inputs.at }}}}"}}}}{more}
        """


async def ticks(pool: asyncpg.Pool, workflow: str) -> list[asyncpg.Record]:
    """The fired ticks of `workflow`, oldest first."""
    return list(await pool.fetch(
        "SELECT tick_at, run_id::text, fired_by, error FROM schedule_ticks WHERE workflow = $1 ORDER BY tick_at",
        workflow))


async def tick_times(pool: asyncpg.Pool, workflow: str) -> list[datetime]:
    return [r["tick_at"] for r in await ticks(pool, workflow)]


async def runs_per_tick(pool: asyncpg.Pool, workflow: str) -> Counter[str]:
    """How many runs each tick started, from the runs' own `run.created` events (not the tick table)."""
    rows = await pool.fetch(
        """SELECT e.data -> 'trigger' ->> 'tick' AS tick FROM events e JOIN runs r ON r.run_id = e.run_id
            WHERE e.seq = 1 AND r.requested_by = $1""", f"schedule:{workflow}")
    return Counter(r["tick"] for r in rows)


async def schedule_row(pool: asyncpg.Pool, workflow: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM schedules WHERE workflow = $1", workflow)
    assert row is not None, f"no schedule row for {workflow}"
    return dict(row)


async def statuses(pool: asyncpg.Pool, workflow: str) -> Counter[str]:
    rows = await pool.fetch("SELECT status FROM runs WHERE requested_by = $1", f"schedule:{workflow}")
    return Counter(r["status"] for r in rows)


def gaps(times: list[datetime], step: float = 1.0) -> list[tuple[datetime, datetime]]:
    """Neighbouring ticks further apart than `step` seconds."""
    return [(a, b) for a, b in pairwise(times) if b - a != timedelta(seconds=step)]
