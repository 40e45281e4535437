"""Service handles and worker subprocesses for the fixtures in tests/conftest.py (no fixtures here).

A service named by an environment variable is used as given; otherwise the fixtures start a real
server from a PyPI wheel (worker.devstack). Nothing here fakes a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar, overload

import redis

from worker.config import Settings
from worker.devstack import EmbeddedOpenBao, EmbeddedPostgres, EmbeddedRedis
from worker.devstack.openbao import bootstrap_vault
from worker.devstack.postgres import create_database, drop_database, run_sql

REPO_ROOT = Path(__file__).resolve().parents[2]


def redact(url: str) -> str:
    """A URL without its password, for error messages."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


# -- Postgres -------------------------------------------------------------------------------------
class PostgresService(Protocol):
    """What the `pg` fixture yields: an embedded or an external server."""

    def url(self, database: str = "postgres") -> str: ...
    def create_database(self, name: str, template: str | None = None) -> None: ...
    def drop_database(self, name: str) -> None: ...


class ExternalPostgres:
    """A server we did not start, reached through a URL whose role may CREATE DATABASE."""

    def __init__(self, url: str) -> None:
        self._parts = urllib.parse.urlsplit(url)

    def url(self, database: str = "postgres") -> str:
        return urllib.parse.urlunsplit(self._parts._replace(path="/" + database))

    @property
    def admin_url(self) -> str:
        return urllib.parse.urlunsplit(self._parts)

    def create_database(self, name: str, template: str | None = None) -> None:
        create_database(self.admin_url, name, template)

    def drop_database(self, name: str) -> None:
        drop_database(self.admin_url, name)


def check_postgres(url: str, source: str) -> None:
    """Fail with a clear message when the server at `url` does not answer."""
    try:
        run_sql(url, "SELECT 1", timeout=15)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"Postgres from {source} ({redact(url)}) does not answer: {exc}") from exc


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def create_migrated_database(pg: PostgresService, name: str) -> str:
    """Create `name` and apply the schema migrations to it; returns its URL."""
    from worker.store.migrate import migrate

    pg.create_database(name)
    url = pg.url(name)
    asyncio.run(migrate(url))
    return url


# -- Redis ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExternalRedis:
    """A Redis we did not start."""

    redis_url: str

    def url(self, db: int = 0) -> str:
        return self.redis_url


def check_redis(url: str, source: str) -> None:
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis from {source} ({redact(url)}) does not answer: {exc}") from exc


def delete_prefixed_keys(url: str, prefix: str) -> int:
    """SCAN + DEL every key starting with `prefix`; returns how many were deleted."""
    deleted = 0
    with redis.Redis.from_url(url, socket_timeout=10) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
    return deleted


# -- Vault ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExternalVault:
    """A Vault/OpenBao we did not start; `root_token` must be allowed to mount engines."""

    addr: str
    root_token: str

    def bootstrap(self) -> None:
        bootstrap_vault(self.addr, self.root_token)


# -- Servers a test owns (to kill and restart) ----------------------------------------------------
_S = TypeVar("_S", EmbeddedPostgres, EmbeddedRedis, EmbeddedOpenBao)


@dataclass
class OwnServices:
    """Starts fresh servers in a test's tmp dir; `stop_all()` runs at teardown.

    Call it as `own_services("postgres")`, or use the typed methods `.postgres(...)`, `.redis(...)`.
    """

    root: Path
    started: list[EmbeddedPostgres | EmbeddedRedis | EmbeddedOpenBao] = field(default_factory=list)

    def postgres(self, *, fsync: bool = False) -> EmbeddedPostgres:
        """A started Postgres; fsync off by default (a killed process loses nothing committed anyway)."""
        server = EmbeddedPostgres(self._dir("pg"), fsync=fsync)
        return self._start(server)

    def redis(self, *, appendonly: bool = False, save: bool = False) -> EmbeddedRedis:
        return self._start(EmbeddedRedis(self._dir("redis"), appendonly=appendonly, save=save))

    def openbao(self) -> EmbeddedOpenBao:
        """A started and bootstrapped OpenBao (in memory: bootstrap again after a restart)."""
        server = self._start(EmbeddedOpenBao(log_path=self._dir("openbao") / "openbao.log"))
        server.bootstrap()
        return server

    @overload
    def __call__(self, kind: Literal["postgres"]) -> EmbeddedPostgres: ...
    @overload
    def __call__(self, kind: Literal["redis"]) -> EmbeddedRedis: ...
    @overload
    def __call__(self, kind: Literal["openbao"]) -> EmbeddedOpenBao: ...

    def __call__(self, kind: str) -> EmbeddedPostgres | EmbeddedRedis | EmbeddedOpenBao:
        makers: dict[str, Callable[[], EmbeddedPostgres | EmbeddedRedis | EmbeddedOpenBao]] = {
            "postgres": self.postgres,
            "redis": self.redis,
            "openbao": self.openbao,
        }
        return makers[kind]()

    def stop_all(self) -> None:
        for server in reversed(self.started):
            try:
                server.stop(timeout=15)
            except Exception:
                server.kill()
        self.started.clear()

    def _dir(self, kind: str) -> Path:
        path = self.root / f"{kind}{len(self.started)}"
        path.mkdir(parents=True)
        return path

    def _start(self, server: _S) -> _S:
        self.started.append(server)
        server.start()
        return server


