"""Human oversight: decisions, authorization, the audit trail, replay and bulk actions (real services)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, pending_task, running_worker, write_workflow
from tests.worker.e2e.test_cli import agentrt
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import Conflict, PermissionDenied
from worker.identity import Identity

GATE = """
name: {name}
steps:
  - id: ask
    uses: approval
    with: {{prompt: "ship {name}?", context: {{ticket: 42}}{extra}}}
  - {{id: done, uses: set, with: {{ok: true}}}}
"""


def gate(name: str, extra: str = "") -> str:
    return GATE.format(name=name, extra=extra)


async def as_user(settings: Settings, user: str, *groups: str) -> RuntimeClient:
    return await RuntimeClient.connect(settings, identity=Identity(user=user, groups=frozenset(groups)))


async def test_two_concurrent_deciders_exactly_one_wins(settings: Settings) -> None:
    write_workflow(settings, "g.yaml", gate("g"))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("g")
        task = await pending_task(client, run_id)
        alice, bob = await as_user(settings, "alice"), await as_user(settings, "bob")
        try:
            results = await asyncio.gather(
                alice.decide(task.task_id, approve=True, reason="ok"),
                bob.decide(task.task_id, approve=False, reason="no"),
                return_exceptions=True)
        finally:
            await alice.close()
            await bob.close()
        wins = [r for r in results if not isinstance(r, BaseException)]
        conflicts = [r for r in results if isinstance(r, Conflict)]
        assert len(wins) == 1 and len(conflicts) == 1
        assert "already" in str(conflicts[0])
        records = [r for r in await client.audit_records(run_id=run_id) if r.outcome != "denied"]
        assert len(records) == 1 and records[0].actor == wins[0].decided_by
        assert records[0].seen["prompt"] == "ship g?" and records[0].seen["context"] == {"ticket": 42}


POLICY = """
groups:
  oncall: [olga]
  finance: [fred]
rules:
  - workflows: ["refund-*"]
    allow:
      view: ["*"]
      approve: ["group:finance"]
      cancel: ["group:oncall"]
      replay: ["group:oncall"]
  - workflows: ["*"]
    allow:
      view: ["group:oncall", "group:finance"]
      approve: ["group:oncall"]
      cancel: ["group:oncall"]
      replay: ["group:oncall"]
