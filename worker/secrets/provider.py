"""VaultSecretProvider: fetch a step's credentials from Vault KV v2 when the step runs.

Each read goes through a step token limited to the workflow's own policy (see policies.py), so a
step can never read a path its workflow was not granted. Values are cached in process memory only,
for `secret_cache_ttl` seconds, keyed by (policy, mount, path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from worker.config import Settings
from worker.definitions.model import Definition
from worker.definitions.schema import CredentialSpec, StepSpec
from worker.errors import ExpressionError, StepFailed
from worker.secrets.deferred import fill_secrets, step_reads_secrets
from worker.secrets.policies import credential_scopes, kv_data_path, workflow_policy_name
from worker.secrets.redact import ActiveSecrets, Redactor, install_log_filter, remove_log_filter
from worker.secrets.vault import (
    VaultAuthFailed,
    VaultDenied,
    VaultMissing,
    VaultSession,
    VaultUnavailable,
)

logger = logging.getLogger(__name__)

Secrets = dict[str, dict[str, Any]]


def step_credentials(step: StepSpec) -> list[str]:
    """The credential names a step may use (its `secrets:` list; load-time checks cover expressions)."""
    return list(dict.fromkeys(step.secrets))


class VaultSecretProvider:
    """The SecretProvider used when VAULT_ADDR is set."""

    def __init__(self, settings: Settings, session: VaultSession | None = None) -> None:
        assert settings.vault_addr is not None
        self.addr = settings.vault_addr
        self.cache_ttl = settings.secret_cache_ttl
        self.session = session or VaultSession(
            settings.vault_addr, token=settings.vault_token, role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id, approle_mount=settings.vault_approle_mount,
            token_role=settings.vault_token_role, step_token_ttl=settings.vault_step_token_ttl)
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self.active = ActiveSecrets()
        self._log_filter = install_log_filter(self.active)
        self._renewer: asyncio.Task[None] | None = None

    # -- SecretProvider ----------------------------------------------------------------------
    async def prepare(self, defn: Definition, step: StepSpec, inputs: dict[str, Any],
                      context: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Secrets]:
        names = step_credentials(step)
        if not names:
            return inputs, {}
        self._start_renewer()
        secrets = await self.fetch(defn, names, credential_scopes(defn, step))
        if not step_reads_secrets(defn.def_hash, step.id, step.with_):
            return inputs, secrets
        try:
            ctx = {**context(), "secrets": secrets}
            if defn.heavy_expressions:  # expressions that can do real work run off the event loop
                args = await asyncio.to_thread(fill_secrets, step.with_, inputs, ctx)
            else:
                args = fill_secrets(step.with_, inputs, ctx)
        except ExpressionError as exc:
            # the message may quote a value (e.g. int() of a secret): redact before anyone sees it
            reason = Redactor(secrets).text(str(exc))
            raise StepFailed(f"cannot render secret references: {reason}", retryable=False) from None
        return args, secrets

    def redact(self, value: Any, secrets: Any) -> Any:
        return Redactor(secrets)(value)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
        self._cache.clear()
        remove_log_filter(self._log_filter)

    # -- fetching ----------------------------------------------------------------------------
    async def fetch(self, defn: Definition, names: list[str], scopes: dict[str, str] | None = None) -> Secrets:
        """The values of credentials `names`, each read with its policy (default: the workflow's)."""
        default = workflow_policy_name(defn.name)
        now = time.monotonic()
        out: Secrets = {}
        missing: dict[str, dict[str, CredentialSpec]] = {}  # policy -> credentials to read with it
        for name in names:
            cred = defn.spec.credentials[name]
            policy = (scopes or {}).get(name, default)
            hit = self._cache.get((policy, cred.mount, cred.path))
            if hit is not None and hit[0] > now:
                out[name] = hit[1]
            else:
                missing.setdefault(policy, {})[name] = cred
        for policy, creds in missing.items():
            try:
                fetched = await asyncio.to_thread(self._read, policy, creds)
            except VaultUnavailable as exc:
                raise StepFailed(f"waiting for credentials: {exc}", retryable=True) from None
            except VaultAuthFailed as exc:
                raise StepFailed(f"credentials unavailable: {exc}", retryable=False) from None
            expires = time.monotonic() + self.cache_ttl
            for name, data in fetched.items():
                cred = creds[name]
                if self.cache_ttl > 0:
                    self._cache[(policy, cred.mount, cred.path)] = (expires, data)
                self.active.add(policy, name, data)
                out[name] = data
        return {name: out[name] for name in names}

    def _read(self, policy: str, creds: dict[str, CredentialSpec]) -> Secrets:
        """Blocking: read each credential with the workflow's step token (runs in a thread)."""
        policies = (policy,)
        out: Secrets = {}
        fresh = False
        for name, cred in creds.items():
            where = kv_data_path(cred)
            for attempt in (1, 2):
                try:
                    token = self.session.step_token(policies, fresh=fresh)
                except VaultDenied as exc:
                    raise StepFailed(f"credential {name!r}: the worker's Vault token may not create a step "
                                     f"token with policy {policy} ({exc})", retryable=False) from None
                try:
                    out[name] = self.session.read_kv(token, cred.mount, cred.path)
                    break
                except VaultDenied:
                    if attempt == 1 and not fresh:
                        # the cached step token may be gone (Vault restarted, parent re-logged in)
                        self.session.forget_step_token(policies)
                        fresh = True
                        continue
                    raise StepFailed(f"credential {name!r}: permission denied reading {where} with policy "
                                     f"{policy} (is the path granted and the policy applied? "
                                     f"`agentrt vault policies --apply`)", retryable=False) from None
                except VaultMissing:
                    raise StepFailed(f"credential {name!r}: no secret at {where} (read with policy {policy})",
                                     retryable=False) from None
        return out

    # -- token renewal -----------------------------------------------------------------------
    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop(), name="vault-renewer")

    async def _renew_loop(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                delay = await asyncio.to_thread(self.session.renew_if_due)
            except (VaultUnavailable, VaultDenied, VaultAuthFailed) as exc:
                logger.warning("Vault token renewal failed: %s; retrying", exc)
                delay = 5.0
