"""The worker's own identity stays in the worker: out of its environment, out of reach of its children.

The worker reads its Vault credential (VAULT_TOKEN, or the AppRole secret id) from the environment
once, into `Settings`. `forget_identity()` then removes those variables from the process environment,
so no child process (sandboxes, stdio tool servers, anything a library spawns) inherits them, and
overwrites them in the process's initial environment block, which is what `/proc/<pid>/environ`
keeps showing after `unsetenv`. `make_undumpable()` marks the process non-dumpable: its
`/proc/<pid>/{environ,mem,maps}` can then be read only with CAP_SYS_PTRACE, which sandbox processes
do not have (worker/sandbox drops every capability), so a same-user process cannot read the token
out of the worker's memory either.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable

logger = logging.getLogger(__name__)

IDENTITY_VARIABLES: tuple[str, ...] = (
    "VAULT_TOKEN", "BAO_TOKEN", "AGENTRT_VAULT_SECRET_ID", "VAULT_SECRET_ID",
)
"""The environment variables that carry the worker's own credential."""

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def forget_identity(names: Iterable[str] = IDENTITY_VARIABLES) -> list[str]:
    """Remove `names` from the environment and from the initial environment block; return those removed."""
    wanted = set(names)
    removed = [name for name in list(os.environ) if name in wanted]
    for name in removed:
        del os.environ[name]  # unsetenv(): children no longer inherit it
    scrubbed = _scrub_initial_block(wanted)
    if removed or scrubbed:
        logger.info("removed the worker's credentials from its environment (%s)",
                    ", ".join(sorted(set(removed) | set(scrubbed))))
    return sorted(set(removed) | set(scrubbed))


def _scrub_initial_block(names: set[str]) -> list[str]:
    """Zero `NAME=value` entries in the memory `/proc/self/environ` reads (Linux only; best effort)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    # fields after the command name (which may contain spaces and parentheses): env_start is field 50
    fields = stat[stat.rindex(b")") + 2:].split()
    try:
        env_start, env_end = int(fields[50 - 3]), int(fields[51 - 3])
    except (IndexError, ValueError):
        return []
    if env_end - env_start != len(block) or ctypes.string_at(env_start, len(block)) != block:
        return []  # the block moved (prctl PR_SET_MM) or reads differently: touch nothing
    scrubbed: list[str] = []
    offset = 0
    for entry in block.split(b"\0"):
        name = entry.split(b"=", 1)[0].decode("utf-8", "replace")
        if name in names and b"=" in entry:
            ctypes.memset(env_start + offset, 0, len(entry))
            scrubbed.append(name)
        offset += len(entry) + 1
    return scrubbed


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): no core dumps, and /proc/<pid>/{environ,mem} need CAP_SYS_PTRACE."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            logger.warning("could not mark the worker non-dumpable: errno %d", ctypes.get_errno())
            return False
        return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError) as exc:
        logger.warning("could not mark the worker non-dumpable: %s", exc)
        return False
