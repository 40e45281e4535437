"""A primary and a streaming replica on loopback, from the same embedded binaries as the other fixtures.

Replication is synchronous (`synchronous_standby_names = '*'`, `synchronous_commit = on`): a commit is
acknowledged to the client only once the replica has flushed its WAL. That is what lets a failover test
demand "nothing acknowledged is lost": with asynchronous replication the last commits before a crash may
exist on the dead primary only, and a promoted replica would never have them.

The replica is made with `pg_basebackup -R` (standby.signal and `primary_conninfo` written for us) over a
role made for it (`replicator`, REPLICATION; the initdb default pg_hba already admits replication
connections from 127.0.0.1 with trust). Only the primary's command line names a synchronous standby: a
promoted replica has none, so its commits never wait for a standby that does not exist.

`url()` is the multi-host DSN a worker uses to follow a failover
(`postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=read-write`): asyncpg tries
the hosts in order and keeps the first that accepts writes.

Nothing here is a pytest fixture, so a benchmark can use it without pytest.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from worker.devstack.postgres import EmbeddedPostgres, _system_user, postgres_bin, run_sql

REPLICATION_ROLE = "replicator"


class _Node(EmbeddedPostgres):
    """An EmbeddedPostgres with more server settings on its command line."""

    def __init__(self, data_dir: Path, *, extra: dict[str, str], fsync: bool = False) -> None:
        super().__init__(data_dir, fsync=fsync)
        self.extra = extra

    def _argv(self) -> list[str]:
        argv = super()._argv()
        for key, value in self.extra.items():
            argv += ["-c", f"{key}={value}"]
        return argv


class ReplicatedPostgres:
    """`primary` streams synchronously to `replica`; `kill_primary()` then `promote()` is a failover."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root).absolute()
        common = {"wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on", "wal_keep_size": "256MB"}
        self.primary = _Node(self.root / "primary", fsync=fsync, extra={
            **common, "synchronous_standby_names": "*", "synchronous_commit": "on"})
        self.replica = _Node(self.root / "replica", fsync=fsync, extra={**common, "hot_standby_feedback": "on"})
        self.promoted = False

    # -- urls --------------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """The multi-host DSN that follows the writable server (the primary, or the promoted replica)."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}/{database}"
                "?target_session_attrs=read-write")

    def primary_url(self, database: str = "postgres") -> str:
        return self.primary.url(database)

    def replica_url(self, database: str = "postgres") -> str:
        return self.replica.url(database)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Start the primary, clone it into the replica, start the replica and wait until it streams
        synchronously (before that, every commit on the primary would wait)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # Postgres runs as an unprivileged user when we are root
        self.primary.start()
        try:
            self._clone(timeout)
        except BaseException:
            self.stop()
            raise

    def _clone(self, timeout: float) -> None:
        # `local`: no standby exists yet to acknowledge this commit
        run_sql(self.primary.url(), "SET synchronous_commit TO local; "
                f"CREATE ROLE {REPLICATION_ROLE} WITH LOGIN REPLICATION")
        self._base_backup()
        self.replica.start(timeout)
        self.wait_streaming(timeout)

    def _base_backup(self) -> None:
        data = self.replica.data_dir
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        kwargs: dict[str, object] = {}
        user = _system_user()
        if user is not None:  # as root: the data directory and the backup belong to the server's user
            import os

            os.chown(data, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        argv = [str(postgres_bin("pg_basebackup")), "-D", str(data), "-R", "-X", "stream", "-c", "fast",
                "-d", f"host=127.0.0.1 port={self.primary.port} user={REPLICATION_ROLE} application_name=replica"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                                **kwargs)  # type: ignore[call-overload]
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed ({result.returncode}): {result.stderr.strip()}")

    def wait_streaming(self, timeout: float = 60.0) -> None:
        """Until the primary sees the replica as its synchronous standby."""
        deadline = time.monotonic() + timeout
        while True:
            state = run_sql(self.primary.url(), "SELECT sync_state FROM pg_stat_replication").strip()
            if state == "sync":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not become a synchronous standby within {timeout:.0f}s "
                                   f"(sync_state {state!r}); log: {self.replica.log_path}")
            time.sleep(0.1)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on the primary (it is replicated like any other change)."""
        self.primary.create_database(name)

    def kill_primary(self) -> None:
        """SIGKILL the primary and its children, as a crash of its host would."""
        self.primary.kill()

    def promote(self, timeout: float = 60.0) -> None:
        """Make the replica the primary (`pg_promote()`, which waits until it accepts writes)."""
        out = run_sql(self.replica.url(), f"SELECT pg_promote(true, {int(timeout)})", timeout=timeout + 10)
        if out.strip() != "t":
            raise RuntimeError(f"the replica was not promoted within {timeout:.0f}s; log: {self.replica.log_path}")
        self.promoted = True

    def replica_lag_s(self) -> float | None:
        """Seconds since the last transaction the replica replayed (None before any, or after promotion)."""
        out = run_sql(self.replica.url(), "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")
        return float(out) if out.strip() else None

    def stop(self) -> None:
        """Stop both servers (the replica first: a fast shutdown of the primary waits for its walsenders)."""
        for node in (self.replica, self.primary):
            try:
                node.stop(15)
            except Exception:  # a server that will not stop is killed
                node.kill()
