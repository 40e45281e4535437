"""Snapshots of the Limits view (`7`) at 80x24 and 160x48: a saturated limit, a worker in fallback, a budget
near its cap; a limit with runs parked on it; no limits.yaml at all. Regenerate with `--snapshot-update` (see
tests/console/test_snapshots.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.fakes import FakeRuntimeClient
from tests.console.helpers import make_app
from tests.console.test_pilot_limits import with_parked_runs
from tests.console.test_snapshots import SIZES, check, keys


@pytest.mark.parametrize("size", SIZES)
def test_limits(snap_compare: Any, size: tuple[int, int]) -> None:
    # helpdesk-api full on top, web-2 in fallback, support-triage's day at 96 %
    check(snap_compare, size, keys("7"))


@pytest.mark.parametrize("size", SIZES)
def test_limits_parked_runs(snap_compare: Any, size: tuple[int, int]) -> None:
    check(snap_compare, size, keys("7"), make_app(with_parked_runs()))


@pytest.mark.parametrize("size", SIZES)
def test_limits_without_a_limits_file(snap_compare: Any, size: tuple[int, int]) -> None:
    client = FakeRuntimeClient()
    client.no_limits_file()
    client.budget_infos = []
    client.limit_workers = []
    check(snap_compare, size, keys("7"), make_app(client))
