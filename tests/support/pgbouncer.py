"""A real PgBouncer in transaction mode, in front of the test Postgres (a pytest plugin: the `pgbouncer` fixture).

The binary is `pgbouncer` from PATH when there is one; otherwise Debian's packages are fetched without root
(`apt-get download pgbouncer libc-ares2`, `dpkg-deb -x`) into a cache reused across runs
(`$XDG_CACHE_HOME/agentrt-tests/pgbouncer`, else `~/.cache/...`), under a lock file so concurrent pytest
processes fetch once, and run with LD_LIBRARY_PATH pointing at the extracted libraries. A library `ldd` still
cannot find after that fails the test with its name; nothing is skipped.

Auth: clients connect as the test Postgres's user with `auth_type = trust` (the embedded Postgres trusts
127.0.0.1 too); the auth file also carries the URL's password, which PgBouncer then uses to log in to the
server, so an external AGENTRT_TEST_DATABASE_URL with a password works as well. Every database name is routed
to the same server (`* = host=... port=...`), so a test's own database is reachable under its own name.

PgBouncer refuses to run as root: as root it is started with `-u` and the unprivileged account the embedded
Postgres uses (worker/devstack/postgres.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import PostgresService
from worker.devstack._process import ChildServer, port_accepts
from worker.devstack.postgres import postgres_bin

PACKAGES = ("pgbouncer", "libc-ares2")
"""What Debian 12 needs beyond a base system with libevent (libssl, libsystemd, libpam are everywhere)."""
LIBRARY_PACKAGES = {"libcares.so.2": "libc-ares2", "libevent-2.1.so.7": "libevent-2.1-7"}
"""A library ldd misses -> the package that ships it (fetched too when missing)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentrt-tests" / "pgbouncer"


@dataclass(frozen=True)
class Binary:
    """The pgbouncer executable and the environment it needs to find its libraries."""

    path: Path
    env: Mapping[str, str]

    def version(self) -> str:
        out = subprocess.run([str(self.path), "--version"], capture_output=True, text=True, env={**self.env},
                             timeout=30, check=True)
        return out.stdout.splitlines()[0].strip()


def _missing_libraries(binary: Path, env: Mapping[str, str]) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env={**env}, timeout=30, check=False)
    return re.findall(r"^\s*(\S+) => not found", out.stdout, flags=re.MULTILINE)


def _download(packages: list[str], into: Path) -> None:
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        result = subprocess.run(["apt-get", "download", *packages], cwd=tmp, capture_output=True, text=True,
                                timeout=600, check=False)
        debs = sorted(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise RuntimeError(
                f"`apt-get download {' '.join(packages)}` failed ({result.returncode}): {result.stderr.strip()}. "
                "Install pgbouncer (it is then found on PATH), or run `apt-get update` once so apt knows it.")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True, timeout=120,
                           capture_output=True)


