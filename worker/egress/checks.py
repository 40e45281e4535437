"""Load-time egress checks of a workflow file: the environment variables and tool-server commands it names.

Reported at file:line:column by the loader (`worker.boundary.load_checks`). The same rules are enforced
again when a step runs (`EgressPolicy.read_env`, `EgressPolicy.stdio_refusal`), for definitions stored
before the policy changed and for values that only an expression produces.
"""

from __future__ import annotations

from typing import Any

from worker.config import Settings
from worker.definitions.model import Problem
from worker.definitions.schema import WorkflowSpec
from worker.egress.envnames import EnvField, refusal

_ENV_FIELDS: tuple[EnvField, ...] = ("api_key_env", "base_url_env")
_STDIO = ("a workflow file may not declare a stdio tool server (a command the worker would run): declare it "
          "in the operator's tools.yaml, use an HTTP server (url:), or ask the operator to set "
          "AGENTRT_WORKFLOW_STDIO_TOOLS=1")


def workflow_problems(spec: WorkflowSpec, settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    if not settings.workflow_stdio_tools:
        problems += [Problem(("tools", name, "command"), _STDIO, at_key=True)
                     for name, server in spec.tools.items() if server.command is not None]
    for i, step in enumerate(spec.steps):
        args = step.with_
        if step.uses in ("llm", "agent"):
            problems += _env_problems(args, ("steps", i, "with"), settings.step_env_allow)
        if settings.workflow_stdio_tools:
            continue
        if step.uses == "tool" and _inline_stdio(args.get("server"), spec):
            problems.append(Problem(("steps", i, "with", "server", "command"), _STDIO, at_key=True))
        if step.uses == "agent" and isinstance(args.get("servers"), list):
            problems += [Problem(("steps", i, "with", "servers", j, "command"), _STDIO, at_key=True)
                         for j, ref in enumerate(args["servers"]) if _inline_stdio(ref, spec)]
    return problems


def _env_problems(args: dict[str, Any], where: tuple[str | int, ...], allowed: tuple[str, ...]) -> list[Problem]:
    problems: list[Problem] = []
    for field in _ENV_FIELDS:
        name = args.get(field)
        if not isinstance(name, str):
            continue  # absent, or a type error the step's argument check reports
        if "${{" in name:
            problems.append(Problem((*where, field), f"{field} must name a variable literally, not compute it "
                                                     "with an expression"))
        elif (reason := refusal(name, field, allowed)) is not None:
            problems.append(Problem((*where, field), reason))
    return problems


def _inline_stdio(ref: Any, spec: WorkflowSpec) -> bool:
    """An inline declaration with a command (a named one from `tools:` is reported where it is declared)."""
    if not isinstance(ref, dict) or ref.get("command") is None:
        return False
    name = ref.get("name")
    declared = spec.tools.get(name) if isinstance(name, str) else None
    return declared is None or declared.command is None
