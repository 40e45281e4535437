"""The pure core: state derivation from events, decide(), retry arithmetic. No services."""

from __future__ import annotations

import textwrap

import pytest

from worker import runlog as ev
from worker.definitions.loader import load_text
from worker.definitions.schema import RetryPolicy
from worker.engine.commands import Complete, CompleteRun, Expand, Fail, FailRun, Skip, Start, TimeoutTask
from worker.engine.inputs import InputError, resolve_inputs
from worker.engine.retry import backoff_delay, next_retry_at
from worker.engine.scheduler import decide
from worker.engine.state import RunState
from worker.models import RunStatus, StepStatus


def wf(text: str):
    return load_text(textwrap.dedent(text), "test.yaml")


LINEAR = """
name: linear
inputs:
  n: {type: integer, default: 2}
steps:
  - id: a
    uses: set
    with: {x: "${{ inputs.n * 10 }}"}
  - id: b
    uses: set
    with: {y: "${{ steps.a.output.x + 1 }}"}
output: "${{ steps.b.output.y }}"
"""


class Log:
    """Builds a run's event log step by step, like the runner does."""

    def __init__(self, inputs: dict[str, object] | None = None) -> None:
        self.state = RunState(run_id="r1")
        self.events: list[ev.Event] = []
        self.t = 1000.0
        self.add(ev.RUN_CREATED, workflow="w", def_hash="h", inputs=inputs or {})

    def add(self, type_: str, step_id: str | None = None, item: int | None = None, attempt: int | None = None,
            **data: object) -> None:
        self.t += 1
        event = ev.Event(type_, self.t, step_id, item, attempt, dict(data), self.state.last_seq + 1)
        self.events.append(event)
        self.state.apply(event)


def test_linear_run_starts_one_step_at_a_time_and_renders_from_committed_outputs() -> None:
    defn = wf(LINEAR)
    log = Log({"n": 2})
    d = decide(defn, log.state, log.t)
    assert d.commands == [Start("a", None, 1, "set", {"x": 20})]
    log.add(ev.STEP_STARTED, "a", None, 1, inputs={"x": 20})
    assert decide(defn, log.state, log.t).commands == []  # b waits for a
    log.add(ev.STEP_COMPLETED, "a", None, 1, output={"x": 20})
    assert decide(defn, log.state, log.t).commands == [Start("b", None, 1, "set", {"y": 21})]
    log.add(ev.STEP_STARTED, "b", None, 1)
    log.add(ev.STEP_COMPLETED, "b", None, 1, output={"y": 21})
    assert decide(defn, log.state, log.t).commands == [CompleteRun(21)]
    log.add(ev.RUN_COMPLETED, output=21)
    assert log.state.status == RunStatus.COMPLETED
    assert decide(defn, log.state, log.t).commands == []


def test_independent_branches_start_together() -> None:
    defn = wf("""
        name: diamond
        steps:
          - {id: a, uses: set, with: {v: 1}}
          - {id: b, uses: set, needs: [a], with: {v: 2}}
          - {id: c, uses: set, needs: [a], with: {v: 3}}
          - {id: d, uses: set, needs: [b, c], with: {v: 4}}
    """)
    log = Log()
    log.add(ev.STEP_STARTED, "a", None, 1)
    log.add(ev.STEP_COMPLETED, "a", None, 1, output={"v": 1})
    starts = decide(defn, log.state, log.t).commands
    assert {c.step_id for c in starts} == {"b", "c"}
    log.add(ev.STEP_STARTED, "b", None, 1)
    log.add(ev.STEP_COMPLETED, "b", None, 1, output={})
    assert decide(defn, log.state, log.t).commands == [Start("c", None, 1, "set", {"v": 3})]


