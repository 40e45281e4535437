"""`agentrt dev`: the embedded stack (Postgres, Redis, OpenBao from wheels), a worker and the console."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worker import output as o


def _create_database(url: str, name: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())


def run_dev(data_dir: Path, workflows: Path, *, console: bool) -> int:
    try:
        from worker.devstack import EmbeddedOpenBao, EmbeddedPostgres, EmbeddedRedis
    except ImportError as exc:
        o.err.print(f"[red]agentrt dev needs the embedded servers:[/] {exc}\n"
                    "install them with: pip install -e '.[dev]'")
        return 2
    from worker.store.migrate import migrate

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    workflows = workflows.resolve()
    if not workflows.is_dir():
        o.err.print(f"[red]workflows directory {workflows} does not exist[/]")
        return 2
    pg = EmbeddedPostgres(data_dir / "postgres", log_path=data_dir / "postgres.log")
    rd = EmbeddedRedis(data_dir / "redis", appendonly=True)
    bao = EmbeddedOpenBao(log_path=data_dir / "openbao.log")
    started: list[EmbeddedPostgres | EmbeddedRedis | EmbeddedOpenBao] = []
    worker: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    demo_model: Any = None
    try:
        o.err.print("starting Postgres, Redis and OpenBao (embedded, from wheels)…")
        t0 = time.monotonic()
        for server in (pg, rd, bao):
            server.start()
            started.append(server)
        bao.bootstrap()
        from worker.secrets.dev import DEV_WORKER_ROLE, dev_worker_login, seed_dev_vault

        seed_dev_vault(bao.addr, bao.root_token, workflows)  # fake values for the demos' credentials
        # the worker logs in like a production one: AppRole, the agentrt-worker policy, never the root token
        worker_login = dev_worker_login(bao.addr, bao.root_token)
        _create_database(pg.url("postgres"), "agentrt")
        if not os.environ.get("OPENAI_API_KEY"):
            from worker.devmodel import start_demo_model

            demo_model = start_demo_model()
        env = {
            "AGENTRT_DATABASE_URL": pg.url("agentrt"),
            "AGENTRT_REDIS_URL": rd.url(),
            "AGENTRT_WORKFLOWS_DIR": str(workflows),
            "VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.root_token,
            "AGENTRT_HTTP_ALLOWED_HOSTS": os.environ.get("AGENTRT_HTTP_ALLOWED_HOSTS", "127.0.0.1,localhost"),
        }
        if demo_model is not None:
            env["AGENTRT_DEMO_MODEL_URL"] = demo_model.base_url
            # the demos name `api_key_env: OPENAI_API_KEY`: such a key may go to the demo model (ours)
            listed = os.environ.get("AGENTRT_STEP_ENV_HOSTS", "")
            env["AGENTRT_STEP_ENV_HOSTS"] = ",".join(h for h in (listed, demo_model.base_url) if h)
        applied = asyncio.run(migrate(env["AGENTRT_DATABASE_URL"]))
        api_port = _port_or_free(DEV_API_PORT)
        env["AGENTRT_API_URL"] = f"http://127.0.0.1:{api_port}"
        env["AGENTRT_API_TOKEN"] = _dev_api_token(env["AGENTRT_DATABASE_URL"], env["AGENTRT_REDIS_URL"], workflows)
        env_file = data_dir / "env"
        env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        child_env = {**os.environ, **env}  # the console and the CLI: the developer's own (root) token
        worker_env = {k: v for k, v in child_env.items() if k not in ("VAULT_TOKEN", "BAO_TOKEN")} | worker_login
        log = open(data_dir / "worker.log", "ab")  # noqa: SIM115 - lives as long as the worker
        worker = subprocess.Popen([sys.executable, "-m", "worker", "worker"], env=worker_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        api_log = open(data_dir / "api.log", "ab")  # noqa: SIM115 - lives as long as the API server
        api = subprocess.Popen([sys.executable, "-m", "worker", "serve", "--port", str(api_port)], env=worker_env,
                               stdout=api_log, stderr=subprocess.STDOUT, start_new_session=True)
        o.err.print(
            f"ready in {time.monotonic() - t0:.1f}s ({len(applied)} migration(s) applied)\n"
            f"  postgres  {env['AGENTRT_DATABASE_URL']}   (data: {data_dir / 'postgres'})\n"
            f"  redis     {env['AGENTRT_REDIS_URL']}   (AOF in {data_dir / 'redis'})\n"
            f"  openbao   {bao.addr}   (dev mode, root token {bao.root_token})\n"
            f"  worker    pid {worker.pid}, workflows {workflows}, log {data_dir / 'worker.log'}\n"
            f"            (Vault: AppRole {DEV_WORKER_ROLE!r}, policy agentrt-worker; sandboxed python steps)\n"
            f"  api       {env['AGENTRT_API_URL']}   (OpenAPI: /openapi.json; token for every scope in "
            f"$AGENTRT_API_TOKEN, log {data_dir / 'api.log'})\n"
            + (f"  model     {demo_model.base_url}   (OFFLINE DEMO MODEL: scripted replies; set OPENAI_API_KEY "
               "for a real one)\n" if demo_model is not None else "")
            + f"  in another terminal: [bold]source {env_file}[/] then e.g. `agentrt run hello --wait`"
        )
        if console and _console_available():
            os.environ.update(env)
            rc = subprocess.call([sys.executable, "-m", "console"], env=child_env)
            return rc
        o.err.print("press Ctrl-C to stop")
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stop:
            if worker.poll() is not None:
                o.err.print(f"[red]worker exited with {worker.returncode}; see {data_dir / 'worker.log'}[/]")
                return 1
            if api.poll() is not None:
                o.err.print(f"[red]API server exited with {api.returncode}; see {data_dir / 'api.log'}[/]")
                return 1
            time.sleep(0.3)
        return 0
    finally:
        o.err.print("shutting down…")
        for proc in (api, worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if demo_model is not None:
            demo_model.stop()
        for server in reversed(started):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                o.err.print(f"could not stop {type(server).__name__}: {exc}")


DEV_API_PORT = 8421


def _port_or_free(port: int) -> int:
    """`port` if nothing listens on it, else a free one (a second `agentrt dev`, or another service)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _dev_api_token(database_url: str, redis_url: str, workflows: Path) -> str:
    """A fresh token with every scope for this dev stack (the previous one named `dev` is revoked)."""
    from worker.client import RuntimeClient
    from worker.client.access import SCOPES
    from worker.config import Settings
    from worker.errors import NotFound

    async def go() -> str:
        client = await RuntimeClient.connect(Settings(database_url=database_url, redis_url=redis_url,
                                                      workflows_dir=workflows))
        try:
            with contextlib.suppress(NotFound):
                await client.revoke_api_token("dev")
            token, _ = await client.create_api_token("dev", list(SCOPES))
            return token
        finally:
            await client.close()

    return asyncio.run(go())


def _console_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("console") is not None
