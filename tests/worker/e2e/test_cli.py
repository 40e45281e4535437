"""The `agentrt` command line, as a user runs it, against a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.runtime import client_for, pending_task, running_worker, write_workflow
from tests.support.services import REPO_ROOT, agentrt_dev, worker_environment
from worker.config import Settings


async def agentrt(settings: Settings, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", *args, cwd=REPO_ROOT, env=worker_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


GATE = """
name: gate
inputs: {n: {type: integer, default: 1}}
steps:
  - {id: ask, uses: approval, with: {prompt: "allow ${{ inputs.n }}?"}}
  - {id: done, uses: set, with: {n: "${{ inputs.n }}"}}
"""


async def test_run_wait_json_show_and_runs_listing(settings: Settings) -> None:
    write_workflow(settings, "calc.yaml", """
        name: calc
        inputs: {x: {type: integer}}
        steps:
          - {id: sq, uses: set, with: {v: "${{ inputs.x * inputs.x }}"}}
    """)
    async with running_worker(settings):
        rc, out, err = await agentrt(settings, "run", "calc", "--input", '{"x": 7}', "--wait", "--json")
        assert rc == 0, err
        result = json.loads(out)
        assert result["status"] == "completed" and result["output"] == {"v": 49}
        run_id = result["run_id"]
        rc, out, _ = await agentrt(settings, "show", run_id[:8], "--json")
        shown = json.loads(out)
        assert rc == 0 and shown["summary"]["run_id"] == run_id
        assert [s["step_id"] for s in shown["steps"]] == ["sq"] and shown["steps"][0]["output"] == {"v": 49}
        assert [e["type"] for e in shown["events"]][0] == "run.created"
        rc, out, _ = await agentrt(settings, "runs", "--json", "--status", "completed")
        assert rc == 0 and [r["run_id"] for r in json.loads(out)] == [run_id]
        rc, out, _ = await agentrt(settings, "runs")
        assert rc == 0 and run_id[:8] in out and "calc" in out and "completed" in out
        rc, out, _ = await agentrt(settings, "show", run_id, "--events")
        assert rc == 0 and "step.completed" in out and '"v":49' in out.replace(" ", "")


async def test_run_errors_have_clear_messages_and_exit_codes(settings: Settings) -> None:
    write_workflow(settings, "calc.yaml", "name: calc\ninputs: {x: {type: integer}}\nsteps: [{id: a, uses: set}]\n")
    async with running_worker(settings):
        rc, _, err = await agentrt(settings, "run", "nope")
        assert rc == 4 and "no active workflow named 'nope'" in err
        rc, _, err = await agentrt(settings, "run", "calc", "--input", "{bad json")
        assert rc == 2 and "not valid JSON" in err
        rc, _, err = await agentrt(settings, "run", "calc", "--input", '{"x": "seven"}')
        assert rc == 1 and "must be integer" in err
        rc, _, err = await agentrt(settings, "show", "00000000-0000-0000-0000-000000000000")
        assert rc == 4 and "no run" in err


async def test_approvals_approve_reject_conflict(settings: Settings) -> None:
    write_workflow(settings, "gate.yaml", GATE)
    async with running_worker(settings), client_for(settings) as client:
        ok = await client.start_run("gate", {"n": 1})
        no = await client.start_run("gate", {"n": 2})
        t_ok = await pending_task(client, ok)
        t_no = await pending_task(client, no)
        rc, out, _ = await agentrt(settings, "approvals", "--json")
        listed = json.loads(out)
        assert rc == 0 and {t["prompt"] for t in listed} == {"allow 1?", "allow 2?"}
        rc, out, _ = await agentrt(settings, "approvals")
        assert t_ok.task_id[:8] in out and "allow 1?" in out
        rc, out, err = await agentrt(settings, "approve", t_ok.task_id[:8], "--reason", "fine")
        assert rc == 0 and "approved" in out, err
        rc, _, err = await agentrt(settings, "approve", t_ok.task_id)
        assert rc == 3 and "already approved" in err
        rc, _, err = await agentrt(settings, "reject", t_no.task_id)
        assert rc == 2 and "--reason" in err  # argparse: the reason is required
        rc, out, _ = await agentrt(settings, "reject", t_no.task_id, "--reason", "too risky", "--json")
        assert rc == 0 and json.loads(out)["status"] == "rejected"
        assert (await client.wait_for_run(ok, timeout=20)).status.value == "completed"
        failed = await client.wait_for_run(no, timeout=20)
        assert failed.status.value == "failed" and "too risky" in (failed.error or "")


async def test_cancel_and_wait_exit_code(settings: Settings) -> None:
    write_workflow(settings, "gate.yaml", GATE)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("gate")
        await pending_task(client, run_id)
        rc, out, _ = await agentrt(settings, "cancel", run_id, "--reason", "test")
        assert rc == 0 and "cancel requested" in out
        summary = await client.wait_for_run(run_id, timeout=20)
        assert summary.status.value == "cancelled"
        assert (await client.list_tasks(status="pending", run_id=run_id)) == []
        rc, _, err = await agentrt(settings, "cancel", run_id)
        assert rc == 3 and "already cancelled" in err


async def test_validate_and_workflows_report_file_line_column(settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nsteps: [{id: a, uses: set, with: {x: 1}}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - id: a\n    uses: set\n    retry: {max_attempts: 0}\n")
    rc, out, _ = await agentrt(settings, "validate", str(good), str(bad))
    assert rc == 1
    assert f"{bad}:5" in out and "max_attempts" in out and "ok" in out
    rc, out, _ = await agentrt(settings, "validate", "--json", str(tmp_path))
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert results["good.yaml"]["ok"] is True and results["bad.yaml"]["line"] == 5
    write_workflow(settings, "bad.yaml", bad.read_text())
    write_workflow(settings, "good.yaml", good.read_text())
    async with running_worker(settings):
        rc, out, _ = await agentrt(settings, "workflows", "--json")
        listed = {Path(w["path"]).name: w for w in json.loads(out)}
        assert listed["good.yaml"]["status"] == "active" and listed["bad.yaml"]["status"] == "invalid"
        assert listed["bad.yaml"]["error_line"] == 5
        rc, out, _ = await agentrt(settings, "workflows")
        assert "bad.yaml:5" in out
        rc, out, _ = await agentrt(settings, "workers", "--json")
        assert rc == 0 and any(w["alive"] for w in json.loads(out))


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "worker", "--help"], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    for command in ("dev", "worker", "console", "run", "runs", "show", "approvals", "approve", "reject",
                    "resolve", "cancel", "workflows", "validate", "workers", "migrate"):
        assert command in out


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTRT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
           "AGENTRT_REDIS_URL": "redis://127.0.0.1:1/0"}
    res = subprocess.run([sys.executable, "-m", "worker", "runs"], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=60)
    assert res.returncode == 5
    assert "cannot connect to Postgres at postgresql://postgres@127.0.0.1:1/x" in res.stderr


def test_agentrt_dev_starts_everything_runs_a_demo_and_shuts_down(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    with agentrt_dev(data) as dev:
        text = dev.banner
        assert "ready in" in text and "postgres" in text and "openbao" in text, text
        res = subprocess.run([sys.executable, "-m", "worker", "run", "hello", "--input", '{"who": "dev"}',
                              "--wait", "--json", "--timeout", "60"],
                             cwd=REPO_ROOT, env=dev.env, capture_output=True, text=True, timeout=90)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["output"] == {"greeting": "HELLO, DEV!"}
        # the API runs too, with a token for every scope in .agentrt/env (the README's curl examples)
        assert f"api       {dev.env['AGENTRT_API_URL']}" in text, text
        auth = {"Authorization": f"Bearer {dev.env['AGENTRT_API_TOKEN']}"}
        started = httpx.post(dev.env["AGENTRT_API_URL"] + "/v1/runs", headers=auth, timeout=30,
                             json={"workflow": "hello", "inputs": {"who": "api"}})
        assert started.status_code == 201, started.text
        run_url = dev.env["AGENTRT_API_URL"] + "/v1/runs/" + started.json()["run_id"]
        deadline = time.monotonic() + 60
        while (run := httpx.get(run_url, headers=auth, timeout=30).json())["status"] != "completed":
            assert time.monotonic() < deadline and run["status"] not in ("failed", "cancelled"), run
            time.sleep(0.2)
        assert run["output"] == {"greeting": "HELLO, API!"}
    assert dev.proc.returncode == 0, dev.rest
    assert "shutting down" in dev.rest
    # nothing left listening: the servers were stopped
    leftovers = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.strip()
    assert leftovers == ""


def test_validate_checks_the_shared_tools_file(tmp_path: Path) -> None:
    tools = tmp_path / "tools.yaml"
    tools.write_text("servers:\n  helpdesk: {command: python, args: [-m, helpdesk]}\n  x: {transport: pigeon}\n")
    res = subprocess.run([sys.executable, "-m", "worker", "validate", "--json", str(tools)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    [result] = json.loads(res.stdout)
    assert result["ok"] is False and result["line"] == 3 and "transport" in result["error"]
    tools.write_text("servers:\n  helpdesk: {command: python, args: [-m, helpdesk]}\n")
    res = subprocess.run([sys.executable, "-m", "worker", "validate", str(tools)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "1 server(s)" in res.stdout
