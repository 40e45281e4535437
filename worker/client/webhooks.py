"""RuntimeClient, part webhooks: `POST /hooks/<path>` of the HTTP API starts runs of the workflow whose file
declares `on: {webhook: {path: <path>, secret: NAME}}` (the HTTP side is worker/api/webhooks.py).

- `webhook_target(path)`: the active workflow that receives the path: None when none does, Conflict when two
  do (files of two workers' directories, say: the registry refuses the second within one directory). Such a
  path starts nothing until one of them lets it go, so a second file can never take a path over.
- `webhook_secret(target)`: the HMAC key, the `secret` key of the workflow's credential NAME, read from Vault
  exactly as a step of that workflow reads it: with a short-lived child token that carries only the
  workflow's own policy `agentrt-wf-<name>` (worker.secrets.provider), minted from the process's own Vault
  login (the `agentrt-worker` AppRole; never a root token). A file's `secret:` can only name its own
  credentials (checked at load), and that policy grants only the paths the operator reviewed and applied
  for that workflow, so no workflow file can verify with, or read, another workflow's secret. The key is
  kept in memory for SECRET_TTL seconds; a failed read is remembered for FAILURE_TTL seconds and concurrent
  requests share one read, so a flood of requests costs Vault at most one read per workflow every few
  seconds. The value (and the reason a read failed) is never part of an answer to the sender.
- `start_from_webhook(target, inputs, delivery_id=...)`: one run, its trigger `{"kind": "webhook", "path"}`
  and `requested_by: webhook:<path>`; a delivery id is the Idempotency-Key of the principal `webhook:<path>`
  (run_requests, as for `POST /v1/runs`): a sender's retry returns the run it started.
- `audit_webhook_refusal(...)`: the audit entry of a refused delivery (`webhook.refused`, outcome `denied`).
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from worker.client.base import ClientBase
from worker.definitions.model import Definition
from worker.definitions.schema import WEBHOOK_PATH
from worker.errors import Conflict, WorkerError
from worker.identity import Identity
from worker.models import RunId
from worker.oversight import audit
from worker.secrets.policies import workflow_policy_name

if TYPE_CHECKING:
    from worker.client.starts import StartsApi
    from worker.secrets.provider import VaultSecretProvider

_PATH = re.compile(WEBHOOK_PATH)
SECRET_KEY = "secret"
"""The key of the credential that holds a webhook's HMAC secret."""
MIN_SECRET = 16
"""Characters a webhook secret has at least (shorter ones are refused: guessable)."""
SECRET_TTL = 15.0
"""Seconds a webhook secret stays in the API process's memory (a rotated secret takes effect within this)."""
FAILURE_TTL = 5.0
"""Seconds a failed secret read is remembered before Vault is asked again."""


def webhook_principal(path: str) -> str:
    """Who a webhook acts as: `requested_by` of its runs, the owner of its delivery ids, its audit actor."""
    return f"webhook:{path}"


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    path: str
    workflow: str
    def_hash: str
    definition: Definition
    credential: str
    """The workflow's credential whose `secret` key signs the deliveries."""


class WebhookSecretUnavailable(WorkerError):
    """The secret could not be read (Vault unreachable or not configured, denied, nothing stored, no `secret`
    key): the webhook cannot verify deliveries now. The message is for the operator, never the sender."""


class _Secrets:
    """Webhook secrets by (policy, mount, path), with their expiry; failures too, for FAILURE_TTL."""

    def __init__(self, provider: VaultSecretProvider | None, problem: str | None = None) -> None:
        self.provider = provider
        self.problem = problem  # why there is no provider
        self.entries: dict[tuple[str, str, str], tuple[float, bytes | WebhookSecretUnavailable]] = {}
        self.locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def get(self, target: WebhookTarget) -> bytes:
        cred = target.definition.spec.credentials[target.credential]
        key = (workflow_policy_name(target.workflow), cred.mount, cred.path)
        found = self._fresh(key)
        if found is None:
            async with self.locks.setdefault(key, asyncio.Lock()):  # one read at a time per secret
                found = self._fresh(key)
                if found is None:
                    found = await self._read(target)
                    ttl = SECRET_TTL if isinstance(found, bytes) else FAILURE_TTL
                    self.entries[key] = (time.monotonic() + ttl, found)
        if isinstance(found, WebhookSecretUnavailable):
            raise found
        return found

    def _fresh(self, key: tuple[str, str, str]) -> bytes | WebhookSecretUnavailable | None:
        hit = self.entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def _read(self, target: WebhookTarget) -> bytes | WebhookSecretUnavailable:
        name = target.credential
        if self.provider is None:
            return WebhookSecretUnavailable(f"credential {name!r}: {self.problem}")
        try:
            # the workflow's own policy (fetch's default), as when one of its steps reads the credential
            values = (await self.provider.fetch(target.definition, [name]))[name]
        except WorkerError as exc:  # StepFailed (unreachable, denied, missing), a Vault error
            text = str(exc)
            return WebhookSecretUnavailable(text if repr(name) in text else f"credential {name!r}: {text}")
        secret = values.get(SECRET_KEY)
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            state = "holds no" if secret is None else f"holds a {type(secret).__name__} or shorter"
            return WebhookSecretUnavailable(f"credential {name!r} {state} `{SECRET_KEY}` key (a text of at least "
                                            f"{MIN_SECRET} characters)")
        return secret.encode("utf-8")

    async def aclose(self) -> None:
        self.entries.clear()
        if self.provider is not None:
            await self.provider.aclose()


