"""Stateful property test of run-state derivation (`RunState.apply`) and scheduling (`decide`).

A random DAG workflow is driven the way the RunActor drives it: `decide` says what to start, skip,
complete or fail; the machine then completes, fails (retryably or not) or "crashes" running attempts
in random order, and moves the clock. After every step:

- a step is never started before each of its dependencies completed (or was skipped, or failed with
  continue_on_error), and a completed step is never started again;
- no instance runs more attempts than its retry policy allows;
- folding the event log from scratch gives exactly the state that was built incrementally;
- a run that is not finished and has nothing running always has something to do in the future
  (`decide` at a far-away time returns a command): no run is stuck.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from worker import runlog as ev
from worker.definitions.loader import load_text
from worker.definitions.model import Definition
from worker.engine.commands import Complete, CompleteRun, Expand, Fail, FailRun, Skip, Start, TimeoutTask
from worker.engine.retry import next_retry_at
from worker.engine.scheduler import decide
from worker.engine.state import RunState
from worker.models import StepStatus

DONE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


@st.composite
def workflows(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 6))
    lines = ["name: fuzz", "inputs:", "  flag: {type: boolean, default: true}", "steps:"]
    for i in range(n):
        earlier = [f"s{j}" for j in range(i)]
        needs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        attempts = draw(st.integers(1, 3))
        parts = [f"id: s{i}", "uses: set", "with: {x: 1}",
                 f"retry: {{max_attempts: {attempts}, initial_interval: 1s, backoff: 2.0, max_interval: 4s}}"]
        if draw(st.booleans()):
            parts.append(f"needs: [{', '.join(needs)}]")
        if draw(st.integers(0, 4)) == 0:
            parts.append("continue_on_error: true")
        if draw(st.integers(0, 4)) == 0:
            parts.append(draw(st.sampled_from(["when: \"${{ inputs.flag }}\"", "when: \"${{ not inputs.flag }}\""])))
        if draw(st.integers(0, 5)) == 0:
            parts.append("foreach: \"${{ [1, 2] }}\"")
        lines.append("  - {" + ", ".join(parts) + "}")
    return "\n".join(lines) + "\n"


class RunMachine(RuleBasedStateMachine):
    defn: Definition

    def __init__(self) -> None:
        super().__init__()
        self.events: list[ev.Event] = []
        self.state = RunState(run_id="r")
        self.now = 1_000_000.0
        self.starts: dict[tuple[str, int | None], int] = {}

    # -- helpers ------------------------------------------------------------------------------
    def emit(self, type_: str, **kw: Any) -> None:
        event = ev.Event(type=type_, ts=self.now, seq=len(self.events) + 1, **kw)
        self.events.append(event)
        self.state.apply(event)

    def deps_done(self, step_id: str) -> bool:
        for dep in self.defn.needs[step_id]:
            st_ = self.state.steps.get(dep)
            if st_ is None:
                return False
            if st_.status in DONE:
                continue
            if st_.status == StepStatus.FAILED and self.defn.step(dep).continue_on_error:
                continue
            return False
        return True

    def running(self) -> list[tuple[str, int | None]]:
        return sorted(k for k, i in self.state.instances.items() if i.status == StepStatus.RUNNING)

    # -- rules --------------------------------------------------------------------------------
    @initialize(text=workflows(), flag=st.booleans())
    def create(self, text: str, flag: bool) -> None:
        self.defn = load_text(text, "fuzz.yaml")
        self.emit(ev.RUN_CREATED, data={"workflow": "fuzz", "def_hash": self.defn.def_hash,
                                        "inputs": {"flag": flag}})

    @rule()
    def advance(self) -> None:
        """What the actor's `_advance` does: apply decisions until only starts (or nothing) remain."""
        for _ in range(50):
            decision = decide(self.defn, self.state, self.now)
            progressed = False
            for cmd in decision.commands:
                if isinstance(cmd, Start):
                    key = (cmd.step_id, cmd.item)
                    inst = self.state.instances.get(key)
                    assert self.deps_done(cmd.step_id), f"{cmd.step_id} started before its dependencies"
                    assert inst is None or inst.status not in (StepStatus.COMPLETED, StepStatus.RUNNING), (
                        f"{key} started again while {inst.status}")
                    assert self.state.steps.get(cmd.step_id) is None or \
                        self.state.steps[cmd.step_id].status != StepStatus.COMPLETED
                    self.starts[key] = self.starts.get(key, 0) + 1
                    self.emit(ev.STEP_STARTED, step_id=cmd.step_id, item=cmd.item, attempt=cmd.attempt,
                              data={"inputs": cmd.inputs})
                    continue
                progressed = True
                if isinstance(cmd, Skip):
                    self.emit(ev.STEP_SKIPPED, step_id=cmd.step_id, data={"reason": cmd.reason})
                elif isinstance(cmd, Expand):
                    self.emit(ev.STEP_EXPANDED, step_id=cmd.step_id, data={"count": cmd.count})
                elif isinstance(cmd, Complete):
                    inst = self.state.instances.get((cmd.step_id, cmd.item))
                    self.emit(ev.STEP_COMPLETED, step_id=cmd.step_id, item=cmd.item,
                              attempt=inst.attempt if inst else None, data={"output": cmd.output})
                elif isinstance(cmd, Fail):
                    self.emit(ev.STEP_FAILED, step_id=cmd.step_id, item=cmd.item, attempt=cmd.attempt,
                              data={"error": cmd.error, "retryable": False, "final": True})
                elif isinstance(cmd, CompleteRun):
                    self.emit(ev.RUN_COMPLETED, data={"output": cmd.output})
                elif isinstance(cmd, FailRun):
                    for key in self.running():
                        inst = self.state.instances[key]
                        self.emit(ev.STEP_FAILED, step_id=key[0], item=key[1], attempt=inst.attempt,
                                  data={"error": "cancelled: the run failed", "cancelled": True, "final": True})
                    self.emit(ev.RUN_FAILED, data={"error": cmd.error})
                else:
                    assert isinstance(cmd, TimeoutTask)
                    raise AssertionError("no approvals in these workflows")
            if not progressed or self.state.terminal:
                return
        raise AssertionError("decide kept making progress for 50 rounds (a loop)")

    @precondition(lambda self: bool(self.running()))
    @rule(pick=st.integers(0, 10**6))
    def complete(self, pick: int) -> None:
        key = self.running()[pick % len(self.running())]
        inst = self.state.instances[key]
        self.emit(ev.STEP_COMPLETED, step_id=key[0], item=key[1], attempt=inst.attempt,
                  data={"output": {"k": list(key), "attempt": inst.attempt}})

    @precondition(lambda self: bool(self.running()))
    @rule(pick=st.integers(0, 10**6), retryable=st.booleans(), crashed=st.booleans(), rand=st.floats(0, 1))
    def fail(self, pick: int, retryable: bool, crashed: bool, rand: float) -> None:
        key = self.running()[pick % len(self.running())]
        inst = self.state.instances[key]
        policy = self.defn.retry_for(self.defn.step(key[0]))
        retry_at = next_retry_at(policy, inst.failures + 1, self.now, rand, retryable=retryable or crashed)
        self.emit(ev.STEP_FAILED, step_id=key[0], item=key[1], attempt=inst.attempt,
                  data={"error": "boom", "retryable": retryable, "retry_at": retry_at, "final": retry_at is None,
                        "crashed": crashed})

    @rule(seconds=st.floats(0, 10))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def folding_from_scratch_gives_the_same_state(self) -> None:
        if not self.events:
            return
        assert RunState.from_events("r", list(self.events)) == self.state

    @invariant()
    def attempts_are_bounded(self) -> None:
        if not self.events:
            return
        for (step_id, _item), n in self.starts.items():
            assert n <= self.defn.retry_for(self.defn.step(step_id)).max_attempts

    @invariant()
    def completed_once(self) -> None:
        seen: set[tuple[str | None, int | None]] = set()
        for e in self.events:
            if e.type == ev.STEP_COMPLETED:
                key = (e.step_id, e.item)
                assert key not in seen, f"{key} completed twice"
                seen.add(key)

    @invariant()
    def never_stuck(self) -> None:
        if not self.events or self.state.terminal or self.running():
            return
        later = decide(self.defn, self.state, self.now + 10_000)
        assert later.commands, f"run stuck: nothing running and nothing to do\n{self.state}"

    @invariant()
    def terminal_is_final(self) -> None:
        if self.state.terminal:
            assert decide(self.defn, self.state, self.now + 10_000).commands == []


RunMachine.TestCase.settings = settings(database=None, max_examples=150, stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestRunMachine = RunMachine.TestCase

