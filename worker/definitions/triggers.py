"""Checks of a workflow's `on:` triggers that pydantic cannot express (the trigger models are in
`worker.definitions.schema`; schedules' own rules in `worker.schedules.inputs`)."""

from __future__ import annotations

from worker.definitions.problems import Problem
from worker.definitions.schema import WorkflowSpec


def trigger_problems(spec: WorkflowSpec) -> list[Problem]:
    return _webhook_problems(spec) + _schedule_problems(spec)


def _webhook_problems(spec: WorkflowSpec) -> list[Problem]:
    """`on: {webhook: {secret: NAME}}` names one of the workflow's own credentials (read with its own policy)."""
    hook = spec.on.webhook if spec.on is not None else None
    if hook is None or hook.secret in spec.credentials:
        return []
    declared = ", ".join(sorted(spec.credentials)) or "none"
    reason = (f"on.webhook.secret: no credential '{hook.secret}' is declared under credentials (declared: "
              f"{declared}); the webhook's HMAC secret is the `secret` key of one of the workflow's own credentials")
    return [Problem(("on", "webhook", "secret"), reason)]


def _schedule_problems(spec: WorkflowSpec) -> list[Problem]:
    """`on: {schedule: {inputs: ...}}` reads only the tick and gives the workflow inputs it can start with."""
    if spec.on is None or spec.on.schedule is None:
        return []
    from worker.schedules.inputs import schedule_problems  # local: worker.schedules imports this package

    return [Problem(loc, reason, at_key=at_key) for loc, reason, at_key in schedule_problems(spec)]
