"""When a schedule fires: tick times and the catch-up plan, as pure functions (no I/O, no clock).

- `cron`: five fields (minute hour day-of-month month day-of-week, as in crontab(5), with cronsim's
  extensions: names such as MON and JAN, `L`, `LW`, `#`), read in the schedule's `timezone`. Across DST
  changes cronsim follows Debian cron: a time that does not exist that day (02:30 when clocks jump from
  02:00 to 03:00) fires at the first minute that does (03:00); a time that occurs twice (02:30 when clocks
  fall back) fires once, the first time. Expressions with a star in the minute or hour field
  (`*/15 * * * *`) simply follow real time. No seconds field: for less than a minute use `every`.
- `every`: whole seconds, at least MIN_EVERY; the ticks are the multiples of the interval since
  1970-01-01T00:00:00Z (`every: 1h` fires on the hour, `every: 1d` at 00:00 UTC), so they do not depend on
  when a worker started. `timezone` then only sets how `${{ tick }}` is written.

Catch-up (`plan_fire`): when a worker looks at a schedule, its due ticks are those from its `next_fire_at`
up to now. The most recent of them is the *current* tick; any older one was *missed* (overtaken by a newer
tick before a worker fired it: no worker was running, the schedule was paused, workers were overloaded).

- `latest` (default): fire the current tick, skip the missed ones.
- `all`: fire the missed ticks and the current one, oldest first; at most MAX_CATCH_UP (the most recent
  ones; anything older is skipped), and at most `budget` per call (the rest on the next pass).
- `none`: fire the current tick only if it is at most ON_TIME_GRACE late (60 s, or the schedule's interval
  when that is shorter), skip the missed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

CatchUp = Literal["latest", "all", "none"]

MIN_EVERY = 1
"""The shortest `every` interval in seconds: a schedule fires at most once a second."""
MAX_EVERY = 366 * 86400
"""The longest `every` interval (366 days): rarer schedules are cron expressions."""
MAX_CATCH_UP = 1000
"""With `catch_up: all`, at most this many missed ticks are fired (the most recent); older ones are skipped."""
ON_TIME_GRACE = 60.0
"""With `catch_up: none`, how late (seconds) the current tick may be and still fire."""
MAX_CRON_LENGTH = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)  # where validation looks for a first tick
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


# ---- validation (used by the workflow schema, so errors are located at file:line:column) -----------


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    """The IANA names this host (or the tzdata package) knows; not the host-relative `localtime`."""
    return frozenset(available_timezones() - {"localtime", "posixrules", "Factory"}) | {"UTC"}


def check_timezone(name: str) -> str:
    """An IANA timezone name, or ValueError."""
    try:
        if name not in _known_zones():
            raise ValueError(name)
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as UTC, Europe/Berlin or "
                         "America/New_York") from None
    return name


def check_cron(expr: str) -> str:
    """A valid five-field cron expression that fires at least once (normalised spacing), or ValueError."""
    if len(expr) > MAX_CRON_LENGTH:
        raise ValueError(f"a cron expression is at most {MAX_CRON_LENGTH} characters")
    text = " ".join(expr.split())
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} has {len(fields)} field(s); it needs five: minute hour "
                         "day-of-month month day-of-week (e.g. '0 2 * * *'; for seconds use every: 30s)")
    try:
        first = CronSim(text, _REFERENCE)
    except CronSimError as exc:
        raise ValueError(_cron_reason(text, fields, str(exc))) from None
    except (ValueError, IndexError, OverflowError):
        raise ValueError(f"invalid cron expression {text!r}") from None
    try:
        next(first)
    except StopIteration:
        raise ValueError(f"cron expression {text!r} never fires") from None
    return text


def _cron_reason(text: str, fields: list[str], message: str) -> str:
    if message == "Bad day-of-month":
        try:
            CronSim(" ".join([*fields[:2], "1", *fields[3:]]), _REFERENCE)
        except (CronSimError, ValueError, IndexError, OverflowError):
            pass
        else:  # the field itself is fine: no month it allows has that day
            return (f"cron expression {text!r} never fires: no month in '{fields[3]}' has day "
                    f"'{fields[2]}'")
    for i, name in enumerate(_FIELDS):
        if message == f"Bad {name}":
            return f"invalid cron expression {text!r}: the {name} field '{fields[i]}' is not valid"
    return f"invalid cron expression {text!r}: {message}"


def check_every(seconds: float) -> float:
    """An `every` interval: whole seconds from MIN_EVERY to MAX_EVERY, or ValueError."""
    if seconds < MIN_EVERY:
        raise ValueError(f"{seconds:g}s is below the minimum of {MIN_EVERY}s "
                         "(a schedule fires at most once a second)")
    if seconds != int(seconds):
        raise ValueError(f"{seconds:g}s is not a whole number of seconds (e.g. 30s, 90s, 5m)")
    if seconds > MAX_EVERY:
        raise ValueError("at most 366d (use cron for rarer schedules)")
    return float(int(seconds))


def format_every(seconds: int) -> str:
    """30 -> `30s`, 300 -> `5m`, 90 -> `90s`, 86400 -> `1d`."""
    for size, unit in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover - 1 divides everything


# ---- tick times ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a (validated) schedule ticks: exactly one of `cron` and `every` (seconds)."""

    cron: str | None = None
    every: int | None = None
    timezone: str = "UTC"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Cadence:
        """From the `on.schedule` mapping as stored with the definition (already validated)."""
        every = spec.get("every")
        return cls(cron=spec.get("cron"), every=None if every is None else int(every),
                   timezone=str(spec.get("timezone") or "UTC"))

    @property
    def zone(self) -> tzinfo:
        return _zone(self.timezone)

    def describe(self) -> str:
        """`cron 0 2 * * * (Europe/Berlin)` or `every 30s`."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {format_every(self.every or 0)}"

    def next_after(self, when: datetime) -> datetime | None:
        """The first tick strictly after `when` (UTC), or None if there is none within 50 years."""
        if self.every is not None:
            step = self.every * 1_000_000
            k = ((when - _EPOCH) // _US) // step + 1
            return _EPOCH + k * step * _US
        assert self.cron is not None
        try:
            return next(CronSim(self.cron, when.astimezone(self.zone))).astimezone(UTC)
        except StopIteration:
            return None

    def recent(self, since: datetime, until: datetime, limit: int) -> tuple[list[datetime], int]:
        """The most recent `limit` ticks in [since, until], oldest first, and how many there are in all
        (exact for `every`; for cron, counted only as far as `limit`)."""
        if until < since or limit < 1:
            return [], 0
        if self.every is not None:
            step = self.every * 1_000_000
            first = -(-((since - _EPOCH) // _US) // step)  # ceil
            last = ((until - _EPOCH) // _US) // step
            if last < first:
                return [], 0
            count = last - first + 1
            n = min(count, limit)
            return [_EPOCH + (last - n + 1 + i) * step * _US for i in range(n)], count
        assert self.cron is not None
        start = (until.replace(microsecond=0) + _SECOND).astimezone(self.zone)  # reverse yields ticks < start
        found: list[datetime] = []
        for tick in CronSim(self.cron, start, reverse=True):  # ends by itself 50 years back
            at = tick.astimezone(UTC)
            if at < since or (found and at >= found[-1]):
                break
            found.append(at)
            if len(found) >= limit:
                break
        found.reverse()
        return found, len(found)

    def render_tick(self, tick: datetime) -> dict[str, Any]:
        """What a schedule's `inputs:` may read: `tick` (ISO 8601 in the schedule's timezone) and `tick_unix`."""
        return {"tick": tick.astimezone(self.zone).isoformat(), "tick_unix": int(tick.timestamp())}


# ---- catch-up ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What to do with a schedule now."""

    fire: tuple[datetime, ...]
    """Ticks to fire, oldest first."""
    skipped: int
    """Due ticks the policy drops (a lower bound for cron past MAX_CATCH_UP)."""
    next_fire_at: datetime | None
    """Where the schedule goes on: the first tick not yet considered (None: it never fires again)."""


def plan_fire(cadence: Cadence, next_fire_at: datetime, now: datetime, catch_up: CatchUp,
              budget: int = MAX_CATCH_UP) -> FirePlan:
    """Which due ticks (from `next_fire_at` to `now`) to fire under `catch_up`; at most `budget` of them."""
    due, total = cadence.recent(next_fire_at, now, MAX_CATCH_UP + 1)
    if not due:
        return FirePlan((), 0, next_fire_at if next_fire_at > now else cadence.next_after(now))
    current = due[-1]
    following = cadence.next_after(current)
    if catch_up == "all":
        kept = due[-MAX_CATCH_UP:]
        fire = kept[:max(1, budget)]
        resume_at = kept[len(fire)] if len(fire) < len(kept) else following
        return FirePlan(tuple(fire), total - len(kept), resume_at)
    if catch_up == "none":
        grace = ON_TIME_GRACE if following is None else min(ON_TIME_GRACE, (following - current).total_seconds())
        if (now - current).total_seconds() > grace:
            return FirePlan((), total, following)
    return FirePlan((current,), total - 1, following)
