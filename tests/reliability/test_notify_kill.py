"""kill -9 of the worker delivering a notification, while the receiver holds the request open: another worker
delivers it after the dead one's claim runs out, with the same id (the receiver deduplicates); and every kind,
`worker.lost` for the killed worker's runs included, arrives signed, one notification id each.

Real `agentrt worker` subprocesses, Postgres, Redis, OpenBao and a local HTTP receiver.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support.http_sink import HttpSink
from tests.support.notify_receiver import NotifyReceiver, notify_yaml
from tests.support.runtime import client_for, eventually, write_workflow
from tests.support.services import WorkerProcs
from tests.support.vault_support import uid, write_secret
from worker.config import Settings
from worker.notify.notices import notification_id

ASK = """
name: ask
steps:
  - {id: approve, uses: approval, with: {prompt: "Ship it?", timeout: 14s, on_timeout: escalate}}
"""
BOOM = """
name: boom
steps:
  - {id: pay, uses: http, with: {url: "http://127.0.0.1:1/pay"}, retry: {max_attempts: 1}}
"""
SLOW = """
name: slow
inputs: {sink: {type: string}}
steps:
  - {id: call, uses: http, with: {method: POST, url: "${{ inputs.sink }}/slow"}, timeout: 30s}
"""


async def test_kill9_mid_delivery_is_delivered_by_another_worker(settings: Settings, vault_server: Any,
                                                                 worker_procs: WorkerProcs,
                                                                 http_sink: HttpSink) -> None:
    tag = uid()
    write_secret(vault_server, f"agentrt/notify/hook-{tag}", {"signing_secret": f"sign-{tag}"})
    http_sink.set_delay("/slow", 6.0)
    env = {"VAULT_ADDR": vault_server.addr, "VAULT_TOKEN": vault_server.root_token}
    with NotifyReceiver(secret=f"sign-{tag}") as rx:
        (settings.workflows_dir / "notify.yaml").write_text(
            notify_yaml(rx.url, f"hook-{tag}", expiring_before="5s", timeout="2s"))
        for name, text in (("ask.yaml", ASK), ("boom.yaml", BOOM), ("slow.yaml", SLOW)):
            write_workflow(settings, name, text)
        procs = {n: worker_procs.start(extra_env=env, name=n) for n in ("a", "b")}
        for p in procs.values():
            p.wait_for_log(f"worker test-{p.name}", timeout=30)
        async with client_for(settings) as client:
            for _ in range(12):
                await client.start_run("slow", {"sink": http_sink.url})

            async def both_hold_runs() -> bool:
                owners = await client.pool.fetch("SELECT DISTINCT lease_owner FROM runs WHERE lease_owner IS NOT NULL")
                return len(owners) == 2

            await eventually(both_hold_runs, 20, what="both workers holding slow runs")
            rx.hold_next(1)  # the first delivery stays open: its worker is killed while it waits for the answer
            ask = await client.start_run("ask")
            assert await rx.wait_for_async(lambda r: r.held == 1, 20)
            (held,) = rx.snapshot()
            claimant = await client.pool.fetchval(
                "SELECT claimed_by FROM notifications WHERE notification_id = $1", held.notification_id)
            victim = next(p for p in procs.values() if claimant.startswith(f"test-{p.name}-"))
            holding = await client.pool.fetchval("SELECT count(*) FROM runs WHERE lease_owner = $1", claimant)
            victim.kill()
            rx.release()  # the answer goes nowhere: the sender is dead
            assert holding > 0, "the killed worker held no run (no worker.lost to expect)"
            boom = await client.start_run("boom")
            assert await rx.wait_for_async(lambda r: len(r.kinds()) == 5, 60), (rx.kinds(), _logs(procs))

            async def all_delivered() -> bool:
                return all(n.status == "delivered" for n in await client.list_notifications())

            await eventually(all_delivered, 20, what="every row delivered")
            task_id = await client.pool.fetchval("SELECT task_id::text FROM human_tasks WHERE run_id = $1", ask)
            listed = await client.list_notifications()
    got = rx.snapshot()
    assert all(d.verified for d in got), [d.error for d in got]
    assert held.kind == "task.created" and held.notification_id == notification_id("task.created", task_id)
    again = [d for d in got if d.notification_id == held.notification_id]
    assert len(again) == 2 and again[1].headers["x-notification-attempt"] == "2"  # the same id, once more
    assert all(d.doc is not None and d.doc["id"] == held.notification_id for d in again)
    ids = {d.notification_id: d.kind for d in got}
    assert Counter(ids.values()) == Counter({"task.created": 1, "task.expiring": 1, "task.escalated": 1,
                                             "run.failed": 1, "worker.lost": 1}), ids
    assert ids[notification_id("run.failed", boom)] == "run.failed"
    lost = next(d.doc for d in got if d.kind == "worker.lost")
    assert lost is not None and lost["worker"]["lost"] == claimant
    assert lost["worker"]["run_count"] == holding, (lost, holding)  # the takeovers of one death, in one notification
    duplicates = Counter(d.notification_id for d in got)
    assert [i for i, n in duplicates.items() if n > 1] == [held.notification_id]  # only the one in flight
    row = next(n for n in listed if n.notification_id == held.notification_id)
    assert row.attempts == 2 and row.status == "delivered"


def _logs(procs: dict[str, Any]) -> str:
    return "\n".join(f"--- {n}\n{p.log_tail(30)}" for n, p in procs.items())
