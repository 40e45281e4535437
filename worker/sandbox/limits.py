"""What a sandbox process may inherit and what it may do: environment, identity, rlimits, capabilities.

The worker side (`sandbox_environment`, `check_env_allow`, `resolve_user`) decides, before a sandbox
starts, what it gets; the sandbox side (`apply`) runs at the very top of the sandbox's main, before
anything of the task is imported: preexec_fn is not safe in a threaded worker.

Only stdlib here: the sandbox imports this before its limits are in place.
"""

from __future__ import annotations

import ctypes
import fnmatch
import os
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NOFILE = 256  # descriptors a sandbox may hold
# Environment a sandbox never gets, even when the operator names it in AGENTRT_SANDBOX_ENV_ALLOW:
# the worker's identity (Vault, its own settings), telemetry endpoints and headers, and anything
# named like a credential. A task that needs a credential gets it from Vault through `ctx.secrets`.
FORBIDDEN_ENV = ("VAULT_*", "BAO_*", "AGENTRT_*", "OTEL_*", "*_TOKEN", "*_SECRET*", "*_PASSWORD", "*_KEY")
BASE_ENV = ("PATH", "LANG", "LANGUAGE", "LC_*", "TZ")  # inherited by every sandbox
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_CAP_VERSION_3 = 0x20080522


class SandboxSetupError(Exception):
    """The sandbox could not put a limit in place; it refuses to run task code without it."""


def forbidden_env(name: str) -> str | None:
    """The pattern that forbids `name` in a sandbox's environment, or None."""
    upper = name.upper()
    for pattern in FORBIDDEN_ENV:
        if fnmatch.fnmatchcase(upper, pattern):
            return pattern
    return None


def check_env_allow(names: Iterable[str]) -> list[str]:
    """Why each name in AGENTRT_SANDBOX_ENV_ALLOW cannot be allowed (empty: all are fine)."""
    problems = []
    for name in names:
        pattern = forbidden_env(name)
        if pattern is not None:
            problems.append(
                f"AGENTRT_SANDBOX_ENV_ALLOW names {name!r}, which matches {pattern!r}: sandboxes never get "
                "the worker's identity, settings or anything named like a credential (give the task a Vault "
                "credential with `secrets:` and read it from ctx.secrets instead)")
    return problems


def sandbox_environment(source: Mapping[str, str], allow: Iterable[str], home: str,
                        search_path: Iterable[str]) -> dict[str, str]:
    """The whole environment of a sandbox: a minimal base, HOME/TMPDIR of its own, and the allowed names."""
    env: dict[str, str] = {}
    allowed = set(allow)
    for name, value in source.items():
        if forbidden_env(name) is None and (name in allowed or any(fnmatch.fnmatchcase(name, p) for p in BASE_ENV)):
            env[name] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=home, TMPDIR=home, PYTHONPATH=os.pathsep.join(search_path), PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1")
    return env


@dataclass(frozen=True, slots=True)
class Identity:
    """The uid/gid/groups a sandbox switches to (only when the worker runs as root)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str


def resolve_user(spec: str | None) -> Identity | None:
    """AGENTRT_SANDBOX_USER (a name or a uid) as an identity; ValueError with the reason if it cannot be used."""
    if not spec:
        return None
    import grp
    import pwd

    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        raise ValueError(f"AGENTRT_SANDBOX_USER={spec!r}: no such user on this host") from None
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        raise ValueError(f"AGENTRT_SANDBOX_USER={spec!r}: switching to another user needs the worker to run "
                         f"as root (it runs as uid {os.geteuid()})")
    groups = tuple(sorted({entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem)}))
    return Identity(entry.pw_uid, entry.pw_gid, groups, entry.pw_name)


# -- inside the sandbox --------------------------------------------------------------------------
def apply(config: Mapping[str, Any]) -> dict[str, Any]:
    """Put every limit in place (batch scheduling, rlimits, identity, no_new_privs, no capabilities, not dumpable).

    Returns what was applied, for the `ready` frame. Raises SandboxSetupError if a limit cannot be set.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    memory_mb = int(config.get("memory_mb") or 0)
    cpu_seconds = int(config.get("cpu_seconds") or 0)
    # SCHED_BATCH: waking a sandbox never preempts the worker (its event loop goes on; the sandbox runs
    # when a core is free), and a busy task cannot starve the worker's heartbeats
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    _rlimit(resource.RLIMIT_CORE, 0)
    _rlimit(resource.RLIMIT_NOFILE, NOFILE)
    if memory_mb > 0:
        _rlimit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    if cpu_seconds > 0:  # SIGXCPU at the soft limit, SIGKILL a second later
        _rlimit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)
    user = config.get("user")
    if user is not None:
        os.setgroups(user["groups"])
        os.setgid(user["gid"])
        os.setuid(user["uid"])  # from root: clears every capability too
        if os.getuid() != user["uid"] or os.geteuid() != user["uid"]:
            raise SandboxSetupError(f"setuid({user['uid']}) did not take effect")
    _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    caps_dropped = _drop_capabilities(libc)
    # Not dumpable: another sandbox of the same uid cannot read this one's memory (a step's secrets).
    _prctl(libc, _PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")
    return {"uid": os.getuid(), "memory_mb": memory_mb, "cpu_seconds": cpu_seconds, "caps_dropped": caps_dropped}


def _rlimit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    _cur_soft, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:  # lowering is always allowed, raising is not
        soft, hard = min(soft, cur_hard), min(hard, cur_hard)
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError) as exc:
        raise SandboxSetupError(f"setrlimit({which}, {soft}): {exc}") from exc


def _prctl(libc: ctypes.CDLL, option: int, value: int, name: str) -> None:
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        errno = ctypes.get_errno()
        raise SandboxSetupError(f"prctl({name}) failed: {os.strerror(errno)}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _capabilities(libc: ctypes.CDLL) -> int:
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise SandboxSetupError(f"capget failed: {os.strerror(ctypes.get_errno())}")
    return sum((d.effective | d.permitted | d.inheritable) << (32 * i) for i, d in enumerate(data))


def _drop_capabilities(libc: ctypes.CDLL) -> bool:
    """Zero the effective, permitted and inheritable sets (and the bounding set while we may)."""
    if _capabilities(libc) == 0:
        return False
    for cap in range(64):  # needs CAP_SETPCAP, so before capset; EINVAL past the last capability
        libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()  # zero-initialised
    if libc.capset(ctypes.byref(header), data) != 0:
        raise SandboxSetupError(f"capset (dropping every capability) failed: {os.strerror(ctypes.get_errno())}")
    if _capabilities(libc) != 0:
        raise SandboxSetupError("capset returned but capabilities are still held")
    return True
