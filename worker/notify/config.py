"""`notify.yaml`: the operator's notification targets and routes; loading it (located errors, like `tools.yaml`),
following its edits, and routing a notification to its targets.

```yaml
expiring_before: 15m          # task.expiring: this long before an approval's deadline (default 15m)
give_up_after: 24h            # a notification not delivered by then is recorded as failed (default 24h)
retry: {initial_interval: 1s, max_interval: 5m}
targets:
  oncall:
    url: https://hooks.example.com/agentrt   # may be left out when the Vault secret holds `url`
    secret: oncall            # Vault KV v2 <AGENTRT_NOTIFY_VAULT_MOUNT>/<AGENTRT_NOTIFY_VAULT_PATH>/oncall
    format: json              # json (signed, the default) | slack ({"text", "blocks"})
    timeout: 10s
routes:                       # every route that matches sends to its targets (each target once)
  - kinds: [task.created, task.expiring, task.escalated]
    workflows: ["refund-*"]   # fnmatch patterns; default ["*"]
    targets: [oncall]
```

The file is the operator's: it lives beside the workflows (or at `AGENTRT_NOTIFY_FILE`), reserved like
`tools.yaml` (never loaded as a workflow), hot-reloaded (an invalid save keeps the previous good version and is
listed with the workflow errors). Signing secrets and URLs with tokens are read from Vault, never from here.
"""

from __future__ import annotations

import contextvars
import fnmatch
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from worker.config import Settings
from worker.definitions.loader import load_operator_text, read_operator_file
from worker.definitions.problems import Problem
from worker.definitions.schema import Duration, WorkflowSpec
from worker.errors import DefinitionError

logger = logging.getLogger(__name__)

NOTIFY_FILES = ("notify.yaml", "notify.yml")
KINDS: tuple[str, ...] = ("task.created", "task.expiring", "task.escalated", "run.failed", "worker.lost")
"""What a notification can be about (README, Notifications)."""
RECHECK_S = 1.0
"""How often the file's (mtime, size) is looked at again."""
TARGET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
_known_targets: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("notify_targets", default=None)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL belong in Vault: put the whole URL under the secret's `url` key")
    return value


def _check_secret(value: str) -> str:
    if not _SECRET_NAME.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r} is not a plain secret name (letters, digits, _ . - separated by /)")
    return value


def _check_kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown kind {value!r} (kinds: {', '.join(KINDS)})")
    return value


def _check_target(value: str) -> str:
    known = _known_targets.get()
    if known is not None and value not in known:
        defined = ", ".join(sorted(known)) or "none"
        raise ValueError(f"unknown target '{value}' (defined in targets: {defined})")
    return value


class TargetSpec(_Model):
    """One webhook: where (url, or the Vault secret's `url`), how it is signed, in which format."""

    url: Annotated[str, AfterValidator(_check_url)] | None = Field(None, max_length=2048)
    secret: Annotated[str, AfterValidator(_check_secret)] = Field(max_length=256)
    format: Literal["json", "slack"] = "json"
    timeout: Duration = Field(10.0, gt=0, le=120)
    headers: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=32)

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        reserved = {"content-type", "content-length", "host", "x-signature", "x-notification-id",
                    "x-notification-kind", "x-notification-timestamp", "x-notification-attempt"}
        for name in headers:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name) or name.lower() in reserved:
                raise ValueError(f"header {name!r} cannot be set here (reserved or not a plain header name)")
        return headers


class RouteSpec(_Model):
    kinds: list[Annotated[str, AfterValidator(_check_kind)]] = Field(default_factory=lambda: list(KINDS), min_length=1)
    workflows: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=lambda: ["*"],
                                                                                 min_length=1)
    targets: list[Annotated[str, AfterValidator(_check_target)]] = Field(min_length=1)


class RetrySpec(_Model):
    initial_interval: Duration = Field(1.0, gt=0, le=3600)
    max_interval: Duration = Field(300.0, gt=0, le=86400)


class NotifyFileSpec(_Model):
    """The whole `notify.yaml`."""

    targets: dict[Annotated[str, Field(pattern=TARGET_NAME)], TargetSpec] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    expiring_before: Duration = Field(900.0, gt=0)
    give_up_after: Duration = Field(86400.0, gt=0, le=30 * 86400)
    retry: RetrySpec = RetrySpec()

    @model_validator(mode="wrap")
    @classmethod
    def _targets_in_scope(cls, data: Any, handler: ModelWrapValidatorHandler[NotifyFileSpec]) -> NotifyFileSpec:
        """Routes may name only the targets this file defines (checked per name, so the error is located)."""
        targets = data.get("targets") if isinstance(data, dict) else None
        token = _known_targets.set(frozenset(targets) if isinstance(targets, dict) else frozenset())
        try:
            return handler(data)
        finally:
            _known_targets.reset(token)

    def routed(self, kind: str, workflow: str) -> list[str]:
        """The targets a notification of `kind` about `workflow` goes to (each once, in route order)."""
        out: list[str] = []
        for route in self.routes:
            if kind in route.kinds and any(fnmatch.fnmatchcase(workflow, p) for p in route.workflows):
                out += [t for t in route.targets if t not in out and t in self.targets]
        return out


