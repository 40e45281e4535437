"""Fixtures: real Postgres, Redis and OpenBao, from the environment or started from PyPI wheels.

Environment (each optional; without it the fixture starts its own server on a free port):
  AGENTRT_TEST_DATABASE_URL   a Postgres URL whose role may CREATE DATABASE
  AGENTRT_TEST_REDIS_URL      a Redis URL (tests only touch keys under their own prefix)
  AGENTRT_TEST_VAULT_ADDR + AGENTRT_TEST_VAULT_TOKEN   a Vault/OpenBao and a token that may mount engines

Servers start only when a test asks for them: a unit test that requests no service fixture starts
nothing. A server that cannot be reached or started fails the test with the reason; it never skips.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.services import (
    ExternalPostgres,
    ExternalRedis,
    ExternalVault,
    OwnServices,
    PostgresService,
    WorkerProcs,
    check_postgres,
    check_redis,
    delete_prefixed_keys,
    unique_name,
    worker_environment,
)
from worker.config import Settings
from worker.devstack import EmbeddedOpenBao, EmbeddedPostgres, EmbeddedRedis

pytest_plugins = ["tests.support.fixtures_http", "tests.support.api_server", "tests.support.pgbouncer",
                  "tests.support.redis_cluster"]

logger = logging.getLogger(__name__)

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item so teardown can tell whether the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


# -- session servers ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    """A Postgres server for the session: AGENTRT_TEST_DATABASE_URL, or an embedded one (fsync off)."""
    url = os.environ.get("AGENTRT_TEST_DATABASE_URL")
    if url:
        check_postgres(url, "AGENTRT_TEST_DATABASE_URL")
        yield ExternalPostgres(url)
        return
    # Not under pytest's basetemp: pytest makes that 0700 (again at every session start), and Postgres
    # runs as an unprivileged user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="agentrt-test-pg-"))
    server = EmbeddedPostgres(root / "data", fsync=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis | ExternalRedis]:
    """A Redis server for the session: AGENTRT_TEST_REDIS_URL, or an embedded one (no persistence)."""
    url = os.environ.get("AGENTRT_TEST_REDIS_URL")
    if url:
        check_redis(url, "AGENTRT_TEST_REDIS_URL")
        yield ExternalRedis(url)
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedOpenBao | ExternalVault]:
    """A bootstrapped Vault/OpenBao (KV v2 at secret/, transit/, approle/); started on first request.

    Has `.addr` and `.root_token`. Give each test its own secret path (the name of the test, say).
    """
    addr = os.environ.get("AGENTRT_TEST_VAULT_ADDR")
    if addr:
        token = os.environ.get("AGENTRT_TEST_VAULT_TOKEN")
        if not token:
            raise RuntimeError("AGENTRT_TEST_VAULT_ADDR is set but AGENTRT_TEST_VAULT_TOKEN is not")
        vault = ExternalVault(addr, token)
        vault.bootstrap()
        yield vault
        return
    server = EmbeddedOpenBao(log_path=tmp_path_factory.mktemp("openbao") / "openbao.log")
    server.start()
    try:
        server.bootstrap()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_template(pg: PostgresService) -> Iterator[str]:
    """A database with the schema migrations applied once; each test's database is copied from it."""
    from worker.store.migrate import migrate  # imported late: unit tests never need the store

    name = unique_name("agentrt_template")
    pg.create_database(name)
    try:
        asyncio.run(migrate(pg.url(name)))
        yield name
    finally:
        pg.drop_database(name)


# -- per-test resources ---------------------------------------------------------------------------
@pytest.fixture
def database_url(pg: PostgresService, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test; dropped afterwards (its sessions are terminated)."""
    name = unique_name("t")
    pg.create_database(name, template=pg_template)
    yield pg.url(name)
    try:
        pg.drop_database(name)
    except Exception as exc:  # a server a test killed on purpose must not fail the teardown
        logger.warning("could not drop test database %s: %s", name, exc)


@pytest.fixture
def redis_prefix(redis_server: EmbeddedRedis | ExternalRedis) -> Iterator[str]:
    """A key prefix of this test's own (`t-<uuid8>`); its keys are deleted afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_prefixed_keys(redis_server.url(), prefix)


@pytest.fixture
def settings(
    database_url: str, redis_server: EmbeddedRedis | ExternalRedis, redis_prefix: str, tmp_path: Path
) -> Settings:
    """Settings pointing at this test's database and prefix, with timings short enough for tests."""
    workflows = tmp_path / "workflows"
    workflows.mkdir(exist_ok=True)
    return Settings(
        database_url=database_url,
        redis_url=redis_server.url(),
        redis_prefix=redis_prefix,
        workflows_dir=workflows,
        lease_ttl=3.0,
        heartbeat_interval=0.5,
        reconcile_interval=0.5,
        redeliver_after=3.0,
        http_allowed_hosts=("127.0.0.1", "localhost"),
        log_level="DEBUG",
        task_modules=("tests.support", "@workflows"),  # the test task modules, and those beside the workflows
    )


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a worker subprocess that matches `settings`."""
    return worker_environment(settings)


@pytest.fixture
def worker_procs(
    worker_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerProcs]:
    """`worker_procs.start(extra_env=None, name=None)` launches `python -m worker worker`.

    Teardown kills every worker still alive; when the test failed, each worker's log tail is shown.
    """
    procs = WorkerProcs(env=worker_env, log_dir=tmp_path)
    yield procs
    procs.kill_all()
    if _test_failed(request):
        for proc in procs.procs:
            request.node.add_report_section(
                "teardown", f"worker {proc.name} (pid {proc.pid}) log tail", proc.log_tail(80)
            )


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A scratch folder for a server of the test's own, outside pytest's 0700 basetemp (see `pg`)."""
    root = Path(tempfile.mkdtemp(prefix="agentrt-test-srv-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[OwnServices]:
    """Fresh servers of this test's own, to kill and restart: `own_services("postgres")`,
    `own_services.redis(appendonly=True)`... All are stopped at teardown."""
    root = Path(tempfile.mkdtemp(prefix="agentrt-test-own-"))  # outside pytest's 0700 basetemp (see `pg`)
    services = OwnServices(root)
    try:
        yield services
    finally:
        services.stop_all()
        shutil.rmtree(root, ignore_errors=True)
