"""Authorization: a YAML policy file maps users and groups to permissions per workflow.

```yaml
groups:                       # groups of the policy (OS groups of the user count too)
  oncall: [alice, bob]
rules:                        # the first rule whose `workflows` pattern matches decides
  - workflows: ["refund-*"]
    allow:
      view: ["*"]
      approve: ["group:finance"]
      cancel: ["group:oncall"]
      replay: ["group:oncall"]
  - workflows: ["*"]
    allow: {view: ["*"], approve: ["group:oncall"], cancel: ["group:oncall"], replay: ["group:oncall"]}
```

Principals: a user name, `group:<name>`, or `*`. No matching rule: denied. No policy file at all
(`AGENTRT_POLICY_FILE` unset): everything is allowed, and `agentrt doctor` says so.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.errors import ConfigError, PermissionDenied
from worker.identity import Identity

logger = logging.getLogger(__name__)

Action = Literal["view", "approve", "replay", "cancel"]
ACTIONS: tuple[Action, ...] = ("view", "approve", "replay", "cancel")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    workflows: list[str] = Field(default_factory=lambda: ["*"])
    allow: dict[Action, list[str]] = Field(default_factory=dict)


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


def load_policy(path: Path) -> PolicyFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"policy file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file {path}: invalid YAML: {exc}") from exc
    try:
        return PolicyFile.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"policy file {path}: {where}: {first['msg']}") from exc


class Authorizer:
    """Decides `allowed(identity, action, workflow)`; the CLI and the console share this code."""

    def __init__(self, policy: PolicyFile | None) -> None:
        self.policy = policy

    @classmethod
    def from_path(cls, path: Path | None) -> Authorizer:
        return cls(load_policy(path) if path is not None else None)

    @property
    def enforcing(self) -> bool:
        return self.policy is not None

    def principals(self, identity: Identity) -> set[str]:
        names = {identity.user, "*"} | {f"group:{g}" for g in identity.groups}
        if self.policy is not None:
            names |= {f"group:{g}" for g, members in self.policy.groups.items() if identity.user in members}
        return names

    def allowed(self, identity: Identity, action: Action, workflow: str) -> bool:
        if self.policy is None:
            return True
        for rule in self.policy.rules:
            if any(fnmatch.fnmatchcase(workflow, pattern) for pattern in rule.workflows):
                return bool(self.principals(identity) & set(rule.allow.get(action, [])))
        return False

    def check(self, identity: Identity, action: Action, workflow: str) -> None:
        if not self.allowed(identity, action, workflow):
            logger.warning("denied: %s may not %s runs of %s", identity, action, workflow)
            raise PermissionDenied(f"{identity.user} may not {action} runs of workflow {workflow!r} "
                                   f"(policy file)")

    def matches_any(self, identity: Identity, principals: list[str]) -> bool:
        """Is the identity one of `principals` (an approval's `approvers` list)?"""
        return not principals or bool(self.principals(identity) & set(principals))
