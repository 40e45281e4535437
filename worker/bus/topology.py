"""What kind of Redis the runtime talks to, for `agentrt doctor`: the INFO of each server that holds keys (every
primary of a cluster, or the one server), and whether AGENTRT_REDIS_CLUSTER agrees with the server.

A mismatch fails loudly rather than half-working: a plain client on a cluster node gets MOVED for every key in
another node's slots, and a cluster client on a plain server cannot start.
"""

from __future__ import annotations

from typing import Any

from worker.bus.connect import is_cluster
from worker.config import Settings


async def server_infos(redis: Any) -> dict[str, dict[str, Any]]:
    """INFO by server: each primary of a cluster ("host:port"), or the one server ("server")."""
    if not is_cluster(redis):
        return {"server": dict(await redis.info())}
    out: dict[str, dict[str, Any]] = {}
    for node in redis.get_primaries():
        info = await redis.info(target_nodes=node)
        out[node.name] = dict(info.get(node.name, info)) if isinstance(info, dict) else {}
    return out


def node_of(redis: Any, key: str) -> str:
    """The node ("host:port") that serves `key` on a cluster; "server" on a plain Redis."""
    return str(redis.get_node_from_key(key).name) if is_cluster(redis) else "server"


def cluster_mismatch(settings: Settings, info: dict[str, Any]) -> str | None:
    """What to do when the server's `cluster_enabled` and AGENTRT_REDIS_CLUSTER disagree (None when they agree
    or INFO did not say)."""
    enabled = info.get("cluster_enabled")
    if enabled is None:
        return None
    if bool(int(enabled)) and not settings.redis_cluster:
        return ("this Redis is a Redis Cluster node: set AGENTRT_REDIS_CLUSTER=on on every worker and client (the "
                "work streams are named for a cluster then; see README, Scaling out).")
    if not bool(int(enabled)) and settings.redis_cluster:
        return "AGENTRT_REDIS_CLUSTER is on but this Redis is not a cluster: unset it, or point at the cluster."
    return None


def cluster_hint(settings: Settings, exc: BaseException) -> str:
    """A hint to add to a connection failure that looks like the cluster setting is wrong ("" otherwise)."""
    text = str(exc)
    if settings.redis_cluster and "cluster" in text.lower() and "not enabled" in text.lower():
        return " AGENTRT_REDIS_CLUSTER is on but this Redis is not a cluster."
    if not settings.redis_cluster and text.startswith("MOVED"):
        return " This Redis is a cluster: set AGENTRT_REDIS_CLUSTER=on."
    return ""
