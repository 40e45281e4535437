"""Text for the Limits screen: how full each limit is (a bar and a percentage), its cells, its detail, the fleet's
mode and the workflows' budgets. Pure functions of `worker.client.limits` records and a clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text

from console.formatting import DASH, format_age, short_id, truncate
from worker.client.limits import BudgetInfo, LimitInfo, LimitsReport
from worker.models import RunSummary

NEAR_FULL = 0.8
"""From this share of a limit (or a budget) on, it is shown as near full."""
BAR = 8
THROTTLED = "throttled: "

EXAMPLE = """\
limits:
  openai-gpt4o: {requests: 500/min, tokens: 30000/min, match: {provider: openai, model: gpt-4o*}}
  helpdesk-api: {requests: 20/s, concurrency: 10}
  anthropic:    {requests: 50/min, tokens: 40000/min, match: {host: api.anthropic.com}}"""

BUDGET_EXAMPLE = "budget: {tokens_per_run: 200000, usd_per_run: 2.00, usd_per_day: 50.00, on_exceed: ask}"


def count(n: float | None) -> str:
    """`312`, `21.4k`, `1.2M`, or a dash for unknown."""
    if n is None:
        return DASH
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(n) >= 10_000:
        return f"{n / 1000:.0f}k"
    if abs(n) >= 1000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n:g}"


def rate_amount(rate: str | None) -> float | None:
    """`500/min` -> 500.0 (None when there is no rate or it does not parse)."""
    if not rate or "/" not in rate:
        return None
    try:
        return float(rate.split("/", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Use:
    """One dimension of a limit: requests, tokens or concurrency, used out of cap."""

    kind: str
    used: int | None
    cap: float | None
    free: int | None

    @property
    def share(self) -> float | None:
        if self.free == 0 and self.cap:
            return 1.0  # nothing may leave now: full, whatever the window's count says
        if self.used is None or not self.cap:
            return None
        return self.used / self.cap


def uses(limit: LimitInfo) -> list[Use]:
    out: list[Use] = []
    if limit.requests:
        out.append(Use("req", limit.window_requests, rate_amount(limit.requests), limit.available_requests))
    if limit.tokens:
        out.append(Use("tok", limit.window_tokens, rate_amount(limit.tokens), limit.available_tokens))
    if limit.concurrency:
        free = None if limit.in_flight is None else max(0, limit.concurrency - limit.in_flight)
        out.append(Use("busy", limit.in_flight, float(limit.concurrency), free))
    return out


def fullest(limit: LimitInfo) -> Use | None:
    """The dimension closest to its cap (None: no counters known)."""
    known = [u for u in uses(limit) if u.share is not None]
    return max(known, key=lambda u: u.share or 0.0) if known else None


def share_style(share: float | None) -> str:
    if share is None:
        return "dim"
    if share >= 1.0:
        return "bold red"
    return "yellow" if share >= NEAR_FULL else "green"


def bar(share: float | None, width: int = BAR) -> Text:
    """`██████░░  75%` (`FULL` at 100 %, so it reads without colour too)."""
    if share is None:
        return Text(f"{'·' * width} {DASH:>4}", style="dim")
    filled = max(0, min(width, round(share * width)))
    label = "FULL" if share >= 1.0 else f"{min(share, 9.99):4.0%}"
    return Text(f"{'█' * filled}{'░' * (width - filled)} {label}", style=share_style(share))


def use_text(u: Use, window: str) -> str:
    """`312/500 req/min` (`10/10 busy`)."""
    per = "" if u.kind == "busy" else f"/{window}"
    return f"{count(u.used)}/{count(u.cap)} {u.kind}{per}"


def free_text(u: Use) -> str:
    return f"{count(u.free)} free" if u.free is not None else ""


def throttled_on(run: RunSummary) -> str | None:
    """The limit a parked run waits for (`throttled: NAME (next slot in 2.1s)`), else None."""
    text = run.waiting_on or ""
    if not text.startswith(THROTTLED):
        return None
    return text[len(THROTTLED):].split(" (", 1)[0]


def last_429(limit: LimitInfo, now: datetime) -> str:
    if limit.rejected_429 is None:
        return DASH
    return f"{limit.rejected_429} · {format_age(limit.last_429_at, now)}" if limit.last_429_at else str(
        limit.rejected_429)


def mode_text(report: LimitsReport, now: datetime, width: int) -> Text:
    """The fleet's mode and what is wrong, for the line above the table."""
    out = Text()
    live = len(report.workers)
    if report.mode == "redis":
        out.append(f"mode redis: the {live} live worker{'s' if live != 1 else ''} share these buckets", style="green")
    elif report.mode == "unknown":
        out.append("mode unknown: no live worker reports one (none running, or too old a version)", style="yellow")
    else:
        fallback = [w for w in report.workers if w.mode == "fallback"]
        head = "every worker" if report.mode == "fallback" else f"{len(fallback)} of {live} workers"
        out.append(f"mode {report.mode}: {head} in fallback, enforcing its own share", style="bold yellow")
        for w in fallback[:3]:
            since = f" since {format_age(w.since, now)}" if w.since else ""
            why = truncate(w.reason or "Redis unreachable", width - 40)
            out.append(f"\n  {short_id(w.worker_id, 24)}{since}: {why}", style="yellow")
    if report.redis_error:
        why = truncate(report.redis_error, width - 50)
        out.append(f"\nRedis unreachable from the console: counters unknown ({why})", style="bold red")
    if report.file_error:
        out.append(f"\nlimits.yaml invalid (workers keep its last good version): {truncate(report.file_error, width)}",
                   style="bold red")
    full = [lim.name for lim in report.limits if (share := _share(lim)) is not None and share >= 1.0]
    waiting = sum(lim.waiting or 0 for lim in report.limits)
    if full or waiting:
        parts = [f"{len(full)} full: {', '.join(full)}"] if full else []
        parts += [f"{waiting} step{'s' if waiting != 1 else ''} waiting"] if waiting else []
        out.append("\n" + " · ".join(parts), style="bold red" if full else "yellow")
    return out