# -- Worker subprocesses --------------------------------------------------------------------------
def worker_environment(settings: Settings) -> dict[str, str]:
    """os.environ plus the AGENTRT_* variables that reproduce `settings` in a worker subprocess.

    The caller's own AGENTRT_*, VAULT_* and BAO_* variables are dropped so that a developer's shell
    cannot point a test worker at a real service; tests that want Vault pass it in `extra_env`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRT_", "VAULT_", "BAO_"))}
    env.update(
        AGENTRT_DATABASE_URL=settings.database_url,
        AGENTRT_REDIS_URL=settings.redis_url,
        AGENTRT_REDIS_PREFIX=settings.redis_prefix,
        AGENTRT_WORKFLOWS_DIR=str(settings.workflows_dir),
        AGENTRT_LEASE_TTL=str(settings.lease_ttl),
        AGENTRT_HEARTBEAT_INTERVAL=str(settings.heartbeat_interval),
        AGENTRT_RECONCILE_INTERVAL=str(settings.reconcile_interval),
        AGENTRT_REDELIVER_AFTER=str(settings.redeliver_after),
        AGENTRT_HTTP_ALLOWED_HOSTS=",".join(settings.http_allowed_hosts),
        AGENTRT_LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    if settings.task_modules is not None:
        env["AGENTRT_TASK_MODULES"] = ",".join(settings.task_modules)
    env["AGENTRT_PYTHON_ISOLATION"] = settings.python_isolation
    if settings.workflow_stdio_tools:
        env["AGENTRT_WORKFLOW_STDIO_TOOLS"] = "1"
    if settings.redis_cluster:
        env["AGENTRT_REDIS_CLUSTER"] = "on"
    if settings.database_read_url:
        env["AGENTRT_DATABASE_READ_URL"] = settings.database_read_url
    if settings.database_pooler != "none":
        env["AGENTRT_DATABASE_POOLER"] = settings.database_pooler
    return env


@dataclass
class WorkerProc:
    """One `python -m worker worker` subprocess, logging to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would, and reap it."""
        if self.alive():
            self.popen.kill()
        self.popen.wait()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait; SIGKILL after `timeout`. Returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def sigstop(self) -> None:
        """Freeze the process (a zombie worker: it holds leases but makes no progress)."""
        self.popen.send_signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        """Wait until `text` is in the log; fails with the log's tail if the worker dies or time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if not self.alive():
                raise AssertionError(
                    f"worker {self.name} exited ({self.popen.returncode}) before logging "
                    f"{text!r}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker {self.name} did not log {text!r} within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)


@dataclass
class WorkerProcs:
    """Factory behind the `worker_procs` fixture: `start()` launches a worker; teardown kills the rest."""

    env: dict[str, str] = field(repr=False)  # os.environ may hold tokens: keep it out of failure reports
    log_dir: Path
    procs: list[WorkerProc] = field(default_factory=list)

    def start(self, extra_env: dict[str, str] | None = None, name: str | None = None) -> WorkerProc:
        name = name or f"w{len(self.procs)}"
        log_path = self.log_dir / f"worker-{name}.log"
        env = {**self.env, "AGENTRT_WORKER_ID": f"test-{name}-{uuid.uuid4().hex[:6]}", **(extra_env or {})}
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = WorkerProc(name=name, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    __call__ = start

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.kill()


@dataclass
class DevSession:
    """A running `agentrt dev --no-console`: what it printed until ready, and the env its `env` file gives."""

    proc: subprocess.Popen[str]
    banner: str
    env: dict[str, str]
    rest: str = ""
    """What it printed after Ctrl-C (filled in when the context exits)."""


@contextlib.contextmanager
def agentrt_dev(data: Path, ready_within: float = 90.0) -> Iterator[DevSession]:
    """Start `agentrt dev --no-console --data-dir DATA` (no caller AGENTRT_/VAULT_ variables), wait until it is
    ready, and stop it with Ctrl-C on exit (killed after 60 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRT_", "VAULT_"))}
    proc = subprocess.Popen([sys.executable, "-m", "worker", "dev", "--no-console", "--data-dir", str(data)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    session = DevSession(proc, "", env)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + ready_within
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "press Ctrl-C" in line or proc.poll() is not None:
                break
        session.banner = "".join(lines)
        env_file = data / "env"
        if env_file.exists():
            session.env = dict(env)
            for raw in env_file.read_text().splitlines():
                key, _, value = raw.removeprefix("export ").partition("=")
                session.env[key] = value.strip("'")
        yield session
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            session.rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            session.rest = proc.communicate()[0]
