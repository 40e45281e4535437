"""`agentrt limits` (and `--json`) after real use, and limits.yaml hot-reloaded by a running worker: a workflow
naming a limit the file does not define yet becomes valid once the operator adds it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from tests.limits.support import write_limits
from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings


def agentrt(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO_ROOT, env=worker_environment(settings),
                          capture_output=True, text=True, timeout=60, check=False)


async def test_agentrt_limits_shows_each_limit_its_use_and_the_mode(settings: Settings, http_sink: HttpSink) -> None:
    write_limits(settings.workflows_dir, """
        limits:
          helpdesk-api: {requests: 20/s, concurrency: 10}
          openai-gpt4o: {requests: 500/min, tokens: 30000/min, match: {provider: openai, model: gpt-4o}}
        """)
    write_workflow(settings, "ping.yaml", """
        name: ping
        inputs: {sink: {type: string}}
        steps:
          - {id: call, uses: http, limit: helpdesk-api, with: {url: "${{ inputs.sink }}/ping"}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        for run in [await client.start_run("ping", {"sink": http_sink.url}) for _ in range(5)]:
            await wait_status(client, run, "completed")
        listed = await asyncio.to_thread(agentrt, settings, "limits", "--json")
        shown = await asyncio.to_thread(agentrt, settings, "limits")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["mode"] == "redis" and report["redis_error"] is None and len(report["workers"]) == 1
    limits = {lim["name"]: lim for lim in report["limits"]}
    helpdesk, gpt = limits["helpdesk-api"], limits["openai-gpt4o"]
    assert helpdesk["requests"] == "20/s" and helpdesk["concurrency"] == 10 and helpdesk["granted"] == 5
    assert helpdesk["window"] == "s" and helpdesk["in_flight"] == 0 and helpdesk["rejected_429"] == 0
    assert gpt["tokens"] == "30000/min" and gpt["match"] == {"provider": "openai", "model": "gpt-4o"}
    assert gpt["granted"] == 0 and gpt["burst"] == 475
    assert shown.returncode == 0, shown.stderr
    assert "helpdesk-api" in shown.stdout and "mode: redis" in shown.stdout and "req 500/min" in shown.stdout


async def test_a_saved_limits_file_makes_waiting_workflows_valid(settings: Settings) -> None:
    write_limits(settings.workflows_dir, "limits:\n  first: {requests: 5/s}\n")
    write_workflow(settings, "later.yaml", """
        name: later
        steps:
          - {id: call, uses: http, limit: second, with: {url: "https://example.com"}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        (info,) = [w for w in await client.list_workflows() if w.path.endswith("later.yaml")]
        assert info.status == "invalid" and "unknown limit 'second'" in (info.error or "")
        write_limits(settings.workflows_dir, "limits:\n  first: {requests: 5/s}\n  second: {requests: 1/s}\n")

        async def valid() -> bool:
            found = [w for w in await client.list_workflows() if w.path.endswith("later.yaml")]
            return bool(found) and found[0].status != "invalid"

        await eventually(valid, 10, what="later.yaml valid after limits.yaml was saved")
        # a broken limits.yaml is listed with the workflow errors, the workers keep its last good version
        write_limits(settings.workflows_dir, "limits:\n  second: {requests: 1/fortnight}\n")

        async def listed() -> bool:
            return any(w.path.endswith("limits.yaml") and w.status == "invalid" and "fortnight" in (w.error or "")
                       for w in await client.list_workflows())

        await eventually(listed, 10, what="the invalid limits.yaml listed")
        report = await client.limits()
        assert "fortnight" in (report.file_error or "")
