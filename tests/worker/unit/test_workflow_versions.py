"""Choosing two versions of a workflow and diffing their sources (pure helpers behind workflow_diff)."""

from __future__ import annotations

import pytest

from worker.definitions.versions import diff_pair, resolve_version, source_diff
from worker.errors import NotFound

NEWEST_FIRST = ["c3" + "0" * 38, "b2" + "0" * 38, "a1" + "0" * 38]
C, B, A = NEWEST_FIRST


def test_resolve_version_by_full_hash_or_unique_prefix() -> None:
    assert resolve_version("w", NEWEST_FIRST, B) == B
    assert resolve_version("w", NEWEST_FIRST, "B200") == B  # case-insensitive
    with pytest.raises(NotFound, match="at least 4 characters"):
        resolve_version("w", NEWEST_FIRST, "b2")
    with pytest.raises(NotFound, match="has no version 'ffff'"):
        resolve_version("w", NEWEST_FIRST, "ffff")
    with pytest.raises(NotFound, match="ambiguous"):
        resolve_version("w", ["abcd1", "abcd2"], "abcd")


def test_default_pair_is_the_version_before_the_active_one() -> None:
    assert diff_pair("w", NEWEST_FIRST, C) == (B, C)
    assert diff_pair("w", NEWEST_FIRST, B) == (A, B)  # active is not the newest
    assert diff_pair("w", NEWEST_FIRST, A) == (C, A)  # reverted to the oldest: the one it replaced
    assert diff_pair("w", NEWEST_FIRST, None) == (B, C)  # deleted: the newest two
    assert diff_pair("w", NEWEST_FIRST, C, old="a100") == (A, C)
    assert diff_pair("w", NEWEST_FIRST, C, new="b200") == (A, B)
    assert diff_pair("w", NEWEST_FIRST, C, old="c300", new="a100") == (C, A)
    with pytest.raises(NotFound, match="no workflow named 'w'"):
        diff_pair("w", [], None)
    with pytest.raises(NotFound, match="only one version"):
        diff_pair("w", [A], A)


def test_source_diff_is_a_unified_diff_with_labels() -> None:
    old = "name: w\nsteps:\n  - {id: a, uses: set}\n"
    new = "name: w\nsteps:\n  - {id: b, uses: set}\n"
    assert source_diff(old, new, "w@old", "w@new").splitlines() == [
        "--- w@old", "+++ w@new", "@@ -1,3 +1,3 @@", " name: w", " steps:", "-  - {id: a, uses: set}",
        "+  - {id: b, uses: set}"]
    assert source_diff(old, old, "a", "b") == ""
    assert source_diff(old, old.rstrip("\n"), "a", "b") == ""  # a missing final newline is no change
