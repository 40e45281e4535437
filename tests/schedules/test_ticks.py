"""Tick times and catch-up plans (worker/schedules/ticks.py): pure, with fixed instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.schedules.ticks import (
    MAX_CATCH_UP,
    Cadence,
    check_cron,
    check_every,
    check_timezone,
    format_every,
    plan_fire,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def walk(cadence: Cadence, start: datetime, n: int) -> list[datetime]:
    out, at = [], start
    for _ in range(n):
        nxt = cadence.next_after(at)
        assert nxt is not None
        out.append(nxt)
        at = nxt
    return out


def test_cron_reads_its_fields_in_the_schedule_timezone() -> None:
    berlin = Cadence(cron="0 2 * * *", timezone="Europe/Berlin")
    assert berlin.next_after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)  # 02:00 CET
    assert berlin.next_after(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)  # 02:00 CEST
    assert Cadence(cron="0 2 * * *").next_after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 2)
    assert berlin.describe() == "cron 0 2 * * * (Europe/Berlin)"
    assert Cadence(every=30).describe() == "every 30s"


def test_spring_forward_a_time_that_does_not_exist_fires_once_at_the_first_minute_that_does() -> None:
    # 2026-03-29: Berlin clocks jump from 02:00 to 03:00; 02:30 does not exist that day
    cadence = Cadence(cron="30 2 * * *", timezone="Europe/Berlin")
    ticks = walk(cadence, utc(2026, 3, 27, 12), 4)
    local = [t.astimezone(cadence.zone).strftime("%m-%d %H:%M %Z") for t in ticks]
    assert local == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]
    assert ticks[1] == utc(2026, 3, 29, 1)
    # the reverse walk (used for catch-up) finds the same ticks
    recent, count = cadence.recent(utc(2026, 3, 27, 12), utc(2026, 3, 31, 12), 10)
    assert recent == ticks and count == 4


def test_fall_back_a_time_that_occurs_twice_fires_once() -> None:
    # 2026-10-25: Berlin clocks fall back from 03:00 to 02:00; 02:30 happens twice
    cadence = Cadence(cron="30 2 * * *", timezone="Europe/Berlin")
    ticks = walk(cadence, utc(2026, 10, 24, 12), 2)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]  # the first 02:30 (CEST), then CET
    recent, _ = cadence.recent(utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), 10)
    assert recent == ticks
    # a schedule with a star in the hour field follows real time: the repeated hour has its ticks twice
    half_hourly = Cadence(cron="*/30 * * * *", timezone="Europe/Berlin")
    hour = half_hourly.recent(utc(2026, 10, 25, 0), utc(2026, 10, 25, 1, 59), 100)[0]
    assert [t.astimezone(half_hourly.zone).strftime("%H:%M%z") for t in hour] == [
        "02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100"]


def test_every_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    every = Cadence(every=30)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 30)
    assert every.next_after(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1)  # strictly after
    assert Cadence(every=3600).next_after(utc(2026, 1, 1, 5, 59, 59, 999999)) == utc(2026, 1, 1, 6)
    ticks, count = every.recent(utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 2), 10)
    assert ticks == [utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 1, 30),
                     utc(2026, 1, 1, 0, 2)] and count == 4
    ticks, count = every.recent(utc(2026, 1, 1), utc(2026, 1, 2), 3)  # the most recent three of 2881
    assert ticks == [utc(2026, 1, 1, 23, 59), utc(2026, 1, 1, 23, 59, 30), utc(2026, 1, 2)] and count == 2881
    assert every.recent(utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 29), 5) == ([], 0)
    assert every.render_tick(utc(2026, 1, 1, 0, 0, 30)) == {"tick": "2026-01-01T00:00:30+00:00",
                                                           "tick_unix": 1767225630}
    assert Cadence(every=60, timezone="Asia/Kolkata").render_tick(utc(2026, 1, 1))["tick"] == \
        "2026-01-01T05:30:00+05:30"
    assert [format_every(s) for s in (1, 30, 90, 300, 3600, 5400, 86400)] == \
        ["1s", "30s", "90s", "5m", "1h", "90m", "1d"]


# ---- catch-up -----------------------------------------------------------------------------------

EVERY_MINUTE = Cadence(every=60)


def test_on_time_one_due_tick_fires_under_every_policy() -> None:
    for policy in ("latest", "all", "none"):
        plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 0, 0, 300_000), policy)
        assert plan.fire == (utc(2026, 5, 1, 12),) and plan.skipped == 0
        assert plan.next_fire_at == utc(2026, 5, 1, 12, 1)


def test_nothing_due_keeps_the_next_fire_time() -> None:
    plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12, 1), utc(2026, 5, 1, 12, 0, 30), "all")
    assert plan.fire == () and plan.next_fire_at == utc(2026, 5, 1, 12, 1)


def test_latest_fires_only_the_most_recent_missed_tick() -> None:
    # the only worker was down from 12:00 to 12:10:20
    plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 10, 20), "latest")
    assert plan.fire == (utc(2026, 5, 1, 12, 10),) and plan.skipped == 10
    assert plan.next_fire_at == utc(2026, 5, 1, 12, 11)


def test_all_fires_every_missed_tick_oldest_first_within_the_budget() -> None:
    plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 10, 20), "all")
    assert plan.fire == tuple(utc(2026, 5, 1, 12, m) for m in range(11)) and plan.skipped == 0
    assert plan.next_fire_at == utc(2026, 5, 1, 12, 11)
    # a pass with room for 4: the next pass goes on at the fifth
    plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 10, 20), "all", budget=4)
    assert plan.fire == tuple(utc(2026, 5, 1, 12, m) for m in range(4))
    assert plan.next_fire_at == utc(2026, 5, 1, 12, 4) and plan.skipped == 0


def test_all_is_bounded_to_the_most_recent_thousand_ticks() -> None:
    start = utc(2026, 5, 1)
    now = start + timedelta(minutes=5000)  # 5001 due ticks
    plan = plan_fire(EVERY_MINUTE, start, now, "all")
    assert len(plan.fire) == MAX_CATCH_UP == 1000 and plan.skipped == 4001
    assert plan.fire[0] == now - timedelta(minutes=999) and plan.fire[-1] == now
    cron = Cadence(cron="* * * * *")  # the same with cron: the count is known up to the bound
    plan = plan_fire(cron, start, now, "all", budget=10)
    assert plan.fire[0] == now - timedelta(minutes=999) and len(plan.fire) == 10 and plan.skipped == 1
    assert plan.next_fire_at == now - timedelta(minutes=989)


def test_none_skips_missed_ticks_and_fires_the_current_one_only_when_on_time() -> None:
    # downtime: the missed ticks are skipped; the current one (20 s late) is on time
    plan = plan_fire(EVERY_MINUTE, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 10, 20), "none")
    assert plan.fire == (utc(2026, 5, 1, 12, 10),) and plan.skipped == 10
    daily = Cadence(cron="0 2 * * *", timezone="Europe/Berlin")
    three_days_down = (utc(2026, 5, 1, 0), utc(2026, 5, 4, 0, 0, 45))  # 02:00 CEST = 00:00 UTC
    plan = plan_fire(daily, *three_days_down, "none")
    assert plan.fire == (utc(2026, 5, 4, 0),) and plan.skipped == 3  # 45 s late: within the 60 s grace
    plan = plan_fire(daily, three_days_down[0], utc(2026, 5, 4, 0, 5), "none")
    assert plan.fire == () and plan.skipped == 4 and plan.next_fire_at == utc(2026, 5, 5, 0)
    plan = plan_fire(daily, three_days_down[0], utc(2026, 5, 4, 0, 5), "latest")
    assert plan.fire == (utc(2026, 5, 4, 0),) and plan.skipped == 3
    assert len(plan_fire(daily, three_days_down[0], utc(2026, 5, 4, 0, 5), "all").fire) == 4
    # an interval shorter than the grace: the current tick is on time until the next one is due
    plan = plan_fire(Cadence(every=10), utc(2026, 5, 1), utc(2026, 5, 1, 0, 0, 19), "none")
    assert plan.fire == (utc(2026, 5, 1, 0, 0, 10),) and plan.skipped == 1
    assert plan.next_fire_at == utc(2026, 5, 1, 0, 0, 20)


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "message"), [
    ("0 0 30 2 *", "never fires: no month in '2' has day '30'"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("61 * * * *", "the minute field '61' is not valid"),
    ("0 25 * * *", "the hour field '25' is not valid"),
    ("0 2 * * 8", "the day-of-week field '8' is not valid"),
    ("0 2 * *", "has 4 field(s); it needs five"),
    ("*/10 * * * * *", "has 6 field(s)"),  # no seconds field: `every` is for that
    ("@daily", "has 1 field(s)"),
    ("", "has 0 field(s)"),
    ("0 " * 150, "at most 200 characters"),
])
def test_bad_cron_expressions_are_refused_with_the_reason(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_cron(expr)
    assert message in str(caught.value)


def test_good_values_pass_and_are_normalised() -> None:
    assert check_cron("  0   2 * *  MON-FRI ") == "0 2 * * MON-FRI"
    assert check_cron("0 0 29 2 *") == "0 0 29 2 *"  # leap days exist
    assert check_timezone("Europe/Berlin") == "Europe/Berlin" and check_timezone("UTC") == "UTC"
    for bad in ("Mars/Olympus", "../../etc/passwd", "", "localtime", "europe/berlin"):
        with pytest.raises(ValueError, match="unknown timezone"):
            check_timezone(bad)
    assert check_every(30.0) == 30.0
    for bad, message in ((0.001, "below the minimum of 1s"), (0.5, "below the minimum"), (1.5, "whole number"),
                         (400 * 86400.0, "at most 366d")):
        with pytest.raises(ValueError, match=message):
            check_every(bad)
