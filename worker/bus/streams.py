"""Every Redis key and group name, in one place.

On a Redis Cluster (`Keys(prefix, cluster=True)`, from AGENTRT_REDIS_CLUSTER) every multi-key command must stay
within one hash slot. The only one the runtime sends is the worker's blocking XREADGROUP on the three work
lanes, so on a cluster the lanes share the hash tag `{<prefix>:work}` (`{agentrt:work}`, `{agentrt:work}:high`,
`{agentrt:work}:low`): they live on one node. Everything else is one key per command and spreads by its own
slot: the events stream, each run's live stream (hash tag: the run id), each limit's keys (hash tag: the
limit, worker/limits/redis_buckets.py). Without a cluster the names are what they always were (`agentrt:work`...),
so an upgrade that does not turn the cluster on renames nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

WORK_GROUP = "workers"
EVENTS_MAXLEN = 100_000
WORK_MAXLEN = 1_000_000

LANES: tuple[str, ...] = ("high", "normal", "low")
"""Run priorities, each with a work stream of its own (highest first)."""
LANE_WEIGHTS: dict[str, int] = {"high": 4, "normal": 2, "low": 1}
"""Of every 7 runs a busy worker takes while all three lanes have work: 4 high, 2 normal, 1 low
(worker/bus/intake.py)."""


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    cluster: bool = False
    """Redis is a cluster: the work lanes share one hash tag (see the module docstring)."""

    @property
    def work(self) -> str:
        """Stream of run ids that need a worker (consumer group WORK_GROUP)."""
        return f"{{{self.prefix}:work}}" if self.cluster else f"{self.prefix}:work"

    def work_lane(self, priority: str | None) -> str:
        """The work stream of a priority: `work` for normal (and unknown), `work:high`, `work:low`."""
        return self.work if priority not in ("high", "low") else f"{self.work}:{priority}"

    @property
    def work_lanes(self) -> dict[str, str]:
        """Every work stream by priority, highest first (one consumer group WORK_GROUP on each)."""
        return {lane: self.work_lane(lane) for lane in LANES}

    @property
    def events(self) -> str:
        """Stream of live events for the console and `run --wait` (published after commit)."""
        return f"{self.prefix}:events"

    def live(self, run_id: str) -> str:
        """Stream of a run's live LLM output (`llm.delta` entries, worker/streams): bounded, with a TTL. The
        run id is the key's hash tag, so a run's keys share a Redis Cluster slot."""
        return f"{self.prefix}:live:{{{run_id}}}"

    def done(self, run_id: str) -> str:
        """Pub/sub channel of one run: a message when it has finished (its terminal commit), for `wait_for_run`."""
        return f"{self.prefix}:done:{run_id}"

    @property
    def signals(self) -> str:
        """Pub/sub channel: "a run got a signal" (approval, cancel, child finished)."""
        return f"{self.prefix}:signals"
