"""Credentials for steps. The engine calls a SecretProvider; `build_secret_provider` picks one.

deferred.py  `${{ secrets.* }}` placeholders (scheduler) and their late rendering (when a step runs)
redact.py    removing secret values from outputs, errors and log lines
policies.py  one read-only Vault policy per workflow (and per tool server), the worker policy
vault.py     the worker's Vault session: AppRole/token auth, renewal, step tokens, KV v2 reads
provider.py  VaultSecretProvider: the SecretProvider used when VAULT_ADDR is set
dev.py       seed_dev_vault for `agentrt dev`;  cli.py  `agentrt vault policies [--apply]`
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from worker.config import Settings
from worker.definitions.model import Definition
from worker.definitions.schema import StepSpec
from worker.errors import StepFailed

Secrets = Mapping[str, Mapping[str, Any]]  # credential name -> its key/value pairs


class SecretProvider(Protocol):
    async def prepare(self, defn: Definition, step: StepSpec, inputs: dict[str, Any],
                      context: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Secrets]:
        """Fetch the step's credentials and return (arguments with secret references filled, secrets)."""
        ...

    def redact(self, value: Any, secrets: Secrets) -> Any:
        """`value` with every secret value (raw, base64, URL-encoded) replaced before it is stored."""
        ...

    async def aclose(self) -> None: ...


class NoSecrets:
    """No Vault configured: steps that name no credentials run as they are; the others fail clearly.

    There is deliberately no fallback to environment variables.
    """

    async def prepare(self, defn: Definition, step: StepSpec, inputs: dict[str, Any],
                      context: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Secrets]:
        from worker.secrets.deferred import step_reads_secrets

        if step.secrets or step_reads_secrets(defn.def_hash, step.id, step.with_):
            names = ", ".join(step.secrets) or "secrets"
            raise StepFailed(f"step {step.id!r} needs credentials ({names}): credentials are declared but "
                             "VAULT_ADDR is not set", retryable=False)
        return inputs, {}

    def redact(self, value: Any, secrets: Secrets) -> Any:
        return value

    async def aclose(self) -> None:
        return None


def build_secret_provider(settings: Settings) -> SecretProvider:
    """The Vault provider when VAULT_ADDR is set, else NoSecrets."""
    if settings.vault_addr:
        from worker.secrets.provider import VaultSecretProvider

        return VaultSecretProvider(settings)
    return NoSecrets()
