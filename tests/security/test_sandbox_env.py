"""A deployed task module that goes looking for the worker's identity from inside its sandbox.

The canary is in the worker's environment (VAULT_TOKEN, AGENTRT_CANARY_SECRET, AWS_SECRET_ACCESS_KEY)
and in Vault at a path no workflow is granted. The task reads its own environment, the worker's
`/proc/<pid>/environ`, `mem` and `cmdline`, and its descriptors; the worker process is non-dumpable
for the test, as `agentrt worker` makes itself. Nothing it returns, raises or logs holds the canary,
while an honest step in the same sandbox pool still gets the secret its workflow was granted.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.security.harness import Canary
from tests.support.runtime import client_for, running_worker, write_workflow
from tests.support.vault_support import root_client, uid, write_secret
from tests.worker.integration.test_sandbox_pool import make_ctx
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.secrets.policies import apply_policies, policies_for
from worker.steps.python_step import PythonExecutor

SNOOP = '''
import hashlib, os

def _read(path, size=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(size).decode("latin-1").replace("\\0", " ")
    except OSError as exc:
        return f"{type(exc).__name__}: errno {exc.errno}"

def _mem(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            start = int(f.readline().split("-")[0], 16)
        with open(f"/proc/{pid}/mem", "rb") as f:
            f.seek(start)
            return f.read(4096).hex()
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"

def snoop():
    parent = os.getppid()
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            fds[fd] = type(exc).__name__
    return {
        "environ": dict(os.environ),
        "parent_environ": _read(f"/proc/{parent}/environ"),
        "parent_mem": _mem(parent),
        "parent_cmdline": _read(f"/proc/{parent}/cmdline"),
        "self_environ": _read("/proc/self/environ"),
        "fds": fds,
        "uid": os.getuid(),
    }

def loud():
    raise RuntimeError("environment: " + repr(dict(os.environ)) + " parent: " + _read(f"/proc/{os.getppid()}/environ"))

def honest(ctx=None):
    token = ctx.secrets["api"]["token"]
    return {"credentials": sorted(ctx.secrets), "fingerprint": hashlib.sha256(token.encode()).hexdigest()[:12]}
'''

_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3


@pytest.fixture
def non_dumpable_worker() -> Iterator[None]:
    """This process (the in-process worker) non-dumpable, as `agentrt worker` makes itself; restored after."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
    assert libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(_PR_SET_DUMPABLE, before, 0, 0, 0)


async def test_a_task_module_cannot_reach_the_workers_identity(
        settings: Settings, vault_server: Any, canary: Canary, non_dumpable_worker: None) -> None:
    tag = uid()
    module = f"snoop_{tag}"
    (settings.workflows_dir / f"{module}.py").write_text(SNOOP)
    granted = f"CANARY-IS-NOT-THIS-{tag}-granted"
    write_secret(vault_server, f"{tag}/api", {"token": granted})
    write_workflow(settings, "snoop.yaml", f"""
        name: snoop-{tag}
        steps:
          - {{id: look, uses: python, with: {{function: "{module}:snoop"}}}}
        """)
    write_workflow(settings, "loud.yaml", f"""
        name: loud-{tag}
        steps:
          - id: shout
            uses: python
            retry: {{max_attempts: 1}}
            with: {{function: "{module}:loud"}}
        """)
    write_workflow(settings, "honest.yaml", f"""
        name: honest-{tag}
        credentials: {{api: {{path: {tag}/api}}}}
        steps:
          - id: use
            uses: python
            secrets: [api]
            with: {{function: "{module}:honest"}}
        """)
    apply_policies(root_client(vault_server), policies_for([load_file(settings.workflows_dir / "honest.yaml")]))
    worker_settings = replace(settings, vault_addr=vault_server.addr, vault_token=vault_server.root_token,
                              sandbox_env_allow=("LANG",))
    assert os.environ["AGENTRT_CANARY_SECRET"] == canary.value  # in the worker's environment as it starts
    async with running_worker(worker_settings), client_for(settings) as client:
        runs = {name: await client.start_run(f"{name}-{tag}") for name in ("snoop", "loud", "honest")}
        summaries = {name: await client.wait_for_run(run_id, timeout=60) for name, run_id in runs.items()}
        details = {name: await client.get_run(run_id) for name, run_id in runs.items()}
        worker_sockets = _socket_links(os.getpid())  # the worker runs in this process: Postgres, Redis, Vault...
    assert summaries["snoop"].status.value == "completed", summaries["snoop"].error
    seen = details["snoop"].steps[0].output
    # the sandbox's environment is the minimal one: nothing of the worker's identity or settings
    assert not any(name.startswith(("VAULT_", "AGENTRT_", "AWS_", "OTEL_")) for name in seen["environ"])
    assert set(seen["environ"]) <= {"PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TMPDIR", "PYTHONPATH",
                                    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} | {
                                        n for n in seen["environ"] if n.startswith("LC_")}
    # the worker's memory and environment are out of reach (non-dumpable, and the sandbox has no CAP_SYS_PTRACE)
    assert seen["parent_environ"].startswith("PermissionError"), seen["parent_environ"][:200]
    assert seen["parent_mem"].startswith("PermissionError"), seen["parent_mem"][:200]
    # no descriptor of the worker's (Postgres, Redis, Vault sockets, files) was inherited: the only sockets
    # are the sandbox's own event loop's wake-up pair
    sockets = [t for t in seen["fds"].values() if t.startswith("socket:")]
    assert worker_sockets and not set(sockets) & worker_sockets, (seen["fds"], worker_sockets)
    assert len(sockets) <= 2, seen["fds"]
    # 0-2, the two protocol pipes, the loop's epoll and wake-up pair, the listing's own
    assert len(seen["fds"]) <= 9, seen["fds"]
    assert not [t for t in seen["fds"].values() if t.startswith("/") and t not in ("/dev/null",)
                and not t.startswith("/proc/")], seen["fds"]
    assert summaries["loud"].status.value == "failed"
    # the honest step got the secret its workflow was granted
    assert summaries["honest"].status.value == "completed", summaries["honest"].error
    assert details["honest"].steps[0].output == {
        "credentials": ["api"], "fingerprint": hashlib.sha256(granted.encode()).hexdigest()[:12]}
    everything = json.dumps([d.model_dump(mode="json") if hasattr(d, "model_dump") else repr(d)
                             for d in details.values()], default=str)
    await canary.assert_absent(settings, texts={"run details (outputs, errors)": everything,
                                                "the sandbox's view": json.dumps(seen)})


async def test_the_sandbox_holds_no_capabilities_even_as_root(tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "caps_probe.py").write_text(
        "import os\n"
        "def status():\n"
        "    with open('/proc/self/status') as f:\n"
        "        rows = (line.partition(':') for line in f)\n"
        "        return {k: v.strip() for k, _, v in rows if k.startswith(('Cap', 'NoNewPrivs'))}\n")
    ex = PythonExecutor(Settings(workflows_dir=workflows, sandbox_min=1))
    try:
        status = await ex.execute({"function": "caps_probe:status"}, make_ctx())
    finally:
        await ex.aclose()
    assert status["CapEff"] == status["CapPrm"] == status["CapInh"] == status["CapBnd"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"


def _socket_links(pid: int) -> set[str]:
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:"):
            links.add(link)
    return links
