"""RuntimeClient, part replica: the optional read replica (AGENTRT_DATABASE_READ_URL) and how far behind it is.

With a read URL the client keeps a second, small pool (`ClientBase.reader`) on it, and the read-only screens
and listings use it: runs (list, counts, detail, events), spans and step logs, the approvals inbox, workers.
Everything that decides or writes (starts, cancels, approvals, admissions, replays, bulk actions, `run --wait`)
stays on the primary, and so does a read that must see a write just made: a run the replica does not have yet
is read from the primary instead (`read_run_from`).

A replica shows the past, so where it matters the client says how far: `read_replica()` returns the lag as
`now() - pg_last_xact_replay_timestamp()` while the replica has WAL it has not replayed, or is cut off from its
primary; a replica that has replayed everything it received from a live stream is 0 s behind (the replay
timestamp alone would grow on an idle primary, where there is nothing to be behind on).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from worker.client.base import ClientBase
from worker.store.migrate import redact_dsn

_LAG_SQL = """
SELECT pg_is_in_recovery() AS standby,
       CASE WHEN NOT pg_is_in_recovery() THEN 0::float8
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
                 AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0::float8
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS lag
"""


@dataclass(frozen=True, slots=True)
class ReadReplica:
    """Where the client's reads go when AGENTRT_DATABASE_READ_URL is set, and how stale they may be."""

    url: str
    """The read URL, password redacted."""
    standby: bool | None
    """True: a replica in recovery; False: the URL reaches a primary (a promoted replica, say); None: unknown."""
    lag_s: float | None
    """Seconds behind the primary (0 when caught up); None when unknown (unreachable, nothing replayed yet)."""
    error: str | None = None
    """Why the replica could not be asked."""

    def text(self) -> str:
        """For a header or a status line: "replica, 3 s behind", "replica, up to date", ..."""
        if self.error is not None:
            return f"replica, unreachable: {self.error}"
        if self.standby is False:
            return "replica URL reaches a primary, not a replica"
        if self.lag_s is None:
            return "replica, lag unknown"
        if self.lag_s < 1.0:
            return "replica, up to date"
        return f"replica, {self.lag_s:.0f} s behind"


async def replica_lag(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[bool, float | None]:
    """(in recovery, seconds behind) of the server `conn` reaches (see the module docstring)."""
    row = await conn.fetchrow(_LAG_SQL)
    assert row is not None
    lag = row["lag"]
    return bool(row["standby"]), None if lag is None else max(0.0, float(lag))


class ReplicaApi(ClientBase):
    """The read replica's state, for the CLI's listings, the console's runs header and `agentrt doctor`."""

    async def read_replica(self) -> ReadReplica | None:
        """None without a read URL; else the replica's lag (or why it could not be asked)."""
        url = self.settings.database_read_url
        if url is None or self.reader is self.pool:
            return None
        try:
            standby, lag = await replica_lag(self.reader)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the lag is informational
            return ReadReplica(redact_dsn(url), None, None, f"{type(exc).__name__}: {exc}")
        return ReadReplica(redact_dsn(url), standby, lag)
