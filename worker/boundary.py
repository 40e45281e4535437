"""The trust boundary, assembled: the load-time checks of what workflow files may reach.

Workflow files are untrusted data; what they may reach is decided by the operator (settings,
the deployed task modules, `tools.yaml`). Each capability owns its rules — `worker.sandbox.modules`
(which functions `python` steps may call), `worker.egress.checks` (environment variables, hosts and
tool-server commands a file may name), `worker.limits.file` (the limits of `limits.yaml` a step may opt in
to), `worker.notify.config` (no credential may point at the notification secrets) — and this module hands
them to the loader in one place.
The same rules are enforced again when a step runs, so a definition stored before a policy changed
cannot use what the policy now refuses.
"""

from __future__ import annotations

from worker.config import Settings
from worker.definitions.trust import TrustCheck


def load_checks(settings: Settings) -> tuple[TrustCheck, ...]:
    """The deployment's load-time trust checks, for the loader (`load_file(..., checks=...)`)."""
    from worker.egress.checks import workflow_problems
    from worker.limits.file import OperatorLimits
    from worker.notify.config import notify_problems
    from worker.sandbox.modules import TaskModules

    modules = TaskModules.from_settings(settings)
    limits = OperatorLimits(settings.workflows_dir)
    return (modules.problems, lambda spec: workflow_problems(spec, settings), limits.problems,
            lambda spec: notify_problems(spec, settings))