def test_when_false_skips_and_dependents_still_run() -> None:
    defn = wf("""
        name: cond
        inputs: {amount: {type: number}}
        steps:
          - {id: approve, uses: approval, when: "${{ inputs.amount > 100 }}", with: {prompt: "ok?"}}
          - {id: pay, uses: set, with: {paid: "${{ inputs.amount }}"}}
    """)
    log = Log({"amount": 50})
    assert decide(defn, log.state, log.t).commands == [Skip("approve", "when condition is false")]
    log.add(ev.STEP_SKIPPED, "approve", reason="x")
    assert decide(defn, log.state, log.t).commands == [Start("pay", None, 1, "set", {"paid": 50})]
    log2 = Log({"amount": 500})
    assert decide(defn, log2.state, log2.t).commands == [Start("approve", None, 1, "approval", {"prompt": "ok?"})]


def test_retry_waits_until_retry_at_then_starts_next_attempt() -> None:
    defn = wf("""
        name: flaky
        steps:
          - {id: a, uses: set, retry: {max_attempts: 3}, with: {}}
    """)
    log = Log()
    log.add(ev.STEP_STARTED, "a", None, 1)
    log.add(ev.STEP_FAILED, "a", None, 1, error="boom", retryable=True, retry_at=2000.0, final=False)
    assert log.state.instances[("a", None)].status == StepStatus.RETRYING
    d = decide(defn, log.state, 1999.0)
    assert d.commands == [] and d.wake_at == 2000.0
    d = decide(defn, log.state, 2000.0)
    assert d.commands == [Start("a", None, 2, "set", {})]


def test_final_failure_fails_the_run_unless_continue_on_error() -> None:
    defn = wf("""
        name: f
        steps:
          - {id: a, uses: set, with: {}}
          - {id: b, uses: set, with: {}}
    """)
    log = Log()
    log.add(ev.STEP_STARTED, "a", None, 1)
    log.add(ev.STEP_FAILED, "a", None, 1, error="bad", retryable=False, final=True)
    cmds = decide(defn, log.state, log.t).commands
    assert len(cmds) == 1 and isinstance(cmds[0], FailRun) and "bad" in cmds[0].error

    defn2 = wf("""
        name: f
        steps:
          - {id: a, uses: set, continue_on_error: true, with: {}}
          - {id: b, uses: set, with: {}}
    """)
    assert decide(defn2, log.state, log.t).commands == [Start("b", None, 1, "set", {})]


def test_foreach_expands_runs_items_and_collects_outputs_in_order() -> None:
    defn = wf("""
        name: fe
        inputs: {xs: {type: array}}
        steps:
          - {id: sq, uses: set, foreach: "${{ inputs.xs }}", with: {v: "${{ item * item }}", i: "${{ index }}"}}
          - {id: total, uses: set, with: {s: "${{ len(steps.sq.output) }}"}}
    """)
    log = Log({"xs": [2, 3]})
    assert decide(defn, log.state, log.t).commands == [Expand("sq", 2)]
    log.add(ev.STEP_EXPANDED, "sq", count=2)
    cmds = decide(defn, log.state, log.t).commands
    assert cmds == [Start("sq", 0, 1, "set", {"v": 4, "i": 0}), Start("sq", 1, 1, "set", {"v": 9, "i": 1})]
    log.add(ev.STEP_STARTED, "sq", 0, 1)
    log.add(ev.STEP_STARTED, "sq", 1, 1)
    log.add(ev.STEP_COMPLETED, "sq", 1, 1, output={"v": 9})
    assert decide(defn, log.state, log.t).commands == []
    log.add(ev.STEP_COMPLETED, "sq", 0, 1, output={"v": 4})
    assert decide(defn, log.state, log.t).commands == [Complete("sq", None, [{"v": 4}, {"v": 9}])]
    log.add(ev.STEP_COMPLETED, "sq", None, None, output=[{"v": 4}, {"v": 9}])
    assert decide(defn, log.state, log.t).commands == [Start("total", None, 1, "set", {"s": 2})]


