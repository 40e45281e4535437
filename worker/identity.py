"""Who is acting: the OS user and groups, plus the SSH client and key when the session came over SSH.

Over SSH, OpenSSH sets `SSH_CONNECTION` ("client_ip client_port server_ip server_port"). With
`ExposeAuthInfo yes` in sshd_config it also sets `SSH_USER_AUTH` to a file listing the methods and
keys used ("publickey ssh-ed25519 AAAA…"); we record the SHA256 fingerprint of that key.
"""

from __future__ import annotations

import base64
import getpass
import grp
import hashlib
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: frozenset[str] = field(default_factory=frozenset)
    ssh_client: str | None = None
    key_fingerprint: str | None = None
    via: str | None = None  # set for callers of the HTTP API: "api 10.0.0.7" (the client's address)

    @property
    def origin(self) -> str:
        """Where the action came from, as recorded in the audit trail."""
        if self.via is not None:
            return self.via
        if self.ssh_client is None:
            return "local"
        fp = f" key {self.key_fingerprint}" if self.key_fingerprint else ""
        return f"ssh {self.ssh_client}{fp}"

    def __str__(self) -> str:
        return self.user if self.ssh_client is None else f"{self.user}@{self.ssh_client}"


def _groups(user: str) -> frozenset[str]:
    try:
        gid = pwd.getpwnam(user).pw_gid
        ids = os.getgrouplist(user, gid)
    except (KeyError, OSError):
        return frozenset()
    names = set()
    for g in ids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def key_fingerprint(auth_file: str | None) -> str | None:
    """SHA256 fingerprint (as `ssh-keygen -l` prints it) of the first public key in SSH_USER_AUTH."""
    if not auth_file:
        return None
    try:
        lines = Path(auth_file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "publickey":
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except ValueError:
                return None
            digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            return f"SHA256:{digest}"
    return None


def current() -> Identity:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers): fall back to the uid
        user = f"uid:{os.getuid()}"
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return Identity(
        user=user,
        groups=_groups(user),
        ssh_client=ssh[0] if ssh else None,
        key_fingerprint=key_fingerprint(os.environ.get("SSH_USER_AUTH")) if ssh else None,
    )


def current_identity() -> str:
    return str(current())