def find_pgbouncer() -> Binary:
    """pgbouncer from PATH, else from Debian packages extracted into the cache (fetched once, under a lock)."""
    on_path = shutil.which("pgbouncer")
    if on_path:
        return Binary(Path(on_path), dict(os.environ))
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    binary = root / "usr" / "sbin" / "pgbouncer"
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        p for p in (str(libdir), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be fetching right now
        if not binary.exists():
            _download(list(PACKAGES), cache)
        missing = _missing_libraries(binary, env)
        wanted = sorted({LIBRARY_PACKAGES[lib] for lib in missing if lib in LIBRARY_PACKAGES})
        if wanted:
            _download(wanted, cache)
            missing = _missing_libraries(binary, env)
        if missing:
            raise RuntimeError(f"{binary} still misses {', '.join(missing)} after extracting {PACKAGES}: "
                               "add the Debian package that ships it to LIBRARY_PACKAGES")
    return Binary(binary, env)


class PgBouncer(ChildServer):
    """PgBouncer on 127.0.0.1:`port`, pool_mode=transaction, routing every database to `server_url`'s server."""

    name = "pgbouncer"
    stop_signal = signal.SIGTERM  # immediate shutdown: clients see their connections drop, as in a crash

    def __init__(self, binary: Binary, server_url: str, workdir: Path, *, pool_size: int = 4,
                 max_client_conn: int = 400, port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(port, workdir / "pgbouncer.log")
        self.binary = binary
        self.workdir = workdir
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        parts = urllib.parse.urlsplit(server_url)
        self.user = urllib.parse.unquote(parts.username or "postgres")
        self._password = urllib.parse.unquote(parts.password or "")
        self._server_host = parts.hostname or "127.0.0.1"
        self._server_port = parts.port or 5432

    def url(self, database: str) -> str:
        """A client URL for `database`, through the pooler."""
        auth = urllib.parse.quote(self.user, safe="")
        if self._password:
            auth += ":" + urllib.parse.quote(self._password, safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def show(self, what: str) -> list[dict[str, str]]:
        """SHOW POOLS / STATS / CLIENTS ... on the admin console (simple protocol only: through psql), as rows
        keyed by column name."""
        argv = [str(postgres_bin("psql")), "-X", "-q", "-A", "-P", "footer=off", "-v", "ON_ERROR_STOP=1",
                "-d", self.url("pgbouncer"), "-c", f"SHOW {what}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=True).stdout
        lines = [line for line in out.splitlines() if line]
        header = lines[0].split("|") if lines else []
        return [dict(zip(header, line.split("|"), strict=False)) for line in lines[1:]]

    # -- ChildServer hooks ----------------------------------------------------------------------
    def _binary(self) -> Path:
        return self.binary.path

    def _prepare(self) -> None:
        quoted = self._password.replace('"', '""')
        (self.workdir / "users.txt").write_text(f'"{self.user}" "{quoted}"\n')
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.workdir / "users.txt"),
            "admin_users": self.user,
            "pool_mode": "transaction",
            "default_pool_size": str(self.pool_size),
            "min_pool_size": "0",
            "reserve_pool_size": "0",
            "max_client_conn": str(self.max_client_conn),
            "max_db_connections": "0",
            # what idle_in_transaction_session_timeout does without a pooler (README, Scaling out: PgBouncer)
            "idle_transaction_timeout": "60",
            "server_login_retry": "1",
            "ignore_startup_parameters": "",  # none: a startup setting the product sent would fail the connect
            "log_connections": "0",
            "log_disconnections": "0",
        }
        ini = ["[databases]", f"* = host={self._server_host} port={self._server_port}", "", "[pgbouncer]"]
        ini += [f"{key} = {value}" for key, value in settings.items()]
        (self.workdir / "pgbouncer.ini").write_text("\n".join(ini) + "\n")

    def _argv(self) -> list[str]:
        argv = [str(self.binary.path)]
        if os.geteuid() == 0:
            from worker.devstack.postgres import _system_user  # the account the embedded Postgres runs as

            user = _system_user()
            assert user is not None
            argv += ["-u", user.pw_name]
        return [*argv, str(self.workdir / "pgbouncer.ini")]

    def _popen_kwargs(self) -> Mapping[str, object]:
        return {"env": dict(self.binary.env)}

    def _ready(self) -> bool:
        return port_accepts(self.port)


@pytest.fixture(scope="session")
def pgbouncer_binary() -> Binary:
    """The pgbouncer executable (PATH, or Debian packages fetched into the cache)."""
    return find_pgbouncer()


@pytest.fixture
def pgbouncer(pg: PostgresService, pgbouncer_binary: Binary, server_dir: Path) -> Iterator[PgBouncer]:
    """A transaction-mode PgBouncer (default_pool_size 4) in front of the session Postgres; `.url(db)` reaches
    any of its databases through the pooler. Stopped at teardown."""
    bouncer = PgBouncer(pgbouncer_binary, pg.url(), server_dir / "pgbouncer")
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
