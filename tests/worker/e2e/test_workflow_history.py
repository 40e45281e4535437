"""A workflow's version history through RuntimeClient, as hot reloads by a running worker write it:
`workflow_versions`, `workflow_diff` and `workflow_events` (what the console's Workflows screen shows)."""

from __future__ import annotations

import json

import pytest

from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import NotFound

V1 = """
    name: hist
    steps:
      - {id: greet, uses: set, with: {message: "hello v1"}}
      - {id: done, uses: set, with: {ok: true}}
"""
V2 = V1.replace("hello v1", "hello v2")
INVALID = "name: hist\nsteps:\n  - id: greet\n    uses: teleport\n"


async def _versions(client: RuntimeClient, name: str, n: int) -> None:
    async def enough() -> bool:
        return {w.name: w.versions for w in await client.list_workflows()}.get(name) == n

    await eventually(enough, timeout=10, interval=0.05, what=f"{n} versions of {name}")


async def test_versions_diff_and_events_follow_hot_reloads(settings: Settings) -> None:
    path = write_workflow(settings, "hist.yaml", V1)
    write_workflow(settings, "solo.yaml", "name: solo\nsteps: [{id: a, uses: set, with: {x: 1}}]\n")
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start_run("hist")
        write_workflow(settings, "hist.yaml", V2)  # hot reload: a second version becomes active
        await _versions(client, "hist", 2)
        second = await client.start_run("hist")
        third = await client.start_run("hist")
        for run_id in (first, second, third):
            await client.wait_for_run(run_id, timeout=20)

        versions = await client.workflow_versions("hist")
        new, old = versions
        assert new.def_hash != old.def_hash and new.created_at >= old.created_at
        assert (new.active, old.active) == (True, False)
        assert (new.runs, old.runs) == (2, 1)  # runs stay pinned to the version they started with
        assert new.name == "hist" and str(new.source_path).endswith("hist.yaml")

        # default: the version before the active one, against the active one
        diff = await client.workflow_diff("hist")
        lines = diff.splitlines()
        assert lines[:2] == [f"--- hist@{old.def_hash[:12]}", f"+++ hist@{new.def_hash[:12]}"]
        assert '-  - {id: greet, uses: set, with: {message: "hello v1"}}' in lines
        assert '+  - {id: greet, uses: set, with: {message: "hello v2"}}' in lines
        assert "   - {id: done, uses: set, with: {ok: true}}" in lines  # context keeps its space prefix
        assert not any(line.startswith(("+", "-")) and "done" in line for line in lines)
        # explicit versions by prefix, either way round
        back = await client.workflow_diff("hist", new.def_hash[:8], old.def_hash[:10])
        assert '+  - {id: greet, uses: set, with: {message: "hello v1"}}' in back.splitlines()
        assert await client.workflow_diff("hist", old.def_hash, old.def_hash) == ""
        with pytest.raises(NotFound, match="has no version 'ffffffff'"):
            await client.workflow_diff("hist", "ffffffff")
        with pytest.raises(NotFound, match="at least 4 characters"):
            await client.workflow_diff("hist", new.def_hash[:2])
        with pytest.raises(NotFound, match="no workflow named 'nope'"):
            await client.workflow_diff("nope")
        with pytest.raises(NotFound, match="no workflow named 'nope'"):
            await client.workflow_versions("nope")
        with pytest.raises(NotFound, match="only one version"):
            await client.workflow_diff("solo")

        # an invalid save: the error with file:line and the offending line; v2 stays active
        path.write_text(INVALID, encoding="utf-8")

        async def invalid() -> bool:
            return {w.path: w.status for w in await client.list_workflows()}[str(path)] == "invalid"

        await eventually(invalid, timeout=10, interval=0.05, what="invalid save reported")
        info = {w.path: w for w in await client.list_workflows()}[str(path)]
        assert info.error_line == 4 and info.excerpt is not None and "teleport" in info.excerpt
        assert [v.active for v in await client.workflow_versions("hist")] == [True, False]

        events = [e for e in await client.workflow_events() if e.path == str(path)]
        assert [e.kind for e in events] == ["invalid", "loaded", "loaded"]  # newest first
        assert events[0].error is not None and f"{path}:4" in events[0].error and "teleport" in events[0].error
        assert [e.def_hash for e in events[1:]] == [new.def_hash, old.def_hash]
        assert all(e.name == "hist" for e in events)
        assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
        assert events[0].at >= events[1].at >= events[2].at
        assert len(await client.workflow_events(limit=1)) == 1


async def test_cli_shows_versions_diff_and_history(settings: Settings) -> None:
    path = write_workflow(settings, "hist.yaml", V1)
    async with running_worker(settings), client_for(settings) as client:
        write_workflow(settings, "hist.yaml", V2)
        await _versions(client, "hist", 2)
        new, old = await client.workflow_versions("hist")

        rc, out, err = await agentrt(settings, "workflows", "--diff", "hist")
        assert rc == 0, err
        assert '-  - {id: greet, uses: set, with: {message: "hello v1"}}' in out.splitlines()
        assert '+  - {id: greet, uses: set, with: {message: "hello v2"}}' in out.splitlines()
        rc, out, _ = await agentrt(settings, "workflows", "--diff", "hist", new.def_hash[:8], old.def_hash[:8],
                                   "--json")
        assert rc == 0 and '+  - {id: greet, uses: set, with: {message: "hello v1"}}' in json.loads(out)["diff"]
        rc, _, err = await agentrt(settings, "workflows", "--diff", "hist", "ffffffff")
        assert rc == 4 and "has no version 'ffffffff'" in err
        rc, _, err = await agentrt(settings, "workflows", "--diff", "hist", "a", "b", "c")
        assert rc == 2 and "usage" in err

        rc, out, _ = await agentrt(settings, "workflows", "--versions", "hist", "--json")
        listed = json.loads(out)
        assert rc == 0 and [v["def_hash"] for v in listed] == [new.def_hash, old.def_hash]
        assert [v["active"] for v in listed] == [True, False]
        rc, out, _ = await agentrt(settings, "workflows", "--versions", "hist")
        assert rc == 0 and new.def_hash[:12] in out and "active" in out

        path.write_text(INVALID, encoding="utf-8")

        async def invalid() -> bool:
            return {w.path: w.status for w in await client.list_workflows()}[str(path)] == "invalid"

        await eventually(invalid, timeout=10, interval=0.05, what="invalid save reported")
        rc, out, _ = await agentrt(settings, "workflows", "--history", "--json")
        kinds = [e["kind"] for e in json.loads(out) if e["path"] == str(path)]
        assert rc == 0 and kinds == ["invalid", "loaded", "loaded"]
        rc, out, _ = await agentrt(settings, "workflows", "--history")
        assert rc == 0 and "invalid" in out and "teleport" in out