"""


async def _try(coro) -> str:  # type: ignore[no-untyped-def]
    try:
        await coro
    except PermissionDenied:
        return "denied"
    except Conflict:
        return "conflict"
    return "ok"


@pytest.mark.parametrize(("user", "groups", "workflow", "expected"), [
    # user, OS groups, workflow, expected outcome of (view, approve, cancel, replay)
    ("fred", (), "refund-big", ("ok", "ok", "denied", "denied")),
    ("olga", (), "refund-big", ("ok", "denied", "ok", "ok")),
    ("victor", (), "refund-big", ("ok", "denied", "denied", "denied")),
    ("fred", (), "deploy", ("ok", "denied", "denied", "denied")),
    ("olga", (), "deploy", ("ok", "ok", "ok", "ok")),
    ("victor", (), "deploy", ("denied", "denied", "denied", "denied")),
    ("victor", ("oncall",), "deploy", ("ok", "ok", "ok", "ok")),  # an OS group counts like a policy group
])
async def test_authorization_matrix(settings: Settings, tmp_path: Path, user: str, groups: tuple[str, ...],
                                    workflow: str, expected: tuple[str, str, str, str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = replace(settings, policy_file=policy)
    # a long step after the gate: an approved run is still running when the user then tries to cancel it
    write_workflow(settings, "w.yaml", gate(workflow).replace(
        "  - {id: done", "  - {id: hold, uses: sleep, with: {duration: 60s}}\n  - {id: done"))
    async with running_worker(settings), client_for(replace(settings, policy_file=None)) as admin:
        run_id = await admin.start_run(workflow)
        task = await pending_task(admin, run_id)
        who = await as_user(settings, user, *groups)
        try:
            outcomes = (
                await _try(who.get_run(run_id)),
                await _try(who.decide(task.task_id, approve=True)),
                await _try(who.cancel(run_id, reason="matrix")),
                await _try(who.replay(run_id, dry_run=True)),
            )
        finally:
            await who.close()
        assert outcomes == expected
        denials = [r for r in await admin.audit_records(run_id=run_id) if r.outcome == "denied"]
        assert len(denials) == expected.count("denied") - (1 if expected[0] == "denied" else 0)
        assert all(r.actor == user for r in denials)


async def test_requester_may_not_approve_and_two_approvers_are_needed(settings: Settings) -> None:
    write_workflow(settings, "g.yaml", gate("g", ", min_approvals: 2, forbid_requester: true"))
    async with running_worker(settings):
        rita = await as_user(settings, "rita")
        alice, bob = await as_user(settings, "alice"), await as_user(settings, "bob")
        try:
            run_id = await rita.start_run("g")
            task = await pending_task(rita, run_id)
            with pytest.raises(PermissionDenied, match="requested this run"):
                await rita.decide(task.task_id, approve=True)
            assert task.requested_by == "rita" and task.min_approvals == 2 and task.approved_by == ()
            first = await alice.decide(task.task_id, approve=True, reason="lgtm")
            assert first.status.value == "pending"
            assert (await bob.get_task(task.task_id)).approved_by == ("alice",)  # what the inbox shows
            with pytest.raises(Conflict, match="already approved"):
                await alice.decide(task.task_id, approve=True)
            second = await bob.decide(task.task_id, approve=True)
            assert second.status.value == "approved" and second.decided_by == "alice, bob"
            summary = await rita.wait_for_run(run_id, timeout=20)
            assert summary.status.value == "completed"
            outcomes = [(r.actor, r.outcome) for r in await rita.audit_records(run_id=run_id)]
            assert outcomes == [("rita", "denied"), ("alice", "approval 1 of 2"), ("bob", "approved")]
        finally:
            for c in (rita, alice, bob):
                await c.close()


async def test_audit_table_refuses_update_and_delete_and_verify_detects_tampering(settings: Settings) -> None:
    write_workflow(settings, "g.yaml", gate("g"))
    async with running_worker(settings), client_for(settings) as client:
        for _ in range(3):
            run_id = await client.start_run("g")
            task = await pending_task(client, run_id)
            await client.decide(task.task_id, approve=True, reason="fine")
        assert (await client.verify_audit()).ok
        conn = await asyncpg.connect(settings.database_url)
        try:
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("UPDATE audit_log SET reason = 'forged'")
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("DELETE FROM audit_log")
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute("TRUNCATE audit_log")
            # a superuser can switch the protection off: the hash chain still gives the edit away
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
            second = await conn.fetchval("SELECT id FROM audit_log ORDER BY id OFFSET 1 LIMIT 1")
            await conn.execute("UPDATE audit_log SET reason = 'forged' WHERE id = $1", second)
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
        finally:
            await conn.close()
        result = await client.verify_audit()
        assert not result.ok and result.broken_at == second and "altered" in (result.reason or "")
        rc, out, _ = await agentrt(settings, "audit", "--verify")
        assert rc == 1 and "broken" in out


async def test_inserted_forged_row_breaks_the_chain(settings: Settings) -> None:
    write_workflow(settings, "g.yaml", gate("g"))
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("g")
        task = await pending_task(client, run_id)
        await client.decide(task.task_id, approve=True)
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(
                """INSERT INTO audit_log (at, actor, action, outcome, prev_hash, hash)
                   VALUES (now(), 'mallory', 'approve', 'approved', 'x', 'y')""")
        finally:
            await conn.close()
        result = await client.verify_audit()
        assert not result.ok and "does not follow" in (result.reason or "")
        rc, out, _ = await agentrt(settings, "audit", "--json")
        assert rc == 0 and [r["actor"] for r in json.loads(out)][-1] == "mallory"


async def test_approval_deadline_passes_while_no_worker_runs(settings: Settings) -> None:
    write_workflow(settings, "t.yaml", """
        name: t
        steps:
          - {id: ask, uses: approval, with: {prompt: "?", timeout: 3s, on_timeout: approve}}
          - {id: after, uses: set, with: {x: 1}}
    """)
    async with client_for(settings) as client:
        async with running_worker(settings):
            run_id = await client.start_run("t")
            await pending_task(client, run_id)
        # no worker at all while the deadline passes
        await asyncio.sleep(3.5)
        assert (await client.get_run(run_id)).summary.status.value == "waiting"
        async with running_worker(settings):
            summary = await client.wait_for_run(run_id, timeout=20)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed"
    assert detail.steps[0].output["timed_out"] is True


async def test_escalation_keeps_the_task_open(settings: Settings) -> None:
    write_workflow(settings, "e.yaml", """
        name: e
        steps:
          - {id: ask, uses: approval, with: {prompt: "?", timeout: 500ms, on_timeout: escalate}}
    """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("e")
        task = await pending_task(client, run_id)

        async def escalated() -> bool:
            return bool(await client.pool.fetchval("SELECT escalated FROM human_tasks WHERE task_id = $1",
                                                    task.task_id))

        from tests.support.runtime import eventually
        await eventually(escalated, timeout=15, what="escalated")
        assert (await client.get_run(run_id)).summary.status.value == "waiting"
        await client.decide(task.task_id, approve=True, by="manager")
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "completed"


CHAIN = """
name: chain
inputs: {sink: {type: string}}
steps:
  - {id: a, uses: http, with: {method: POST, url: "${{ inputs.sink }}/a"}}
  - {id: b, uses: http, with: {method: POST, url: "${{ inputs.sink }}/b"}}
  - {id: c, uses: http, with: {method: POST, url: "${{ inputs.sink }}/c"}}
  - {id: side, uses: set, needs: [a], with: {x: 1}}
