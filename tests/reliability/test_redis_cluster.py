"""AgentRuntime on a real Redis Cluster: three masters on loopback (tests/support/redis_cluster.py) and
AGENTRT_REDIS_CLUSTER=on.

- the configuration: what a cluster URL may be, and the clear errors when it cannot be one;
- the Redis side piece by piece on the cluster: the publisher (one pipeline split by node, the XADD_ALL script,
  pub/sub across nodes, and the script loaded again after SCRIPT FLUSH), the work intake (the blocking read on
  all three lanes: one slot), a limit's Lua scripts, and `agentrt doctor`, which also fails a setting that
  disagrees with the server;
- end to end: two worker processes and the client run 32 workflows (http step under a rate limit, a streamed
  `llm` step, an approval, a second http step) against the cluster; every run completes, no effect is lost or
  duplicated, the completion push, the live events and the live LLM streams all arrive, and the keys are spread
  over the nodes (the work streams on one, the runs' live streams over all three);
- a fault: the node holding the work streams killed with -9 mid-load and restarted empty loses no run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.limits.support import write_limits
from tests.support.http_sink import HttpSink
from tests.support.llm_peer import LlmPeer, openai_text
from tests.support.redis_cluster import RedisCluster3
from tests.support.runtime import client_for, http_chain, write_workflow
from tests.support.services import WorkerProcs, worker_environment
from worker import runlog as ev
from worker.bus.connect import cluster_seeds, redis_client, redis_keys
from worker.bus.intake import WorkIntake
from worker.bus.publisher import Publisher
from worker.bus.streams import Keys
from worker.client import RuntimeClient
from worker.client.completion import CompletionWatcher
from worker.config import Settings
from worker.devstack import EmbeddedRedis
from worker.errors import ConfigError
from worker.limits.redis_buckets import RedisBuckets, limit_keys
from worker.limits.spec import LimitsFileSpec, buckets
from worker.ops.doctor import check_redis

RUNS = 32
RATE = 10  # requests a second through the `sink` limit
ANSWER = "Refund approved for the order, the customer was told. " * 3


def _settings(cluster: RedisCluster3, **kw: Any) -> Settings:
    return Settings(redis_url=cluster.seeds_url(), redis_cluster=True, redis_prefix=f"rc-{uuid.uuid4().hex[:6]}",
                    **kw)


# -- configuration ---------------------------------------------------------------------------------
def test_a_cluster_url_names_seed_nodes_and_bad_ones_fail_clearly() -> None:
    assert cluster_seeds("redis://:pw@a:7000,b:7001/0") == ("redis://:pw@a:7000/0", [("a", 7000), ("b", 7001)])
    assert cluster_seeds("rediss://a:7000") == ("rediss://a:7000/0", [("a", 7000)])
    for url, says in (("unix:///run/redis.sock", "over TCP"), ("redis://a:7000/3", "only database 0"),
                      ("redis://a:7000,b/0", "is not host:port")):
        with pytest.raises(ConfigError, match=says):
            redis_client(Settings(redis_url=url, redis_cluster=True))
    with pytest.raises(ConfigError, match="AGENTRT_REDIS_CLUSTER=on"):
        redis_client(Settings(redis_url="redis://a:7000,b:7001/0"))
    assert Keys("p").work == "p:work" and Keys("p").work_lane("high") == "p:work:high"  # unchanged without it
    assert Keys("p", cluster=True).work_lanes == {"high": "{p:work}:high", "normal": "{p:work}", "low": "{p:work}:low"}


# -- the pieces on the cluster ---------------------------------------------------------------------
async def test_publisher_intake_completion_and_limits_work_on_the_cluster(redis_cluster: RedisCluster3) -> None:
    settings = _settings(redis_cluster)
    keys = redis_keys(settings)
    nodes = {name: redis_cluster.node_of(name) for name in (keys.work, *keys.work_lanes.values(), keys.events)}
    assert len({nodes[s] for s in keys.work_lanes.values()}) == 1  # one slot: one blocking read waits on all
    redis = redis_client(settings, socket_timeout=10, socket_connect_timeout=5)
    watcher_redis = redis_client(settings, socket_timeout=5)
    watcher = CompletionWatcher(watcher_redis, keys)
    try:
        intake = WorkIntake(redis, keys, "c1")
        assert await intake.ensure_groups()
        publisher = Publisher(redis, keys)
        runs = [str(uuid.uuid4()) for _ in range(12)]
        waits = {r: await watcher.watch(r) for r in runs}  # channels hash to all nodes; PUBLISH is broadcast
        for i, run in enumerate(runs):
            publisher.enqueue(run, ("high", None, "low")[i % 3])
            publisher.event("run", ev.RUN_COMPLETED, run, {"i": i})
            publisher.finished(run)
        await publisher.flush()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in waits.values())), 30)
        assert await redis.xlen(keys.events) == 12
        # a flushed script cache (a restarted node) costs nothing: the script is loaded again, entries in order
        for i in range(3):
            with redis_cluster.client(i) as node:
                node.script_flush()
        for run in runs:
            publisher.event("run", "run.again", run, {})
        await publisher.flush()
        assert publisher.dropped == 0 and await redis.xlen(keys.events) == 24
        # the intake: non-blocking reads (a pipeline split by node), then the blocking read on all lanes at once
        got = await intake.read(free=20, block_ms=200)
        taken = {e[1][b"run"].decode() for entries in got.values() for e in entries}
        assert taken == set(runs)
        empty = await intake.read(free=5, block_ms=200)
        assert not any(empty.values())
        late = str(uuid.uuid4())
        publisher.enqueue(late, "low")
        reader = asyncio.create_task(intake.read(free=5, block_ms=5000))
        await asyncio.sleep(0.3)
        await publisher.flush()
        woke = await asyncio.wait_for(reader, 30)
        assert [e[1][b"run"].decode() for e in woke[keys.work_lane("low")]] == [late]
        # a limit's five scripts on its own slot
        spec = LimitsFileSpec.model_validate({"limits": {"pay": {"requests": "5/s", "concurrency": 2}}}).limits["pay"]
        store = RedisBuckets(redis, settings.redis_prefix)
        grant = await store.acquire(buckets("pay", spec), cost=0, holder="h1", waiter="w1", not_before=0,
                                    rate_done=False, horizon=5, go_now=0.05)
        assert grant.kind == "ok" and grant.held
        status = await store.status("pay")
        assert status.granted == 1 and status.holders == 1
        assert len({redis_cluster.slot_of(k) for k in limit_keys(settings.redis_prefix, "pay")}) == 1
    finally:
        await watcher.close()
        await watcher_redis.aclose()
        await redis.aclose()


async def test_doctor_checks_every_primary_and_fails_a_setting_that_disagrees(
        redis_cluster: RedisCluster3, redis_server: EmbeddedRedis) -> None:
    settings = _settings(redis_cluster)
    check = await check_redis(settings)
    assert check.status in ("ok", "warn"), check  # warn: the test nodes run without AOF
    assert len(check.facts["cluster_primaries"]) == 3, check.facts
    assert check.facts["work_streams_node"] in check.facts["cluster_primaries"]
    off = await check_redis(replace(settings, redis_cluster=False, redis_url=redis_cluster.url()))
    assert off.status == "fail" and any("AGENTRT_REDIS_CLUSTER=on" in d for d in off.details), off
    on_plain = await check_redis(replace(settings, redis_url=redis_server.url()))
    assert on_plain.status == "fail" and any("not a cluster" in d for d in on_plain.details), on_plain


# -- end to end --------------------------------------------------------------------------------------
WORKFLOW = """
name: pay
inputs: {sink: {type: string}, llm: {type: string}}
steps:
  - id: charge
    uses: http
    limit: sink
    with: {method: POST, url: "${{ inputs.sink }}/charge", json: {step: charge}}
    retry: {max_attempts: 10, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
  - id: ask
    uses: llm
    retry: {max_attempts: 10, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
    with: {provider: openai, model: m, base_url: "${{ inputs.llm }}", prompt: Summarize the refund.}
  - id: approve
    uses: approval
    with: {prompt: "Refund?", timeout: 1h}
  - id: notify
    uses: http
    with: {method: POST, url: "${{ inputs.sink }}/notify", json: {ok: true}}
    retry: {max_attempts: 10, initial_interval: 100ms, backoff: 1.5, max_interval: 1s}
output: "${{ steps.ask.output.text }}"
"""


@pytest.fixture
def peer() -> Iterator[LlmPeer]:
    with LlmPeer() as p:
        p.responder = lambda _request: openai_text(ANSWER, usage=(20, 30))
        p.tokens_per_s = 400
        yield p


async def _collect_events(client: RuntimeClient, seen: dict[str, set[str]]) -> None:
    async for event in client.watch_events(last_id="0"):
        if event.run_id:
            seen.setdefault(str(event.run_id), set()).add(event.type)


async def test_runs_on_a_redis_cluster_complete_once_each(redis_cluster: RedisCluster3, database_url: str,
                                                          tmp_path: Path, peer: LlmPeer) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    settings = _settings(redis_cluster, database_url=database_url, workflows_dir=workflows, lease_ttl=3.0,
                         heartbeat_interval=0.5, reconcile_interval=0.5, redeliver_after=3.0,
                         http_allowed_hosts=("127.0.0.1", "localhost"))
    keys = redis_keys(settings)
    write_limits(workflows, f"limits:\n  sink: {{requests: {RATE}/s}}\n")
    write_workflow(settings, "pay.yaml", WORKFLOW)
    env = {**worker_environment(settings), "AGENTRT_REDIS_CLUSTER": "on", "AGENTRT_LOG_LEVEL": "INFO"}
    procs = WorkerProcs(env=env, log_dir=tmp_path)
    seen: dict[str, set[str]] = {}
    with HttpSink() as sink:
        try:
            workers = [procs.start(name=f"c{i}") for i in range(2)]
            for w in workers:
                await asyncio.to_thread(w.wait_for_log, "started", 90)
            async with client_for(settings) as client:
                events = asyncio.create_task(_collect_events(client, seen))
                t0 = time.monotonic()
                ids = [str(r) for r in await client.start_runs("pay", [{"sink": sink.url, "llm": peer.openai_url}
                                                                       for _ in range(RUNS)])]
                pushed = {r: await client.completions.watch(r) for r in ids}
                approved: set[str] = set()
                deadline = time.monotonic() + 180
                while len(approved) < RUNS:
                    assert time.monotonic() < deadline, f"{RUNS - len(approved)} runs never asked for approval"
                    for task in await client.list_tasks(status="pending"):
                        if task.run_id not in approved:
                            await client.decide(task.task_id, approve=True, by="alice")
                            approved.add(str(task.run_id))
                    await asyncio.sleep(0.2)
                # `run --wait`: the end of each run is pushed (pub/sub on the cluster), not found by polling
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in pushed.values())), 120)
                finals = [await client.wait_for_run(r, timeout=60) for r in ids]
                elapsed = time.monotonic() - t0
                outputs = [(await client.get_run(r)).output for r in ids]
                live = [e async for e in client.follow_live(ids[0])]
                await asyncio.sleep(1.0)  # the live events of the last commits
                events.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await events
                report = await client.limits()
        finally:
            for w in procs.procs:
                w.stop(timeout=30)
        for w in procs.procs:  # nothing went wrong quietly (a cluster error caught and logged, say)
            assert "Traceback" not in w.log_text() and '"level":"ERROR"' not in w.log_text(), w.log_tail(40)
        charges = [r.at for r in sink.requests if r.path == "/charge"]
        completed = sum(f.status.value == "completed" for f in finals)
        figures = {
            "runs": RUNS, "completed": completed, "seconds": round(elapsed, 1),
            "charge_effects": sink.distinct_effects("/charge"), "notify_effects": sink.distinct_effects("/notify"),
            "duplicated_requests": sink.duplicate_requests("/charge") + sink.duplicate_requests("/notify"),
            "lost_effects": 2 * RUNS - sink.distinct_effects("/charge") - sink.distinct_effects("/notify"),
            "charge_rate_per_s": round((len(charges) - 1) / (max(charges) - min(charges)), 1),
            "live_events_runs": sum(ev.RUN_COMPLETED in seen.get(r, set()) for r in ids),
            "llm_requests": len(peer.requests),
        }
        by_node = {"work": redis_cluster.node_of(keys.work), "events": redis_cluster.node_of(keys.events),
                   "limit sink": redis_cluster.node_of(limit_keys(settings.redis_prefix, "sink")[0])}
        live_keys = redis_cluster.keys_by_node(f"{settings.redis_prefix}:live:*")
        lanes = redis_cluster.keys_by_node(f"{{{settings.redis_prefix}:work}}*")
        print("\nredis cluster e2e:", figures)  # noqa: T201 - the figures, with -s
        print("nodes:", by_node, "live streams per node:",  # noqa: T201
              {n: len(k) for n, k in live_keys.items()},
              "work lanes per node:", {n: k for n, k in lanes.items() if k})
    assert completed == RUNS and all(o == ANSWER for o in outputs), (figures, outputs[:2])
    assert figures["duplicated_requests"] == 0 and figures["lost_effects"] == 0, figures
    assert figures["charge_effects"] == figures["notify_effects"] == RUNS, figures
    assert figures["charge_rate_per_s"] <= RATE * 1.3, figures  # the limit's buckets on the cluster pace it
    assert figures["live_events_runs"] == RUNS, figures
    assert "".join(e.text or "" for e in live) == ANSWER
    assert sum(1 for k in live_keys.values() if k) >= 2, live_keys  # per-run streams spread over the nodes
    assert sum(len(k) for k in live_keys.values()) == RUNS
    assert [n for n, k in lanes.items() if k] == [by_node["work"]], lanes  # the work lanes: one slot, one node
    (sink_limit,) = [lim for lim in report.limits if lim.name == "sink"]
    assert report.redis_error is None and sink_limit.granted == RUNS, report


async def test_a_cluster_node_killed_and_restarted_empty_loses_no_run(database_url: str, tmp_path: Path,
                                                                       server_dir: Path) -> None:
    """The node that holds the work streams is killed with -9 mid-load and comes back empty (no AOF) 3 s later; half
    of the runs are started while it is down (their work entries cannot be written). The whole cluster refuses
    commands meanwhile (full coverage), the worker rides it out, the consumer groups are made again and the
    reconciler re-derives the work from Postgres."""
    runs, steps = 20, 3
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    with RedisCluster3(server_dir) as cluster, HttpSink() as sink:
        settings = _settings(cluster, database_url=database_url, workflows_dir=workflows, lease_ttl=3.0,
                             heartbeat_interval=0.5, reconcile_interval=0.5, redeliver_after=3.0,
                             http_allowed_hosts=("127.0.0.1", "localhost"))
        write_workflow(settings, "chain.yaml", http_chain(steps))
        for i in range(1, steps + 1):
            sink.set_delay(f"/step{i}", 0.3)
        victim = cluster.node_of(redis_keys(settings).work)
        procs = WorkerProcs(env={**worker_environment(settings), "AGENTRT_REDIS_CLUSTER": "on",
                                 "AGENTRT_LOG_LEVEL": "INFO"}, log_dir=tmp_path)
        try:
            worker = procs.start(name="k0")
            await asyncio.to_thread(worker.wait_for_log, "started", 90)
            async with client_for(settings) as client:
                ids = [str(r) for r in await client.start_runs("chain", [{"sink": sink.url}] * (runs // 2))]
                assert await sink.wait_for_async(lambda s: s.count() >= runs // 2, 60)
                cluster.nodes[victim].kill()
                effects_at_kill = sink.distinct_effects()
                down = time.monotonic()
                ids += [str(r) for r in await client.start_runs("chain", [{"sink": sink.url}] * (runs - runs // 2))]
                started_while_down_s = time.monotonic() - down
                await asyncio.sleep(max(0.0, 3.0 - started_while_down_s))
                await asyncio.to_thread(cluster.nodes[victim].start)
                await asyncio.to_thread(cluster.wait_ok, 90)
                t0 = time.monotonic()
                finals = [await client.wait_for_run(r, timeout=120) for r in ids]
                recovered_s = time.monotonic() - t0
            assert worker.alive(), worker.log_tail(40)
        finally:
            for w in procs.procs:
                w.stop(timeout=30)
        figures = {"runs": runs, "completed": sum(f.status.value == "completed" for f in finals),
                   "effects_at_kill": effects_at_kill, "distinct_effects": sink.distinct_effects(),
                   "expected_effects": runs * steps, "duplicate_requests": sink.duplicate_requests(),
                   "starting_runs_while_down_s": round(started_while_down_s, 1),
                   "finished_after_restart_s": round(recovered_s, 1)}
        print("\nredis cluster node kill:", figures)  # noqa: T201 - the figures, with -s
    assert figures["completed"] == runs, figures
    assert figures["distinct_effects"] == figures["expected_effects"], figures
    assert figures["effects_at_kill"] < figures["expected_effects"], figures  # the kill landed mid-load