def test_foreach_over_non_list_fails_the_step() -> None:
    defn = wf("""
        name: fe
        inputs: {xs: {type: any}}
        steps:
          - {id: sq, uses: set, foreach: "${{ inputs.xs }}", with: {}}
    """)
    log = Log({"xs": 5})
    cmds = decide(defn, log.state, log.t).commands
    assert len(cmds) == 1 and isinstance(cmds[0], Fail) and "list" in cmds[0].error


def test_render_error_is_a_final_step_failure_naming_the_expression() -> None:
    defn = wf("""
        name: bad
        inputs: {d: {type: object}}
        steps:
          - {id: a, uses: set, with: {v: "${{ inputs.d.missing }}"}}
    """)
    log = Log({"d": {}})
    cmds = decide(defn, log.state, log.t).commands
    assert len(cmds) == 1 and isinstance(cmds[0], Fail) and "missing" in cmds[0].error


def test_approval_outcomes_and_timeout() -> None:
    defn = wf("""
        name: ap
        steps:
          - {id: ok, uses: approval, with: {prompt: "go?", timeout: 10s, on_timeout: reject}}
    """)
    log = Log()
    log.add(ev.STEP_WAITING, "ok", None, 1, reason="approval", task_id="t1", deadline=2000.0, on_timeout="reject")
    d = decide(defn, log.state, 1990.0)
    assert d.commands == [] and d.wake_at == 2000.0
    assert decide(defn, log.state, 2000.0).commands == [TimeoutTask("ok", None, "t1")]
    approved = Log()
    approved.state = RunState.from_events("r1", [])
    for e in [ev.Event(ev.STEP_WAITING, 1, "ok", None, 1, {"reason": "approval", "task_id": "t1"}, 1),
              ev.Event(ev.TASK_DECIDED, 2, "ok", None, 1, {"task_id": "t1", "status": "approved", "by": "ann"}, 2)]:
        approved.state.apply(e)
    cmds = decide(defn, approved.state, 3).commands
    assert isinstance(cmds[0], Complete) and cmds[0].output["approved"] is True
    assert cmds[0].output["decided_by"] == "ann"
    rejected = RunState("r1")
    for e in [ev.Event(ev.STEP_WAITING, 1, "ok", None, 1, {"reason": "approval", "task_id": "t1"}, 1),
              ev.Event(ev.TASK_DECIDED, 2, "ok", None, 1,
                       {"task_id": "t1", "status": "rejected", "by": "bob", "reason": "too much"}, 2)]:
        rejected.apply(e)
    cmds = decide(defn, rejected, 3).commands
    assert isinstance(cmds[0], Fail) and "bob" in cmds[0].error and "too much" in cmds[0].error
    timed = RunState("r1")
    for e in [ev.Event(ev.STEP_WAITING, 1, "ok", None, 1, {"reason": "approval", "task_id": "t1",
                                                            "on_timeout": "approve"}, 1),
              ev.Event(ev.TASK_DECIDED, 2, "ok", None, 1, {"task_id": "t1", "status": "timed_out"}, 2)]:
        timed.apply(e)
    cmds = decide(defn, timed, 3).commands
    assert isinstance(cmds[0], Complete) and cmds[0].output["timed_out"] is True


def test_uncertain_effect_resolutions() -> None:
    defn = wf("""
        name: pay
        steps:
          - {id: charge, uses: http, idempotent: false, with: {url: "https://pay.example/charge", method: POST}}
    """)
    base = [ev.Event(ev.STEP_STARTED, 1, "charge", None, 1, {"inputs": {"url": "u"}}, 1),
            ev.Event(ev.STEP_WAITING, 2, "charge", None, 1, {"reason": "uncertain", "task_id": "t"}, 2)]
    for action, expected in (("retry", Start), ("done", Complete), ("fail", Fail)):
        st = RunState.from_events("r", base + [ev.Event(ev.TASK_DECIDED, 3, "charge", None, 1,
                                                        {"action": action, "output": {"id": 1}, "by": "x"}, 3)])
        cmds = decide(defn, st, 4).commands
        assert isinstance(cmds[0], expected), action
    st = RunState.from_events("r", base)
    assert decide(defn, st, 4).commands == []
    retry = decide(defn, RunState.from_events("r", base + [ev.Event(ev.TASK_DECIDED, 3, "charge", None, 1,
                                                                    {"action": "retry"}, 3)]), 4).commands[0]
    assert isinstance(retry, Start) and retry.attempt == 2 and retry.kind == "http"


