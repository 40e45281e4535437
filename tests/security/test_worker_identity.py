"""The worker's own identity: its Vault credential leaves its environment, and `agentrt dev` uses AppRole."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import hvac

from tests.security.harness import Canary
from tests.support.runtime import running_worker
from tests.support.services import REPO_ROOT, WorkerProcs, agentrt_dev
from worker.config import Settings
from worker.secrets.identity import forget_identity


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _wait_for_log(path: Path, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in {path} within {timeout}s:\n{text[-3000:]}")


def test_forget_identity_clears_the_environment_and_what_proc_shows() -> None:
    code = ("import os, subprocess; from worker.secrets.identity import forget_identity; "
            "print(forget_identity()); "
            "print(subprocess.run(['env'], capture_output=True, text=True).stdout.count('TOPSECRET')); "
            "print(open('/proc/self/environ', 'rb').read().count(b'TOPSECRET'))")
    env = {**os.environ, "VAULT_TOKEN": "TOPSECRET-1", "AGENTRT_VAULT_SECRET_ID": "TOPSECRET-2",
           "KEEP_ME": "visible"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                         cwd=REPO_ROOT, check=True).stdout.split("\n")
    assert out[0] == "['AGENTRT_VAULT_SECRET_ID', 'VAULT_TOKEN']"
    assert out[1] == "0", "a child process inherited the credential"
    assert out[2] == "0", "/proc/self/environ still shows the credential"
    assert forget_identity(()) == []  # names nothing: touches nothing


def test_a_worker_process_drops_its_token_from_its_environment(worker_procs: WorkerProcs,
                                                               settings: Settings) -> None:
    token, secret_id = f"hvs.TOKEN-{uuid.uuid4().hex}", f"SECRETID-{uuid.uuid4().hex}"
    proc = worker_procs.start(extra_env={"VAULT_TOKEN": token, "AGENTRT_VAULT_SECRET_ID": secret_id,
                                         "AGENTRT_VAULT_ROLE_ID": "role"})
    _wait_for_log(proc.log_path, "removed the worker's credentials from its environment")
    environ = _environ(proc.pid)
    assert token.encode() not in environ and secret_id.encode() not in environ
    assert b"VAULT_TOKEN=" not in environ
    # a variable that is not a credential is still there (the scrub is targeted)
    assert b"AGENTRT_DATABASE_URL=" in environ


async def test_an_in_process_worker_forgets_the_token_too(canary: Canary, settings: Settings) -> None:
    assert os.environ["VAULT_TOKEN"] == canary.value
    async with running_worker(settings):
        assert "VAULT_TOKEN" not in os.environ
        assert os.environ["AGENTRT_CANARY_SECRET"] == canary.value  # not a credential variable: left alone


def test_agentrt_dev_gives_its_worker_an_approle_login_not_the_root_token(tmp_path: Path) -> None:
    with agentrt_dev(tmp_path / "dev") as dev:
        text = dev.banner
        root_token = re.search(r"root token (\S+)\)", text)
        worker_pid = re.search(r"worker\s+pid (\d+)", text)
        assert root_token and worker_pid, text
        dev_env = dev.env
        # the vault-demo workflow reads its credential through a step token minted by the worker's own login
        res = subprocess.run([sys.executable, "-m", "worker", "run", "vault-demo", "--wait", "--json",
                              "--timeout", "60"], cwd=REPO_ROOT, env=dev_env, capture_output=True, text=True,
                             timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr
        output = json.loads(res.stdout)["output"]
        assert output and "dev-fake" not in json.dumps(output)
        environ = _environ(int(worker_pid.group(1)))
        assert root_token.group(1).encode() not in environ
        assert b"VAULT_TOKEN=" not in environ and b"AGENTRT_VAULT_SECRET_ID=" not in environ
        assert b"AGENTRT_VAULT_ROLE_ID=" in environ
        # what the worker logged in as: the agentrt-worker policy only
        client = hvac.Client(url=dev_env["VAULT_ADDR"], token=root_token.group(1), timeout=10)
        accessors = client.auth.token.list_accessors()["data"]["keys"]
        policies = [client.auth.token.lookup_accessor(a)["data"] for a in accessors]
        worker_tokens = [p for p in policies if p.get("meta") and p["meta"].get("role_name") == "agentrt-worker"]
        assert worker_tokens, policies
        assert all(p["policies"] == ["agentrt-worker"] for p in worker_tokens), worker_tokens
    assert dev.proc.returncode == 0, dev.rest
