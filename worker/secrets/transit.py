"""Encrypted payloads: step inputs and outputs stored as Vault transit ciphertext (`vault:vN:…`).

Opt-in per workflow (`encrypt_payloads: true`) or for every workflow (`AGENTRT_ENCRYPT_PAYLOADS=1`).
A sealed value is the JSON object `{"$vault": "vault:v1:…"}` standing in for the plaintext. The
worker opens sealed values when it folds a run's log (it needs them for expressions), and the CLI and
the console open them for display. Rotating the key keeps old ciphertext readable: transit keeps every
key version (`agentrt vault rotate-payload-key`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from typing import Any

import orjson

from worker.config import Settings
from worker.errors import WorkerError
from worker.secrets.vault import VaultSession

MARK = "$vault"
SEALED_FIELDS = ("inputs", "output")  # the event-data fields that carry payloads


class CipherError(WorkerError):
    """Payloads could not be encrypted or decrypted."""


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARK), str)


class PayloadCipher:
    """Batch encrypt/decrypt of JSON values with one transit key (hvac is sync: calls run in threads)."""

    def __init__(self, session: VaultSession, key: str = "agentrt-payloads", mount: str = "transit") -> None:
        self.session = session
        self.key = key
        self.mount = mount
        self._key_ready = False

    def _transit(self) -> Any:
        return self.session.client(self.session.worker_token().value).secrets.transit

    def _ensure_key(self) -> None:
        if self._key_ready:
            return
        transit = self._transit()
        try:
            transit.read_key(name=self.key, mount_point=self.mount)
        except Exception:  # noqa: BLE001 - not there yet (first use): create it
            transit.create_key(name=self.key, mount_point=self.mount)
        self._key_ready = True

    def _encrypt(self, values: list[Any]) -> list[str]:
        self._ensure_key()
        batch = [{"plaintext": base64.b64encode(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)).decode()}
                 for v in values]
        reply = self._transit().encrypt_data(name=self.key, mount_point=self.mount, plaintext="",
                                             batch_input=batch)
        return [item["ciphertext"] for item in reply["data"]["batch_results"]]

    def _decrypt(self, ciphertexts: list[str]) -> list[Any]:
        reply = self._transit().decrypt_data(name=self.key, mount_point=self.mount, ciphertext="",
                                             batch_input=[{"ciphertext": c} for c in ciphertexts])
        out = []
        for item in reply["data"]["batch_results"]:
            if item.get("error"):
                raise CipherError(f"Vault transit could not decrypt a payload: {item['error']}")
            out.append(orjson.loads(base64.b64decode(item["plaintext"])))
        return out

    async def seal(self, values: list[Any]) -> list[dict[str, str]]:
        if not values:
            return []
        try:
            cipher = await asyncio.to_thread(self.session._call, self._encrypt, values)
        except WorkerError as exc:
            raise CipherError(f"Vault transit could not encrypt payloads: {exc}") from exc
        return [{MARK: c} for c in cipher]

    async def open(self, sealed: list[dict[str, str]]) -> list[Any]:
        if not sealed:
            return []
        try:
            return list(await asyncio.to_thread(self.session._call, self._decrypt, [s[MARK] for s in sealed]))
        except CipherError:
            raise
        except WorkerError as exc:
            raise CipherError(f"Vault transit could not decrypt payloads: {exc}") from exc

    def rotate(self) -> int:
        """Rotate the key (blocking); returns the new latest version. Old versions still decrypt."""
        self._ensure_key()
        transit = self._transit()
        transit.rotate_key(name=self.key, mount_point=self.mount)
        return int(transit.read_key(name=self.key, mount_point=self.mount)["data"]["latest_version"])


def build_cipher(settings: Settings) -> PayloadCipher | None:
    """A cipher when Vault is configured; None otherwise (sealing is then refused with a clear error)."""
    if not settings.vault_addr or not (settings.vault_token or (settings.vault_role_id and
                                                                settings.vault_secret_id)):
        return None
    session = VaultSession(settings.vault_addr, token=settings.vault_token, role_id=settings.vault_role_id,
                           secret_id=settings.vault_secret_id, approle_mount=settings.vault_approle_mount)
    return PayloadCipher(session, settings.transit_key, settings.transit_mount)


def require(cipher: PayloadCipher | None) -> PayloadCipher:
    if cipher is None:
        raise CipherError("encrypt_payloads needs Vault: set VAULT_ADDR and VAULT_TOKEN (or AppRole)")
    return cipher


async def seal_fields(cipher: PayloadCipher | None, holders: Iterable[dict[str, Any]],
                      fields: tuple[str, ...] = SEALED_FIELDS) -> None:
    """Replace the given fields of each dict (when present and not None) by sealed values, one batch."""
    spots = [(h, f) for h in holders for f in fields if h.get(f) is not None and not is_sealed(h.get(f))]
    if not spots:
        return
    sealed = await require(cipher).seal([h[f] for h, f in spots])
    for (holder, field), value in zip(spots, sealed, strict=True):
        holder[field] = value


async def open_fields(cipher: PayloadCipher | None, holders: Iterable[dict[str, Any]],
                      fields: tuple[str, ...] = SEALED_FIELDS) -> None:
    """Replace sealed values in the given fields of each dict by their plaintext, in one batch."""
    spots = [(h, f) for h in holders for f in fields if is_sealed(h.get(f))]
    if not spots:
        return
    opened = await require(cipher).open([h[f] for h, f in spots])
    for (holder, field), value in zip(spots, opened, strict=True):
        holder[field] = value
