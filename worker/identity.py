"""Who is acting: the OS user, plus the SSH client address when the session came in over SSH."""

from __future__ import annotations

import getpass
import os


def current_identity() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers): fall back to the uid
        user = f"uid:{os.getuid()}"
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    if ssh:
        return f"{user}@{ssh[0]}"
    return user
