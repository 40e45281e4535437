"""Load-time egress checks of a workflow file (placeholder: being written)."""

from __future__ import annotations

from worker.config import Settings
from worker.definitions.model import Problem
from worker.definitions.schema import WorkflowSpec


def workflow_problems(spec: WorkflowSpec, settings: Settings) -> list[Problem]:
    return []
