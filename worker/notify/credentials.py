"""The targets' signing secrets and URLs: read from Vault with the worker's own token, never from a workflow file.

A target's `secret: oncall` is the KV v2 secret `<AGENTRT_NOTIFY_VAULT_MOUNT>/data/<AGENTRT_NOTIFY_VAULT_PATH>/oncall`
(default `secret/data/agentrt/notify/oncall`) with the keys `signing_secret` (required for `format: json`) and `url`
(optional; when set it is the URL, e.g. a Slack webhook URL whose path is its token). The worker policy that
`agentrt vault policies --apply` writes may read that prefix; step tokens never can (their policies are the
workflows', and no workflow credential may point there: worker/notify/config.py `notify_problems`).

Values are cached in memory for `AGENTRT_SECRET_CACHE_TTL` seconds and handed to the worker's log redaction;
errors name the target and the path, never a value.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from worker.config import Settings
from worker.notify.config import TargetSpec, reserved_vault_path
from worker.secrets.vault import VaultDenied, VaultError, VaultMissing, VaultSession


class TargetUnavailable(Exception):
    """The target's credentials cannot be had now (Vault down, not configured, nothing stored): retry later."""


@dataclass(frozen=True, slots=True)
class TargetCredentials:
    url: str
    signing_secret: str | None


class TargetSecrets:
    """`await get(name, spec)`: the URL and signing secret of a target."""

    def __init__(self, settings: Settings, session: VaultSession | None, active: Any = None) -> None:
        self.mount, self.prefix = reserved_vault_path(settings)
        self.session = session
        self.active = active  # the provider's ActiveSecrets: fetched values are redacted from log lines
        self.ttl = settings.secret_cache_ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def where(self, spec: TargetSpec) -> str:
        return f"{self.mount}/data/{self.prefix}/{spec.secret}"

    async def get(self, name: str, spec: TargetSpec) -> TargetCredentials:
        data = await self._read(spec)
        url = data.get("url") or spec.url
        if not isinstance(url, str) or not url:
            raise TargetUnavailable(f"target {name!r} has no url (neither in the notify file nor under `url` at "
                                    f"{self.where(spec)})")
        secret = data.get("signing_secret")
        if spec.format == "json" and not (isinstance(secret, str) and secret):
            raise TargetUnavailable(f"target {name!r}: no `signing_secret` at {self.where(spec)}")
        return TargetCredentials(url, secret if isinstance(secret, str) and secret else None)

    async def _read(self, spec: TargetSpec) -> dict[str, Any]:
        hit = self._cache.get(spec.secret)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        if self.session is None:
            raise TargetUnavailable(f"its secret {self.where(spec)} is in Vault, and VAULT_ADDR is not set")
        session = self.session
        path = f"{self.prefix}/{spec.secret}"

        def read() -> dict[str, Any]:
            return session.read_kv(session.worker_token().value, self.mount, path)

        try:
            data = await asyncio.to_thread(read)
        except VaultMissing:
            raise TargetUnavailable(f"no secret at {self.where(spec)}") from None
        except VaultDenied as exc:
            raise TargetUnavailable(f"permission denied reading {self.where(spec)} with the worker's token "
                                    f"(`agentrt vault policies --apply` grants it): {exc}") from None
        except VaultError as exc:
            raise TargetUnavailable(str(exc)) from None
        if self.active is not None:
            self.active.add("notify", spec.secret, data)
        if self.ttl > 0:
            self._cache[spec.secret] = (time.monotonic() + self.ttl, data)
        return data
