"""Which environment variables a workflow file may name (`api_key_env`, `base_url_env`): pure rules.

A workflow file never reads the worker's environment by itself: it may only name a variable the operator
allows (`AGENTRT_STEP_ENV_ALLOW`, default `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `AGENTRT_DEMO_MODEL_URL`).
The worker's own identity and configuration (`VAULT_*`, `BAO_*`, `AGENTRT_*`) can never be named, whatever
the setting says, compared case-insensitively. The one exception is `AGENTRT_DEMO_MODEL_URL` as a
`base_url_env`: it holds the loopback URL of the offline demo model that `agentrt dev` starts, not a secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from worker.errors import ConfigError

EnvField = Literal["api_key_env", "base_url_env"]

FORBIDDEN_PREFIXES = ("VAULT_", "BAO_", "AGENTRT_")
DEMO_MODEL_URL = "AGENTRT_DEMO_MODEL_URL"  # the one AGENTRT_ name, and only as a base_url_env


def forbidden(name: str, field: EnvField | None = None) -> bool:
    """The name is the worker's own (identity or configuration) and never readable by a workflow."""
    if name == DEMO_MODEL_URL and field != "api_key_env":  # this exact spelling only
        return False
    return name.upper().startswith(FORBIDDEN_PREFIXES)


def check_allow_list(names: Iterable[str]) -> tuple[str, ...]:
    """`AGENTRT_STEP_ENV_ALLOW` validated: a ConfigError if it names a variable that is never allowed."""
    names = tuple(names)
    bad = [n for n in names if forbidden(n)]
    if bad:
        raise ConfigError(
            f"AGENTRT_STEP_ENV_ALLOW names {', '.join(bad)}: VAULT_*, BAO_* and AGENTRT_* variables (the worker's "
            f"identity and configuration) can never be read by a workflow (the one exception is {DEMO_MODEL_URL}, "
            "as a base_url_env); give workflows a Vault credential instead")
    return names


def refusal(name: str, field: EnvField, allowed: Iterable[str]) -> str | None:
    """Why a workflow may not name `name` in `field`, with what to do instead; None when it may."""
    allowed = tuple(allowed)
    if forbidden(name, field):
        return (f"{field}: {name!r} is the worker's own variable (VAULT_*, BAO_* and AGENTRT_* can never be read "
                "by a workflow); use `credential:` with a Vault credential the step lists under secrets:")
    if name in allowed:
        return None
    listed = ", ".join(allowed) if allowed else "none"
    return (f"{field}: {name!r} is not a variable workflows may read (allowed: {listed}); use `credential:` "
            f"with a Vault credential, or ask the operator to add {name} to AGENTRT_STEP_ENV_ALLOW")