def test_sleep_completes_when_due() -> None:
    defn = wf("""
        name: nap
        steps:
          - {id: z, uses: sleep, with: {duration: 1h}}
    """)
    waiting = ev.Event(ev.STEP_WAITING, 1, "z", None, 1, {"reason": "sleep", "wake_at": 100.0}, 1)
    st = RunState.from_events("r", [waiting])
    d = decide(defn, st, 50.0)
    assert d.commands == [] and d.wake_at == 100.0
    assert decide(defn, st, 100.0).commands == [Complete("z", None, {"slept_until": 100.0})]


def test_state_is_rebuilt_identically_from_the_log() -> None:
    log = Log({"n": 1})
    log.add(ev.STEP_STARTED, "a", None, 1, inputs={"x": 1})
    log.add(ev.STEP_FAILED, "a", None, 1, error="e", retryable=True, retry_at=5.0, final=False)
    log.add(ev.STEP_STARTED, "a", None, 2, inputs={"x": 1})
    log.add(ev.STEP_COMPLETED, "a", None, 2, output=7)
    rebuilt = RunState.from_events("r1", log.events)
    assert rebuilt == log.state
    inst = rebuilt.instances[("a", None)]
    assert inst.attempt == 2 and inst.status == StepStatus.COMPLETED and inst.output == 7
    assert rebuilt.last_seq == 5 and rebuilt.inputs == {"n": 1}


def test_backoff_grows_caps_and_jitters_within_bounds() -> None:
    p = RetryPolicy(max_attempts=10, initial_interval=1.0, backoff=2.0, max_interval=5.0, jitter=0.0)
    assert [backoff_delay(p, n, 0.5) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    j = RetryPolicy(initial_interval=10.0, backoff=1.0, max_interval=100.0, jitter=0.2)
    assert backoff_delay(j, 1, 0.0) == pytest.approx(8.0)
    assert backoff_delay(j, 1, 0.999999) == pytest.approx(12.0, rel=1e-4)


def test_next_retry_at_honours_max_attempts_retryable_and_retry_after() -> None:
    p = RetryPolicy(max_attempts=3, initial_interval=1.0, backoff=2.0, jitter=0.0)
    assert next_retry_at(p, 1, 100.0, 0.5, retryable=True) == 101.0
    assert next_retry_at(p, 3, 100.0, 0.5, retryable=True) is None
    assert next_retry_at(p, 1, 100.0, 0.5, retryable=False) is None
    assert next_retry_at(p, 1, 100.0, 0.5, retryable=True, retry_after=30.0) == 130.0


def test_inputs_defaults_and_type_errors() -> None:
    defn = wf("""
        name: inp
        inputs:
          id: {type: string}
          n: {type: integer, default: 3}
        steps: [{id: a, uses: set, with: {}}]
    """)
    assert resolve_inputs(defn.spec, {"id": "x"}) == {"id": "x", "n": 3}
    with pytest.raises(InputError, match="missing required input 'id'"):
        resolve_inputs(defn.spec, {})
    with pytest.raises(InputError, match="must be integer"):
        resolve_inputs(defn.spec, {"id": "x", "n": "3"})
    with pytest.raises(InputError, match="unknown input"):
        resolve_inputs(defn.spec, {"id": "x", "zz": 1})