"""


async def test_replay_from_a_middle_step_repeats_only_later_effects(settings: Settings, http_sink: HttpSink) -> None:
    write_workflow(settings, "chain.yaml", CHAIN)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "completed"
        assert (http_sink.count("/a"), http_sink.count("/b"), http_sink.count("/c")) == (1, 1, 1)
        rc, out, err = await agentrt(settings, "replay", run_id, "--from", "b", "--dry-run", "--json")
        assert rc == 0, err
        plan = json.loads(out)
        assert plan["reused"] == ["a", "side"] and plan["rerun"] == ["b", "c"]
        assert [c["step"] for c in plan["external_calls"]] == ["b", "c"]
        assert plan["new_run"] is None
        assert http_sink.count() == 3  # a dry run starts nothing
        rc, out, err = await agentrt(settings, "replay", run_id, "--from", "b", "--json")
        assert rc == 0, err
        new_id = json.loads(out)["new_run"]
        summary = await client.wait_for_run(new_id, timeout=20)
        detail = await client.get_run(new_id)
        records = await client.audit_records(run_id=run_id)
    assert summary.status.value == "completed"
    assert (http_sink.count("/a"), http_sink.count("/b"), http_sink.count("/c")) == (1, 2, 2)
    assert set(http_sink.keys("/b")) == {f"agentrt:{run_id}:b", f"agentrt:{new_id}:b"}  # new effects, new keys
    a = next(s for s in detail.steps if s.step_id == "a")
    assert a.attempts == () and a.status.value == "completed"  # reused, not executed
    assert records[-1].action == "replay" and records[-1].decision == {"new_run": new_id}


async def test_retry_from_the_failed_step_is_the_default(settings: Settings, http_sink: HttpSink) -> None:
    write_workflow(settings, "chain.yaml", CHAIN)
    http_sink.script("/b", [(400, {}, "bad request")])
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("chain", {"sink": http_sink.url})
        assert (await client.wait_for_run(run_id, timeout=20)).status.value == "failed"
        plan, new_id = await client.replay(run_id)
        assert plan.from_step == "b" and plan.reused == ["a", "side"]
        assert (await client.wait_for_run(new_id, timeout=20)).status.value == "completed"
    assert http_sink.count("/a") == 1 and http_sink.count("/b") == 2 and http_sink.count("/c") == 1


async def test_bulk_cancel_counts_first_then_acts_with_a_summary(settings: Settings) -> None:
    write_workflow(settings, "g.yaml", gate("g"))
    async with running_worker(settings), client_for(settings) as client:
        runs = [await client.start_run("g") for _ in range(4)]
        for r in runs:
            await pending_task(client, r)
        rc, out, _ = await agentrt(settings, "runs", "--workflow", "g", "--cancel")
        assert rc == 0 and "4 run(s) would be cancelled" in out
        assert [(await client.get_run(r)).summary.status.value for r in runs] == ["waiting"] * 4
        rc, out, err = await agentrt(settings, "runs", "--workflow", "g", "--cancel", "--yes", "--rate", "100",
                                     "--reason", "bad deploy", "--json")
        assert rc == 0, err
        summary = json.loads(out)
        assert summary["succeeded"] == 4 and summary["failed"] == 0
        for r in runs:
            assert (await client.wait_for_run(r, timeout=20)).status.value == "cancelled"
        cancels = [rec for rec in await client.audit_records() if rec.action == "cancel"]
        assert len(cancels) == 4 and {rec.reason for rec in cancels} == {"bad deploy"}
