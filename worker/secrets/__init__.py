"""Credentials for steps. The engine calls a SecretProvider; `build_secret_provider` picks one."""

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
        from worker.secrets.deferred import template_reads_secrets

        if step.secrets or template_reads_secrets(step.with_):
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
