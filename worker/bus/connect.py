"""Every Redis client of the runtime is made here: a plain client, or a Redis Cluster client when the operator
says the Redis is a cluster (`AGENTRT_REDIS_CLUSTER=on`, Settings.redis_cluster).

Why a switch and not auto-detection: a cluster client and a plain one name the work streams differently (on a
cluster the three work lanes share one hash tag so one blocking XREADGROUP can wait on all of them, see
`Keys`), and every worker and client of a deployment must agree on the names. A setting that all of them read
is that agreement; `agentrt doctor` tells when the setting and the server disagree.

On a cluster, `AGENTRT_REDIS_URL` names one or more seed nodes: `redis://[:password@]host:port[,host:port...]/0`
(or `rediss://`); the client learns the other nodes from the first seed that answers. A cluster has only
database 0.

What redis-py's async cluster client does differently, and how the runtime copes (tests/reliability/
test_redis_cluster.py runs all of it on a real three-master cluster):

- pipelines are split by node and sent without a transaction (the runtime never asks for one);
- `pipe.publish` and `pipe.evalsha` are refused inside a cluster pipeline by redis-py, but the same commands
  sent with `pipe.execute_command` are routed like any other (EVALSHA by its key, PUBLISH to any node: classic
  pub/sub is broadcast to every node of a cluster), so `pipe_publish` and `pipe_evalsha` are used for both;
- pub/sub: `redis.pubsub()` subscribes on one node; classic PUBLISH reaches subscribers on every node. redis-py's
  cluster pub/sub picks that node from the client's slot map, which a client that has sent nothing yet does not
  have (KeyError): `_Cluster.pubsub` learns the map first.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from worker.bus.streams import Keys
from worker.config import Settings
from worker.errors import ConfigError

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
"""What losing Redis looks like: a cluster client raises RedisClusterException (not a RedisError) when no node
can be reached."""

_SCHEMES = ("redis", "rediss")


class _ClusterPubSub(ClusterPubSub):
    """Cluster pub/sub that works as the first use of a new client (see the module docstring)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.cluster.initialize()  # a no-op once the client knows the slots
        return await super().execute_command(*args, **kwargs)


class _Cluster(RedisCluster):
    def pubsub(self, node: ClusterNode | None = None, host: str | None = None, port: int | None = None,
               **kwargs: Any) -> ClusterPubSub:
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


def is_cluster(redis: Any) -> bool:
    """Whether `redis` is a cluster client (made by `redis_client` with AGENTRT_REDIS_CLUSTER=on)."""
    return isinstance(redis, RedisCluster)


def redis_keys(settings: Settings) -> Keys:
    """The key names this deployment uses (they depend on whether Redis is a cluster)."""
    return Keys(settings.redis_prefix, cluster=settings.redis_cluster)


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(the URL of the first seed, every seed's (host, port)) from a cluster URL; ConfigError when it cannot
    name a cluster."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"AGENTRT_REDIS_URL: a Redis Cluster is reached over TCP; use redis:// or rediss:// "
                          f"(not {parts.scheme}://) with AGENTRT_REDIS_CLUSTER=on")
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(f"AGENTRT_REDIS_URL names database {db}: a Redis Cluster has only database 0 "
                          "(end the URL in /0 or nothing; use AGENTRT_REDIS_PREFIX to share a cluster)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"AGENTRT_REDIS_URL: {item.strip()!r} is not host:port (a cluster URL is "
                              "redis://[:password@]host:port[,host:port...]/0)")
        seeds.append((host.strip("[]"), int(port)))
    first = parts._replace(netloc=(f"{userinfo}@" if userinfo else "") + hosts.split(",")[0].strip(), path="/0")
    return urllib.parse.urlunsplit(first), seeds


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """A client of the deployment's Redis; `options` are redis-py's connection options (timeouts, pool size,
    retry). With AGENTRT_REDIS_CLUSTER=on it is redis-py's async `RedisCluster` (`max_connections` is then per
    node), typed as `Redis` because the runtime uses only commands both offer (see the module docstring)."""
    url = settings.redis_url
    if not settings.redis_cluster:
        if "," in urllib.parse.urlsplit(url).netloc:
            raise ConfigError("AGENTRT_REDIS_URL names several hosts: that is a Redis Cluster's seed list; set "
                              "AGENTRT_REDIS_CLUSTER=on (or name one Redis)")
        return aioredis.from_url(url, **options)
    first, seeds = cluster_seeds(url)
    startup = [ClusterNode(host, port) for host, port in seeds[1:]]
    return cast(aioredis.Redis, _Cluster.from_url(first, startup_nodes=startup, **options))


def pipe_publish(pipe: Any, channel: str, message: str) -> None:
    """PUBLISH queued on a pipeline of either kind of client (see the module docstring)."""
    pipe.execute_command("PUBLISH", channel, message)


def pipe_evalsha(pipe: Any, sha: str, keys: list[str], args: list[Any]) -> None:
    """EVALSHA queued on a pipeline of either kind of client; on a cluster every key must share one slot."""
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