def load_notify_text(text: str, path: str | Path = "<notify>") -> NotifyFileSpec:
    """Parse and validate a `notify.yaml`; DefinitionError with line:column."""
    return load_operator_text(text, path, NotifyFileSpec, "targets: and routes:")


def load_notify_file(path: Path) -> NotifyFileSpec:
    """Load `notify.yaml` (a regular file of at most 1 MiB)."""
    return load_notify_text(read_operator_file(path), path)


def notify_path(settings: Settings) -> Path | None:
    """The operator's notify file: AGENTRT_NOTIFY_FILE, else notify.yaml (or .yml) beside the workflows."""
    if settings.notify_file is not None:
        return settings.notify_file
    return next((settings.workflows_dir / n for n in NOTIFY_FILES if (settings.workflows_dir / n).is_file()), None)


class OperatorNotify:
    """The notify file, read again when it changes (at most every RECHECK_S).

    An invalid file keeps the previous good version (`error` says why); with no good version yet, nothing is
    routed. A missing file routes nothing. `routed()` is cached per (kind, workflow) until the file changes, so
    asking on every commit costs a dictionary lookup.
    """

    def __init__(self, settings: Settings, *, recheck: float = RECHECK_S) -> None:
        self.settings = settings
        self.error: DefinitionError | None = None
        self.path: Path | None = None
        self._recheck = recheck
        self._spec = NotifyFileSpec()
        self._stamp: tuple[str, int, int] | None = None
        self._checked = -1e18
        self._routes: dict[tuple[str, str], list[str]] = {}

    def current(self) -> NotifyFileSpec:
        now = time.monotonic()
        if now - self._checked < self._recheck:
            return self._spec
        self._checked = now
        path = self.path = notify_path(self.settings)
        try:
            info = os.stat(path) if path is not None else None
        except FileNotFoundError:
            info = None
        except OSError:
            return self._spec
        if path is None or info is None:
            if self._stamp is not None:
                logger.warning("the notify file %s is gone: no notification is routed", self._stamp[0])
            self._stamp, self._spec, self.error, self._routes = None, NotifyFileSpec(), None, {}
            self.path = None
            return self._spec
        stamp = (str(path), info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._spec, self.error = load_notify_file(path), None
                logger.info("notifications: %s: %d target(s), %d route(s)", path, len(self._spec.targets),
                            len(self._spec.routes))
            except DefinitionError as exc:
                logger.warning("invalid %s (keeping the previous version): %s", path.name, exc)
                self.error = exc
            self._stamp, self._routes = stamp, {}
        return self._spec

    def routed(self, kind: str, workflow: str) -> list[str]:
        spec = self.current()
        if not spec.routes:
            return []
        key = (kind, workflow)
        found = self._routes.get(key)
        if found is None:
            if len(self._routes) > 10_000:
                self._routes.clear()
            found = self._routes[key] = spec.routed(kind, workflow)
        return found


def reserved_vault_path(settings: Settings) -> tuple[str, str]:
    """(mount, path prefix) of the operator's notification secrets: no workflow credential may name them."""
    return settings.notify_vault_mount.strip("/"), settings.notify_vault_path.strip("/")


def _credentials(spec: WorkflowSpec) -> Iterator[tuple[str, str, str]]:
    for name, cred in spec.credentials.items():
        yield name, cred.mount.strip("/"), cred.path.strip("/")


def notify_problems(spec: WorkflowSpec, settings: Settings) -> list[Problem]:
    """The load-time check: a workflow credential may not point into the notification secrets' Vault path."""
    mount, prefix = reserved_vault_path(settings)
    problems: list[Problem] = []
    for name, cred_mount, path in _credentials(spec):
        if cred_mount == mount and (path == prefix or path.startswith(prefix + "/")):
            problems.append(Problem(("credentials", name, "path"), (
                f"credential '{name}' points into {mount}/{prefix}, the operator's notification secrets "
                "(AGENTRT_NOTIFY_VAULT_PATH): workflows cannot read them")))
    return problems
