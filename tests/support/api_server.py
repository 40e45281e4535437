"""Fixtures (a plugin of tests/conftest.py): `agentrt serve` as a real process on a free port, against the
test's Postgres and Redis; httpx talks to it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.runtime import client_for
from tests.support.services import REPO_ROOT, worker_environment
from worker.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    log_path: Path
    popen: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_api(settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> ApiServer:
    port = free_port()
    env = {**worker_environment(settings), **(extra_env or {})}
    with log_path.open("ab") as log:
        popen = subprocess.Popen([sys.executable, "-m", "worker", "serve", "--port", str(port)], cwd=REPO_ROOT,
                                 env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    server = ApiServer(f"http://127.0.0.1:{port}", log_path, popen)
    deadline = time.monotonic() + 30
    while True:
        if popen.poll() is not None:
            raise AssertionError(f"agentrt serve exited with {popen.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            popen.kill()
            raise AssertionError(f"agentrt serve did not answer /healthz within 30 s:\n{server.log()}")
        time.sleep(0.1)


def stop_api(server: ApiServer) -> None:
    server.popen.terminate()
    try:
        server.popen.wait(10)
    except subprocess.TimeoutExpired:
        server.popen.kill()
        server.popen.wait(5)


@pytest.fixture
def api_server(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log")
    yield server
    stop_api(server)


@pytest.fixture
async def api(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=20.0) as client:
        yield client


async def make_token(settings: Settings, name: str, *scopes: str, **kwargs: object) -> str:
    async with client_for(settings) as client:
        token, _ = await client.create_api_token(name, list(scopes), **kwargs)  # type: ignore[arg-type]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
