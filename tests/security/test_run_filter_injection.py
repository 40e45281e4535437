"""Run filters (`agentrt runs --workflow/--status/--waiting-on/--search`, the console's `/` terms, saved views)
come from people and from stored views: none of their text reaches SQL as SQL, and a hostile value neither
errors out the listing nor drops a table."""

from __future__ import annotations

import pytest

from tests.worker.integration.test_scale_queries import _seed
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import WorkerError
from worker.search.filters import RunFilter

HOSTILE = ["x' OR '1'='1", "'; DROP TABLE runs; --", "human' OR true --", "$1", "%' --"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_filter_text_is_only_ever_a_value(settings: Settings, value: str) -> None:
    client = await RuntimeClient.connect(settings)
    try:
        async with client.pool.acquire() as conn:
            await _seed(conn, [("w", "failed", 1, "boom", None), ("w", "waiting", 2, None, "human")])
        for f in (RunFilter(workflow=value), RunFilter(step=value), RunFilter(error=value),
                  RunFilter(waiting=value)):
            assert await client.list_runs(filters=f) == []  # matched literally: nothing has that text
        try:
            listed = await client.list_runs(search=value)
        except WorkerError:
            listed = []  # refused as a regex: a clear error, not SQL
        assert all(value.lower() in " ".join(map(str, (r.workflow, r.error))).lower() for r in listed)
        assert await client.list_runs(filters=RunFilter(status=value)) == []  # not a status: a value, no match
        assert await client.pool.fetchval("SELECT count(*) FROM runs") == 2  # the table is still there
    finally:
        await client.close()
