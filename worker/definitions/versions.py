"""Pure helpers for a workflow's version history: pick two versions, diff their YAML sources."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from worker.errors import NotFound

MIN_PREFIX = 4
"""The shortest hash prefix accepted (listings show 8 or 12 characters)."""


def resolve_version(name: str, hashes: Sequence[str], given: str) -> str:
    """The full hash among `hashes` (the versions of `name`) that `given` (a hash or a unique prefix) names."""
    wanted = given.strip().lower()
    if len(wanted) < MIN_PREFIX:
        raise NotFound(f"version {given!r} of workflow {name!r}: give at least {MIN_PREFIX} characters of the hash")
    found = [h for h in hashes if h.lower().startswith(wanted)]
    if not found:
        raise NotFound(f"workflow {name!r} has no version {given!r} (see `agentrt workflows --versions {name}`)")
    if len(found) > 1:
        raise NotFound(f"version prefix {given!r} of workflow {name!r} is ambiguous; give more characters")
    return found[0]


def diff_pair(name: str, hashes: Sequence[str], active: str | None, old: str | None = None,
              new: str | None = None) -> tuple[str, str]:
    """(old hash, new hash) to compare. `hashes` are the versions of `name`, newest first.

    New defaults to the active version (else the newest); old defaults to the version stored just
    before the new one (else the newest other one: after a revert to an old version, the one it replaced).
    """
    if not hashes:
        raise NotFound(f"no workflow named {name!r} (see `agentrt workflows`)")
    if new:
        new_hash = resolve_version(name, hashes, new)
    else:
        new_hash = active if active is not None and active in hashes else hashes[0]
    if old:
        return resolve_version(name, hashes, old), new_hash
    older = list(hashes[hashes.index(new_hash) + 1:])
    others = older or [h for h in hashes if h != new_hash]
    if not others:
        raise NotFound(f"workflow {name!r} has only one version ({new_hash[:12]}): nothing to compare it with")
    return others[0], new_hash


def source_diff(old_source: str, new_source: str, old_label: str, new_label: str, *, context: int = 3) -> str:
    """A unified diff of two YAML sources ("" when they are identical)."""
    lines = difflib.unified_diff(old_source.splitlines(), new_source.splitlines(), fromfile=old_label,
                                 tofile=new_label, n=context, lineterm="")
    return "\n".join(lines)
