"""Workflow files that changed without a file event (saved while the worker was starting, or on a mount
that sends no events) are picked up by the periodic rescan of the files' (mtime, size)."""

from __future__ import annotations

import os
import time

from tests.support.runtime import client_for, write_workflow
from worker.config import Settings
from worker.engine.definitions_sync import DefinitionsSync
from worker.store.pool import create_pool

SEEN = "name: seen\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n"


async def test_changes_no_watcher_reported_are_reloaded_by_the_rescan(settings: Settings) -> None:
    seen = write_workflow(settings, "seen.yaml", SEEN)
    gone = write_workflow(settings, "gone.yaml", SEEN.replace("seen", "gone"))
    pool = await create_pool(settings.database_url)
    try:
        sync = DefinitionsSync(pool, settings.workflows_dir, None)
        await sync.initial_scan()
        assert await sync.rescan() == set(), "nothing moved since the scan"

        # no watcher runs here: as when these happen before it starts, or on a mount without events
        late = write_workflow(settings, "late.yaml", SEEN.replace("seen", "late"))
        write_workflow(settings, "seen.yaml", SEEN.replace("x: 1", "x: 2"))
        gone.unlink()
        (settings.workflows_dir / "notes.txt").write_text("not a workflow")
        assert await sync.rescan() == {gone}, "a save of the last second is left to the watcher, if it works"
        for path in (late, seen):
            os.utime(path, (time.time() - 5, time.time() - 5))
        assert await sync.rescan() == {late, seen}

        async with client_for(settings) as client:
            workflows = {w.name: w for w in await client.list_workflows()}
            assert workflows["late"].status == "active"
            assert workflows["seen"].versions == 2
            assert workflows["gone"].status == "deleted"
        assert await sync.rescan() == set()
    finally:
        await pool.close()
