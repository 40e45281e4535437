"""Load-time checks that depend on what the operator allows, not on the workflow file alone.

The file's own rules live in `model.find_problems`. Whether `function: os:getenv` may be called, or an
environment variable may be named, depends on the deployment (settings, the workflows directory): the
worker, `agentrt validate` and the client's local registration pass such checks to the loader, which
reports their problems at file:line:column like any other. `worker.boundary.load_checks(settings)`
builds them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from worker.definitions.model import Problem
from worker.definitions.schema import WorkflowSpec

TrustCheck = Callable[[WorkflowSpec], list[Problem]]
"""One load-time check: the problems it finds in a spec that passed `find_problems`."""


def trust_problems(spec: WorkflowSpec, checks: Sequence[TrustCheck]) -> list[Problem]:
    return [problem for check in checks for problem in check(spec)]
