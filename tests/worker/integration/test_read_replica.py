"""The read replica (AGENTRT_DATABASE_READ_URL) on a real streaming replica (tests/support/replica.py).

The replica's WAL replay is paused (`pg_wal_replay_pause()`) to make it deterministically behind: what the
listings then show, what the decisions and read-your-write paths see, and the lag the client, the CLI and
`agentrt doctor` report. Writes cannot reach the replica unnoticed: it refuses every write, so each write in
these tests succeeding means it went to the primary.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_server import bearer, make_token, start_api, stop_api
from tests.support.replica import ReplicatedPostgres
from tests.support.services import worker_environment
from worker.client import RuntimeClient
from worker.config import Settings, check_failover_dsn
from worker.devstack import EmbeddedRedis
from worker.devstack.postgres import run_sql
from worker.errors import ConfigError
from worker.store.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parents[3]
HELLO = """
name: hello
steps:
  - {id: rest, uses: python, with: {function: "tests.support.wf_funcs:noop"}}
"""


@pytest.fixture(scope="module")
def replicated() -> Iterator[ReplicatedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="agentrt-test-replica-"))
    pair = ReplicatedPostgres(root)
    pair.start()
    try:
        pair.create_database("agentrt")
        asyncio.run(migrate(pair.primary_url("agentrt")))
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def read_settings(replicated: ReplicatedPostgres, redis_server: EmbeddedRedis, redis_prefix: str,
                  tmp_path: Path) -> Settings:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "hello.yaml").write_text(HELLO)
    return Settings(database_url=replicated.primary_url("agentrt"), redis_url=redis_server.url(),
                    redis_prefix=redis_prefix, workflows_dir=workflows, task_modules=("tests.support",),
                    database_read_url=replicated.replica_url("agentrt"))


@pytest.fixture
async def client(read_settings: Settings, replicated: ReplicatedPostgres) -> AsyncIterator[RuntimeClient]:
    c = await RuntimeClient.connect(read_settings)
    try:
        yield c
    finally:
        await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_resume()")
        await c.close()


async def _until(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def test_listings_read_the_replica_and_decisions_the_primary(client: RuntimeClient,
                                                                   replicated: ReplicatedPostgres) -> None:
    assert await client.reader.fetchval("SELECT inet_server_port()") == replicated.replica.port
    assert await client.pool.fetchval("SELECT inet_server_port()") == replicated.primary.port

    # replicated: a run started on the primary shows in the listings once the replica has replayed it
    first = await client.start("hello")
    await _until(lambda: _listed(client, first.run_id))
    replica = await client.read_replica()
    assert replica is not None and replica.standby and replica.error is None
    assert replica.lag_s is not None and replica.lag_s < 5, replica

    # behind: replay paused, a new run is on the primary only
    await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_pause()")
    second = await client.start("hello")  # a write: the replica would refuse it
    assert not await _listed(client, second.run_id)  # the listing is the replica's: it does not have it yet
    counts = await client.count_runs()
    assert sum(counts.values()) == 1, counts
    # read-your-write: the run's own page and the decisions read the primary
    detail = await client.get_run(second.run_id)
    assert detail.summary.run_id == second.run_id
    assert second.run_id in {r.run_id for r in await client.matching_runs(workflow="hello")}
    cancelled = await client.cancel(second.run_id, by="ops")  # a decision, then a write: on the primary
    assert cancelled.run_id == second.run_id
    assert await client.pool.fetchval("SELECT cancel_requested OR status = 'cancelled' FROM runs WHERE run_id = $1",
                                      second.run_id)

    # the lag grows while replay is paused, and says so
    await asyncio.sleep(2.5)
    replica = await client.read_replica()
    assert replica is not None and replica.lag_s is not None and replica.lag_s >= 2.0, replica
    assert replica.text() == f"replica, {replica.lag_s:.0f} s behind"

    await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_resume()")
    await _until(lambda: _listed(client, second.run_id))
    replica = await client.read_replica()
    assert replica is not None and replica.lag_s is not None and replica.lag_s < 2.0, replica


async def _listed(client: RuntimeClient, run_id: str) -> bool:
    return run_id in {r.run_id for r in await client.list_runs(limit=100)}


async def test_cli_runs_and_doctor_report_the_replica_and_its_lag(read_settings: Settings,
                                                                  replicated: ReplicatedPostgres) -> None:
    env = worker_environment(read_settings)
    env["AGENTRT_DATABASE_READ_URL"] = replicated.replica_url("agentrt")
    await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_pause()")
    try:
        run_sql(replicated.primary_url("agentrt"),  # a commit the replica has received but not replayed
                "CREATE TABLE IF NOT EXISTS lag_probe (at timestamptz); INSERT INTO lag_probe VALUES (now())")
        await asyncio.sleep(2.5)
        runs = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "worker", "runs"], cwd=REPO_ROOT,
                                       env=env, capture_output=True, text=True, timeout=120, check=False)
        assert runs.returncode == 0, runs.stderr
        assert "(replica, " in runs.stderr and " s behind)" in runs.stderr, runs.stderr
        doctor = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "worker", "doctor", "--json", "--check", "postgres"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_resume()")
    pg = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "postgres")
    assert pg["facts"]["read_replica_url"].endswith(f":{replicated.replica.port}/agentrt"), pg
    assert pg["facts"]["read_replica_lag_s"] >= 2.0, pg
    assert any("read replica" in line and "s behind" in line for line in pg["details"]), pg


async def test_the_api_reads_the_replica_and_says_how_far_behind_it_is(
        client: RuntimeClient, read_settings: Settings, replicated: ReplicatedPostgres, tmp_path: Path) -> None:
    token = await make_token(read_settings, "reader", "runs:read")
    server = await asyncio.to_thread(start_api, read_settings, tmp_path / "api.log",
                                     {"AGENTRT_DATABASE_READ_URL": replicated.replica_url("agentrt")})
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(token), timeout=30) as api:
            await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_pause()")
            behind = await client.start("hello")
            await asyncio.sleep(2.5)
            listing = await api.get("/v1/runs")
            assert listing.status_code == 200, listing.text
            assert behind.run_id not in {r["run_id"] for r in listing.json()["runs"]}  # the replica's view
            assert float(listing.headers["X-AgentRT-Replica-Lag"]) >= 2.0
            assert listing.headers["X-AgentRT-Replica"].startswith("replica, ")
            assert listing.headers["X-AgentRT-Replica"].endswith(" s behind")
            one = await api.get(f"/v1/runs/{behind.run_id}")  # its own page: read from the primary
            assert one.status_code == 200 and one.json()["run_id"] == behind.run_id
            assert "X-AgentRT-Replica" in one.headers
    finally:
        await asyncio.to_thread(run_sql, replicated.replica_url(), "SELECT pg_wal_replay_resume()")
        await asyncio.to_thread(stop_api, server)


async def test_an_unreachable_read_url_is_a_clear_error(read_settings: Settings) -> None:
    from dataclasses import replace

    from worker.devstack import free_port
    from worker.errors import StoreError

    bad = replace(read_settings, database_read_url=f"postgresql://postgres@127.0.0.1:{free_port()}/agentrt")
    with pytest.raises(StoreError, match="AGENTRT_DATABASE_READ_URL"):
        await RuntimeClient.connect(bad)


def test_a_multi_host_url_must_ask_for_the_writable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGTARGETSESSIONATTRS", raising=False)
    check_failover_dsn("postgresql://u@db:5432/agentrt", "AGENTRT_DATABASE_URL")  # one host: nothing to choose
    check_failover_dsn("postgresql://u@a:5432,b:5432/agentrt?target_session_attrs=read-write", "X")
    check_failover_dsn("postgresql://u@a:5432,b:5432/agentrt?target_session_attrs=primary", "X")
    with pytest.raises(ConfigError, match="target_session_attrs=read-write"):
        check_failover_dsn("postgresql://u@a:5432,b:5432/agentrt", "AGENTRT_DATABASE_URL")
    with pytest.raises(ConfigError, match="target_session_attrs"):
        check_failover_dsn("postgresql:///agentrt?host=a,b&target_session_attrs=any", "AGENTRT_DATABASE_URL")
    monkeypatch.setenv("AGENTRT_DATABASE_URL", "postgresql://u@a:5432,b:5432/agentrt")
    with pytest.raises(ConfigError):
        Settings.from_env()
