"""PostgreSQL from the `pgserver` wheel, run directly so we choose the TCP port and the lifetime."""

from __future__ import annotations

import functools
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from worker.devstack._process import ChildServer, package_dir, port_accepts

SYSTEM_USER = "pgserver"
"""Postgres refuses to run as root; as root we run it as this system user (created when missing)."""

_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def postgres_bin(name: str) -> Path:
    """Path of one of the binaries (postgres, initdb, psql...) that the pgserver wheel ships."""
    # Found without importing pgserver: its __init__ sets up a runtime dir and a lock file, and warns
    # when XDG_RUNTIME_DIR is unset; we use none of that.
    return package_dir("pgserver", "pgserver") / "pginstall" / "bin" / name


@functools.cache
def _system_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
            text=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    install = postgres_bin("postgres").parent.parent
    _open_prefix(install)
    for sub in ("bin", "lib", "share"):
        _open_tree(install / sub)
    return entry


_R_X = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


def _open_prefix(path: Path) -> None:
    """Let other users traverse every folder above `path` (pytest's tmp root is 0700, for one)."""
    for folder in path.absolute().parents:
        mode = folder.stat().st_mode
        if mode & _R_X != _R_X:
            folder.chmod(mode | _R_X)


def _open_tree(root: Path) -> None:
    """Make a tree readable by other users, keeping each file's own executable bits."""
    for folder, _dirs, files in os.walk(root):
        _add_mode(folder, _R_X)
        for name in files:
            path = os.path.join(folder, name)
            executable = os.stat(path).st_mode & stat.S_IXUSR
            _add_mode(path, _R_X if executable else stat.S_IRGRP | stat.S_IROTH)


def _add_mode(path: str, bits: int) -> None:
    mode = os.stat(path).st_mode
    if mode | bits != mode:
        os.chmod(path, mode | bits)


def quote_ident(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def run_sql(url: str, sql: str, timeout: float = 120.0) -> str:
    """Run SQL through `psql` against `url` (blocking, usable with or without an event loop)."""
    argv = [str(postgres_bin("psql")), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed ({result.returncode}) running {sql!r}: {result.stderr.strip()}")
    return result.stdout


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE `name` (optionally copied from `template`, which must have no open sessions)."""
    sql = f"CREATE DATABASE {quote_ident(name)}"
    if template is not None:
        sql += f" TEMPLATE {quote_ident(template)}"
        if server_version_num(admin_url) >= 150000:
            # FILE_COPY copies the files and checkpoints: for small templates it is about twice as fast
            # as the default WAL_LOG, which writes every page of the copy to the WAL.
            sql += " STRATEGY FILE_COPY"
    run_sql(admin_url, sql)


@functools.cache
def server_version_num(url: str) -> int:
    """The server's version as an integer (160002 for 16.2)."""
    return int(run_sql(url, "SHOW server_version_num").strip())


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS, terminating sessions still connected to it (a killed worker's, say)."""
    run_sql(admin_url, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


class EmbeddedPostgres(ChildServer):
    """A PostgreSQL server in `data_dir`, listening only on 127.0.0.1:`port`.

    initdb runs on first use (trust auth, UTF8, superuser "postgres"); later starts reuse the data.
    The unix socket lives in the data dir (left out when that path is too long for a socket).
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fsync: bool = True,
        log_path: Path | None = None,
    ) -> None:
        data_dir = Path(data_dir).absolute()
        super().__init__(port, Path(log_path) if log_path else data_dir.with_name(data_dir.name + ".log"))
        self.data_dir: Path = data_dir
        """The cluster's data directory (PGDATA)."""
        self.fsync: bool = fsync
        """Off trades crash safety of the OS (not of the process) for speed."""

    def url(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL for `database` over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> None:
        """CREATE DATABASE `name`, optionally from `template` (blocking)."""
        create_database(self.url(), name, template)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS `name`, terminating its sessions first (blocking)."""
        drop_database(self.url(), name)

    # -- ChildServer hooks ----------------------------------------------------------------------
    def _binary(self) -> Path:
        return postgres_bin("postgres")

    def _socket_dir(self) -> str:
        fits = len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= _SOCKET_PATH_MAX
        return str(self.data_dir) if fits else ""

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self._socket_dir(),
            "max_connections": "200",
            "shared_buffers": "128MB",
            "fsync": "on" if self.fsync else "off",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        argv = [str(self._binary()), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _popen_kwargs(self) -> Mapping[str, object]:
        user = _system_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        user = _system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _open_prefix(self.data_dir)
            if self.data_dir.stat().st_uid != user.pw_uid:
                _chown_tree(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        argv = [
            str(postgres_bin("initdb")),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.fsync:
            argv.append("--no-sync")
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, check=False, **self._popen_kwargs()
        )  # type: ignore[call-overload]
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
            raise RuntimeError(
                f"initdb ({argv[0]}) failed for {self.data_dir} ({result.returncode}):\n{output}"
            )

    def _ready(self) -> bool:
        # postmaster.pid's last line turns to "ready" once the server accepts connections (also after
        # crash recovery); the pid check ignores a stale file left by a killed predecessor.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or self._proc is None or lines[0].strip() != str(self._proc.pid):
            return False
        return lines[7].strip() == "ready" and port_accepts(self.port)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
