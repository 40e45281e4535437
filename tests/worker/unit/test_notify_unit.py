"""notify.yaml (located errors, routing), notification ids and bodies, the wire format and its signature."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from worker import runlog as ev
from worker.config import Settings
from worker.definitions.loader import load_text
from worker.definitions.registry import is_workflow_file, load_operator_file, scan_directory
from worker.engine.state import RunState
from worker.errors import DefinitionError
from worker.notify.config import OperatorNotify, load_notify_text, notify_problems
from worker.notify.notices import commit_rows, expiring_rows, notification_id
from worker.notify.outbox import OutboxRow, _merge
from worker.notify.payloads import render, sign, verify
from worker.store.writer import NewTask

GOOD = """
expiring_before: 10m
give_up_after: 2h
retry: {initial_interval: 500ms, max_interval: 1m}
targets:
  oncall: {url: "https://hooks.example.com/agentrt", secret: oncall}
  ops-slack: {secret: slack/ops, format: slack, timeout: 5s}
routes:
  - kinds: [task.created, task.expiring, task.escalated]
    workflows: ["refund-*"]
    targets: [oncall]
  - kinds: [run.failed, worker.lost]
    targets: [ops-slack, oncall]
"""


def _load(text: str) -> object:
    return load_notify_text(textwrap.dedent(text).lstrip(), "notify.yaml")


def test_a_good_file_routes_by_kind_and_workflow() -> None:
    spec = load_notify_text(GOOD, "notify.yaml")
    assert spec.expiring_before == 600 and spec.give_up_after == 7200 and spec.retry.initial_interval == 0.5
    assert spec.targets["ops-slack"].format == "slack" and spec.targets["ops-slack"].url is None
    assert spec.routed("task.created", "refund-request") == ["oncall"]
    assert spec.routed("task.created", "hello") == []
    assert spec.routed("run.failed", "hello") == ["ops-slack", "oncall"]
    assert spec.routed("worker.lost", "refund-request") == ["ops-slack", "oncall"]


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("targets:\n  a: {secret: a}\nroutes:\n  - kinds: [run.failed]\n    targets: [a, b]\n",
     "notify.yaml:5:18", "unknown target 'b' (defined in targets: a)"),
    ("targets:\n  a: {secret: a, colour: red}\n", "notify.yaml:2:18", "unknown key 'colour'"),
    ("targets:\n  a: {secret: a}\nroutes:\n  - kinds: [run.exploded]\n    targets: [a]\n",
     "notify.yaml:4:13", "unknown kind 'run.exploded' (kinds: task.created, task.expiring"),
    ("targets:\n  a: {secret: a, url: ftp://x}\n", "notify.yaml:2:23", "not an http(s) URL"),
    ("targets:\n  a: {secret: a, url: 'https://u:p@x.example'}\n", "notify.yaml:2:23", "belong in Vault"),
    ("targets:\n  a: {secret: ../root}\n", "notify.yaml:2:15", "not a plain secret name"),
    ("targets:\n  a: {secret: a, headers: {X-Signature: forged}}\n", "notify.yaml:2:27", "cannot be set here"),
    ("expiring_before: soon\n", "notify.yaml:1:18", "not a duration"),
    ("- a\n- b\n", "notify.yaml:1:1", "top level must be a mapping"),
    ("targets: &t {}\n", "notify.yaml:1:10", "anchors"),
])
def test_a_bad_file_is_refused_with_its_location(text: str, where: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_notify_text(text, "notify.yaml")
    assert info.value.location == where, str(info.value)
    assert reason in info.value.reason


def test_notify_yaml_is_reserved_and_validated_with_the_workflows(tmp_path: Path) -> None:
    (tmp_path / "notify.yaml").write_text("targets:\n  a: {secret: a}\nroutes:\n  - targets: [nope]\n")
    (tmp_path / "hello.yaml").write_text("name: hello\nsteps:\n  - {id: s, uses: set, with: {value: 1}}\n")
    assert not is_workflow_file(tmp_path / "notify.yaml")
    found = scan_directory(tmp_path)
    error = found[tmp_path / "notify.yaml"]
    assert isinstance(error, DefinitionError) and error.line == 4 and "unknown target 'nope'" in error.reason
    (tmp_path / "notify.yaml").write_text(GOOD)
    load_operator_file(tmp_path / "notify.yaml")


def test_the_operator_file_is_followed_and_a_bad_save_keeps_the_last_good_one(tmp_path: Path) -> None:
    settings = Settings(workflows_dir=tmp_path)
    config = OperatorNotify(settings, recheck=0)
    assert config.routed("run.failed", "x") == [] and config.path is None
    (tmp_path / "notify.yaml").write_text(GOOD)
    assert config.routed("run.failed", "x") == ["ops-slack", "oncall"]
    time.sleep(0.01)
    (tmp_path / "notify.yaml").write_text(GOOD + "  - {targets: [ghost]}\n")
    assert config.routed("run.failed", "x") == ["ops-slack", "oncall"]
    assert config.error is not None and "unknown target 'ghost'" in str(config.error)
    elsewhere = tmp_path / "ops" / "notify.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("targets: {a: {secret: a}}\nroutes: [{targets: [a]}]\n")
    moved = OperatorNotify(replace(settings, notify_file=elsewhere), recheck=0)
    assert moved.routed("task.created", "x") == ["a"]  # AGENTRT_NOTIFY_FILE wins over the workflows dir's


def test_a_workflow_credential_cannot_point_at_the_notification_secrets() -> None:
    text = textwrap.dedent("""
        name: thief
        credentials:
          hook: {path: agentrt/notify/oncall}
        steps:
          - {id: s, uses: set, with: {value: 1}}
        """).lstrip()
    settings = Settings()
    with pytest.raises(DefinitionError) as info:
        load_text(text, "thief.yaml", checks=[lambda spec: notify_problems(spec, settings)])
    assert info.value.location == "thief.yaml:3:16" and "notification secrets" in info.value.reason
    ok = text.replace("agentrt/notify/oncall", "agentrt/notifyx/oncall")
    load_text(ok, "ok.yaml", checks=[lambda spec: notify_problems(spec, settings)])


def _route(kind: str, workflow: str) -> list[str]:
    return ["a", "b"] if kind != "task.expiring" else ["a"]


def test_a_commit_becomes_rows_with_stable_ids() -> None:
    run_id = str(uuid.uuid4())
    state = RunState(run_id=run_id, workflow="refund")
    task = NewTask(str(uuid.uuid4()), "approve", None, "approval", "Refund 250?", {}, time.time() + 3600, "reject")
    events = [ev.Event(ev.STEP_WAITING, time.time(), "approve", None, 1, {"reason": "approval"}, 3),
              ev.Event(ev.RUN_FAILED, time.time(), "pay", None, None, {"error": "card declined"}, 4),
              ev.Event(ev.RUN_RESUMED, time.time(), None, None, None,
                       {"worker": "w2", "previous_owner": "w1", "orphans": 1}, 5),
              ev.Event(ev.RUN_RESUMED, time.time(), None, None, None, {"worker": "w2", "previous_owner": None}, 6)]
    rows = commit_rows(_route, state, events, [task], workflow="refund", now=time.time(), give_up=60)
    kinds = [(r.kind, r.target) for r in rows]
    assert kinds == [("task.created", "a"), ("task.created", "b"), ("run.failed", "a"), ("run.failed", "b"),
                     ("worker.lost", "a"), ("worker.lost", "b")]
    created = rows[0]
    assert created.notification_id == notification_id("task.created", task.task_id) == rows[1].notification_id
    assert "Approval needed: refund run" in created.body["summary"] and "then reject" in created.body["summary"]
    assert rows[2].notification_id == notification_id("run.failed", run_id)
    assert rows[2].body["run"]["error"] == "card declined"
    lost = rows[4]
    assert lost.notification_id is None and lost.subject == "w1" and lost.delay > 0 and lost.workflow is None
    again = commit_rows(_route, state, events, [task], workflow="refund", now=time.time() + 5, give_up=60)
    assert [r.notification_id for r in again] == [r.notification_id for r in rows]  # stable across retries
    due = [{"task_id": task.task_id, "run_id": run_id, "workflow": "refund", "step_id": "approve", "item": None,
            "kind": "approval", "prompt": "Refund 250?", "deadline": time.time() + 300, "on_timeout": "reject",
            "approvers": []}]
    (expiring,) = expiring_rows(_route, due, now=time.time(), give_up=60)
    assert expiring.notification_id == notification_id("task.expiring", task.task_id)
    assert expiring.body["summary"].startswith("Approval about to time out in 5m")


def test_takeovers_of_one_lost_worker_merge_into_one_row() -> None:
    def lost(run: str) -> OutboxRow:
        return OutboxRow(None, "a", "worker.lost", "w1", None, None, None,
                         {"worker": {"lost": "w1", "run_count": 1, "runs": [{"run_id": run}]}})

    merged = _merge([lost("r1"), OutboxRow("x", "a", "run.failed", "r9", "wf", None, None, {}), lost("r2")])
    assert [r.kind for r in merged] == ["run.failed", "worker.lost"]
    assert merged[1].body["worker"]["run_count"] == 2
    assert [r["run_id"] for r in merged[1].body["worker"]["runs"]] == ["r1", "r2"]


def test_the_json_body_is_signed_and_carries_its_id_and_time() -> None:
    body = {"kind": "run.failed", "summary": "Run failed: x", "workflow": "x", "run_id": "r"}
    data, headers = render("id-1", "run.failed", body, fmt="json", secret="s3cret", attempt=2, sent_at=1_700_000_000,
                           extra_headers={"X-Team": "pay"})
    doc = json.loads(data)
    assert doc["id"] == "id-1" and doc["sent_at"] == 1_700_000_000 and doc["summary"] == "Run failed: x"
    assert headers["X-Signature"] == sign("s3cret", data) and headers["X-Notification-Id"] == "id-1"
    assert headers["X-Notification-Attempt"] == "2" and headers["X-Team"] == "pay"
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify("s3cret", data, lower, now=1_700_000_010)["id"] == "id-1"
    with pytest.raises(ValueError, match="bad signature"):
        verify("other", data, lower, now=1_700_000_010)
    with pytest.raises(ValueError, match="bad signature"):
        verify("s3cret", data.replace(b"Run failed", b"Run passed"), lower, now=1_700_000_010)
    with pytest.raises(ValueError, match="stale"):
        verify("s3cret", data, lower, now=1_700_000_000 + 3600)
    with pytest.raises(ValueError, match="sent_at differs"):  # the time is inside the signed body
        verify("s3cret", data, {**lower, "x-notification-timestamp": "1700003000"}, now=1_700_003_000)


def test_the_slack_format_is_text_and_blocks() -> None:
    body = {"kind": "task.created", "summary": "Approval needed: <refund> & co", "workflow": "refund",
            "run_id": "r-1", "task": {"step_id": "approve", "deadline": "2026-01-01T00:00:00Z", "approvers": ["ann"]},
            "hint": "agentrt approvals"}
    data, headers = render("id-2", "task.created", body, fmt="slack", secret=None, attempt=1, sent_at=5)
    doc = json.loads(data)
    assert set(doc) == {"text", "blocks"} and doc["text"] == "Approval needed: <refund> & co"
    assert doc["blocks"][0]["text"]["text"] == "Approval needed: &lt;refund&gt; &amp; co"
    assert "id id-2" in doc["blocks"][-1]["elements"][0]["text"] and "X-Signature" not in headers
    fields = json.dumps(doc["blocks"][1])
    assert "*Workflow*" in fields and "ann" in fields