def _share(limit: LimitInfo) -> float | None:
    u = fullest(limit)
    return u.share if u else None


def limit_detail(limit: LimitInfo, runs: Sequence[RunSummary], file: str | None, now: datetime) -> Text:
    """Everything about one limit, and the runs parked on it."""
    out = Text()
    out.append(limit.name, style="bold")
    if not limit.defined:
        out.append("  not in limits.yaml: counters left in Redis (another directory's, or removed)", style="yellow")
    elif file:
        out.append(f"  {file}", style="dim")
    out.append("\n")

    def field(name: str, value: str | Text, style: str = "") -> None:
        out.append(f"{name:<12}", style="dim")
        out.append(value if isinstance(value, Text) else Text(value, style=style))
        out.append("\n")

    for u in uses(limit):
        line = bar(u.share)
        line.append(f"  {use_text(u, limit.window)}" + (f" · {free_text(u)} now" if free_text(u) else ""),
                    style="")
        field({"req": "requests", "tok": "tokens", "busy": "concurrency"}[u.kind], line)
    rates = [r for r in (f"requests {limit.requests}" if limit.requests else "",
                         f"burst {limit.burst}" if limit.burst else "",
                         f"tokens {limit.tokens}" if limit.tokens else "",
                         f"concurrency {limit.concurrency}" if limit.concurrency else "") if r]
    if rates:
        field("rates", " · ".join(rates))
    if limit.match:
        field("match", " ".join(f"{k}={v}" for k, v in limit.match.items()))
    waiting = f"{limit.waiting} steps" if limit.waiting is not None else DASH
    field("waiting", waiting, "yellow" if limit.waiting else "")
    field("calls", f"{count(limit.granted)} let through · {count(limit.throttled)} had to wait")
    field("429s", last_429(limit, now), "red" if limit.rejected_429 else "")
    if runs:
        shown = ", ".join(f"{short_id(r.run_id)} {r.workflow}" for r in runs[:4])
        more = f" +{len(runs) - 4}" if len(runs) > 4 else ""
        field("parked", f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {shown}{more}  (o opens the first)")
    else:
        field("parked", "no run parked on it (steps that wait a moment stay on their worker)", "dim")
    return out


def empty_limits(report: LimitsReport | None) -> Text:
    """What to do when there is nothing to show."""
    if report is None:
        return Text("")
    if report.file is None:
        out = Text("No limits.yaml in the workflows directory, so nothing is rate-limited. Add one (hot-reloaded):\n",
                   style="dim")
        out.append(EXAMPLE + "\n", style="")
        out.append("then opt a step in with `limit: helpdesk-api` (agentrt limits, README \"Limits\").", style="dim")
        return out
    return Text(f"{report.file} defines no limits. Add one, e.g.\n{EXAMPLE}", style="dim")


# -- budgets ---------------------------------------------------------------------------------------------
def budget_share(b: BudgetInfo) -> float | None:
    return b.spent_today_usd / b.usd_per_day if b.usd_per_day else None


def per_run(b: BudgetInfo) -> str:
    parts = [f"${b.usd_per_run:,.2f}" if b.usd_per_run else "", f"{count(b.tokens_per_run)} tok"
             if b.tokens_per_run else ""]
    return " · ".join(p for p in parts if p) or DASH


def today(b: BudgetInfo) -> str:
    cap = f" / ${b.usd_per_day:,.2f}" if b.usd_per_day else ""
    return f"${b.spent_today_usd:,.2f}{cap}"


def asking_text(b: BudgetInfo) -> Text:
    if not b.asking:
        return Text("0", style="dim")
    return Text(f"{b.asking} ask", style="bold yellow")
