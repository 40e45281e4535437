"""`uses: wait`: a run parks until an outside event with its name and key arrives, or its timeout.

Real worker, Postgres and Redis. The races the issue names: event first, wait first, both at once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.runtime import client_for, eventually, running_worker, wait_status, write_workflow
from tests.support.services import REPO_ROOT, worker_environment
from worker.client import RuntimeClient
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.errors import DefinitionError

REPLY = """
    name: reply
    inputs:
      ticket: {type: string}
    steps:
      - id: hold
        uses: wait
        with: {event: customer.replied, key: "${{ inputs.ticket }}", timeout: 60s}
      - id: after
        uses: set
        with:
          got: "${{ steps.hold.output.received }}"
          text: "${{ steps.hold.output.event.data.text if steps.hold.output.received else 'none' }}"
    """


async def _waiting(client: RuntimeClient, run_id: str, count: int = 1) -> None:
    async def check() -> bool:
        return len(await client.open_waits(run_id=run_id)) == count

    await eventually(check, 20, what=f"run {run_id} waits for an event")


async def _output(client: RuntimeClient, run_id: str) -> Any:
    await wait_status(client, run_id, "completed")
    return (await client.get_run(run_id)).output


async def test_wait_first_then_the_event_resumes_the_run(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("reply", {"ticket": "T-1"})
        await _waiting(client, run_id)
        summary = (await client.get_run(run_id)).summary
        assert summary.status.value == "waiting" and summary.waiting_on == "event customer.replied key T-1"
        assert summary.wake_at is not None  # the deadline: the run wakes by itself then
        other = await client.send_event("customer.replied", "T-2", {"text": "not for you"})
        assert other.delivered_to == ()
        sent = await client.send_event("customer.replied", "T-1", {"text": "thanks!"})
        assert sent.delivered_to == (run_id,)
        assert await _output(client, run_id) == {"got": True, "text": "thanks!"}
        hold = next(s for s in (await client.get_run(run_id)).steps if s.step_id == "hold")
        assert hold.output["event"]["event_id"] == sent.event_id and hold.output["event"]["key"] == "T-1"


async def test_an_event_that_arrives_first_is_kept_for_the_wait(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    async with client_for(settings) as client:
        await client.register_local("reply")
        early = await client.send_event("customer.replied", "T-9", {"text": "early bird"})
        assert early.delivered_to == ()
        run_id = await client.start_run("reply", {"ticket": "T-9"})
        async with running_worker(settings):
            assert await _output(client, run_id) == {"got": True, "text": "early bird"}


async def test_lookback_zero_takes_only_events_after_the_wait_began(settings: Settings) -> None:
    write_workflow(settings, "strict.yaml", """
        name: strict
        steps:
          - {id: hold, uses: wait, with: {event: door.opened, key: front, timeout: 1s, lookback: 0s}}
        """)
    async with client_for(settings) as client:
        await client.register_local("strict")
        await client.send_event("door.opened", "front")
        run_id = await client.start_run("strict")
        async with running_worker(settings):
            assert await _output(client, run_id) == {"received": False}


async def test_events_and_waits_racing_never_lose_one(settings: Settings) -> None:
    """40 runs reach their wait while their events are sent at the same moment: each gets its own, once."""
    write_workflow(settings, "reply.yaml", REPLY)
    async with running_worker(settings), client_for(settings) as client:
        await client.register_local("reply")
        tickets = [f"R-{i}" for i in range(40)]
        starts = asyncio.gather(*(client.start_run("reply", {"ticket": t}) for t in tickets))
        sends = asyncio.gather(*(client.send_event("customer.replied", t, {"text": t}) for t in tickets))
        run_ids, deliveries = await asyncio.gather(starts, sends)
        outputs = await asyncio.gather(*(_output(client, r) for r in run_ids))
        assert outputs == [{"got": True, "text": t} for t in tickets]
        # each event reached at most its own run live; the rest found it in the window
        for run_id, delivery in zip(run_ids, deliveries, strict=True):
            assert set(delivery.delivered_to) <= {run_id}


async def test_the_timeout_resumes_with_received_false_and_a_late_event_reaches_nobody(settings: Settings) -> None:
    write_workflow(settings, "short.yaml", """
        name: short
        steps:
          - {id: hold, uses: wait, with: {event: payment.settled, key: P-1, timeout: 1s, lookback: 0s}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("short")
        assert await _output(client, run_id) == {"received": False}
        late = await client.send_event("payment.settled", "P-1")
        assert late.delivered_to == ()


async def test_one_event_resumes_every_run_waiting_for_it(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    write_workflow(settings, "anykey.yaml", """
        name: anykey
        steps:
          - {id: hold, uses: wait, with: {event: customer.replied, timeout: 60s}}
        """)
    async with running_worker(settings), client_for(settings) as client:
        runs = [await client.start_run("reply", {"ticket": "T-5"}) for _ in range(3)]
        anyone = await client.start_run("anykey")
        for r in [*runs, anyone]:
            await _waiting(client, r)
        listed = await client.open_waits(name="customer.replied")
        assert {w.run_id for w in listed} == {*runs, anyone}
        assert {w.key for w in listed} == {"T-5", None}
        sent = await client.send_event("customer.replied", "T-5", {"text": "all of you"})
        assert set(sent.delivered_to) == {*runs, anyone}
        for r in runs:
            assert await _output(client, r) == {"got": True, "text": "all of you"}
        assert (await _output(client, anyone))["received"] is True


async def test_an_event_is_delivered_to_a_run_once_even_when_it_waits_again(settings: Settings) -> None:
    write_workflow(settings, "twice.yaml", """
        name: twice
        steps:
          - {id: first, uses: wait, with: {event: msg, key: k, timeout: 30s}}
          - {id: second, uses: wait, with: {event: msg, key: k, timeout: 2s}}
        output:
          first: "${{ steps.first.output.event.data.n }}"
          second: "${{ steps.second.output.received }}"
        """)
    async with client_for(settings) as client:
        await client.register_local("twice")
        await client.send_event("msg", "k", {"n": 1})
        run_id = await client.start_run("twice")
        async with running_worker(settings):
            assert await _output(client, run_id) == {"first": 1, "second": False}


async def test_a_parked_wait_survives_the_worker_and_a_cancel_closes_it(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    async with client_for(settings) as client:
        async with running_worker(settings):
            run_id = await client.start_run("reply", {"ticket": "T-3"})
            doomed = await client.start_run("reply", {"ticket": "T-4"})
            await _waiting(client, run_id)
            await _waiting(client, doomed)
        # no worker at all: the event is recorded and the run resumes when one starts
        sent = await client.send_event("customer.replied", "T-3", {"text": "while you were out"})
        assert sent.delivered_to == (run_id,)
        await client.cancel(doomed, reason="customer left")
        async with running_worker(settings):
            assert await _output(client, run_id) == {"got": True, "text": "while you were out"}
            await wait_status(client, doomed, "cancelled")
        assert await client.open_waits(run_id=doomed) == []
        assert (await client.send_event("customer.replied", "T-4")).delivered_to == ()


def test_waits_and_send_event_from_the_cli(settings: Settings) -> None:
    write_workflow(settings, "reply.yaml", REPLY)
    env = worker_environment(settings)

    def agentrt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    async def start_and_park() -> str:
        async with running_worker(settings), client_for(settings) as client:
            run_id = await client.start_run("reply", {"ticket": "T-8"})
            await _waiting(client, run_id)
            return run_id

    run_id = asyncio.run(start_and_park())
    listed = agentrt("waits")
    assert listed.returncode == 0, listed.stderr
    assert run_id[:8] in listed.stdout and "customer.replied" in listed.stdout and "T-8" in listed.stdout
    rows = json.loads(agentrt("waits", "--event", "customer.replied", "--json").stdout)
    assert [r["run_id"] for r in rows] == [run_id] and rows[0]["key"] == "T-8"
    sent = agentrt("send-event", "customer.replied", "--key", "T-8", "--data", '{"text": "hi"}')
    assert sent.returncode == 0 and f"resumed run {run_id}" in sent.stdout
    assert "no run is waiting" in agentrt("waits").stderr

    async def audited() -> list[Any]:
        async with client_for(settings) as client:
            return [r for r in await client.audit_records() if r.action == "send-event"]

    entries = asyncio.run(audited())
    assert len(entries) == 1
    assert entries[0].decision["key"] == "T-8" and entries[0].decision["name"] == "customer.replied"


@pytest.mark.parametrize(("with_", "message"), [
    ("{key: x}", "event"),
    ("{event: 'has spaces'}", "event"),
    ("{event: ok, timeout: soon}", "duration"),
    ("{event: ok, key: ''}", "event key"),
    ("{event: ok, lookback: -1s}", "lookback"),
])
def test_bad_wait_arguments_are_located_at_load(with_: str, message: str) -> None:
    text = f"name: w\nsteps:\n  - id: hold\n    uses: wait\n    with: {with_}\n"
    with pytest.raises(DefinitionError) as err:
        load_text(text, "w.yaml")
    assert "w.yaml:5:" in str(err.value) and message in str(err.value)