class WebhooksApi(ClientBase):
    """Webhooks: the workflow behind a path, its secret, starting its runs, auditing refusals."""

    _webhook_secrets: _Secrets | None = None

    async def webhook_target(self, path: str) -> WebhookTarget | None:
        """The active workflow with `on: {webhook: {path: PATH}}`; None if none; Conflict if several."""
        if not isinstance(path, str) or not _PATH.match(path):
            return None
        rows = await self.pool.fetch(
            """SELECT name, def_hash, spec FROM (
                   SELECT DISTINCT ON (f.name) f.name, d.def_hash, d.spec, f.status
                     FROM workflow_files f JOIN definitions d ON d.def_hash = f.def_hash
                    ORDER BY f.name, f.updated_at DESC) active
                WHERE status <> 'deleted' AND spec -> 'on' -> 'webhook' ->> 'path' = $1
                ORDER BY name""", path)
        if len(rows) > 1:
            raise Conflict(f"webhook path {path!r} is claimed by several active workflows "
                           f"({', '.join(r['name'] for r in rows)}): nothing starts until only one declares it")
        if not rows:
            return None
        r = rows[0]
        defn = self._definitions.get(r["def_hash"])
        if defn is None:
            defn = self._definitions[r["def_hash"]] = Definition.from_json(r["spec"])
        hook = defn.spec.on.webhook if defn.spec.on is not None else None
        assert hook is not None and hook.secret in defn.spec.credentials  # the query and load-time checks
        return WebhookTarget(path, r["name"], r["def_hash"], defn, hook.secret)

    async def webhook_secret(self, target: WebhookTarget) -> bytes:
        """The HMAC key of `target` (cached; see the module docstring). WebhookSecretUnavailable if unreadable."""
        if self._webhook_secrets is None:
            if not self.settings.vault_addr:
                self._webhook_secrets = _Secrets(None, "VAULT_ADDR is not set for the API server")
            else:
                from worker.secrets.provider import VaultSecretProvider

                try:  # no second cache below ours: SECRET_TTL and FAILURE_TTL are the whole story
                    provider = VaultSecretProvider(replace(self.settings, secret_cache_ttl=0.0))
                except WorkerError as exc:  # no VAULT_TOKEN nor AppRole login configured
                    self._webhook_secrets = _Secrets(None, str(exc))
                else:
                    self._webhook_secrets = _Secrets(provider)
        return await self._webhook_secrets.get(target)

    async def start_from_webhook(self, target: WebhookTarget, inputs: dict[str, Any], *,
                                 delivery_id: str | None = None, origin: str | None = None) -> tuple[RunId, bool]:
        """Start a run of the target's workflow: (run id, True), or (the run, False) for a delivery id seen before
        with the same inputs; Conflict for the id with other inputs, WorkerError for inputs that do not fit."""
        who = Identity(user=webhook_principal(target.path), via=f"webhook {origin}" if origin else "webhook")
        starter = copy.copy(self)  # as acting_as: the same connections, acting as the webhook
        starter.identity = who
        trigger: dict[str, Any] = {"kind": "webhook", "path": target.path}
        if delivery_id is not None:
            trigger["delivery_id"] = delivery_id
        runs = cast("StartsApi", starter)  # RuntimeClient combines this part with StartsApi
        return await runs.start_run_once(target.workflow, inputs, idempotency_key=delivery_id,
                                         requested_by=who.user, trigger=trigger)

    async def audit_webhook_refusal(self, path: str, reason: str, *, workflow: str | None = None,
                                    origin: str | None = None, seen: dict[str, Any] | None = None) -> None:
        """An audit entry for a delivery that was refused (nothing was started)."""
        who = Identity(user=webhook_principal(path), via=f"webhook {origin}" if origin else "webhook")
        await audit.append(self.pool, who, "webhook.refused", outcome="denied", workflow=workflow, reason=reason,
                           seen=seen)

    async def close(self) -> None:
        if self._webhook_secrets is not None:
            await self._webhook_secrets.aclose()
        await super().close()
