"""`agentrt limits [--json]`: every limit of limits.yaml, its use across the fleet, and where the buckets live
(registered into worker.cli)."""

from __future__ import annotations

import argparse
from typing import Any

from worker import output as o
from worker.cli.support import EXIT_OK, with_client


def register(sub: Any) -> dict[str, Any]:
    lp = sub.add_parser(
        "limits", help="the limits of limits.yaml: rates, use in the current window, waiting steps, 429s, mode",
        description="Limits are defined by the operator in limits.yaml beside the workflows; steps opt in with "
                    "`limit: NAME` (or match: applies them to LLM calls). The counters are shared by every worker "
                    "in Redis; MODE says whether the workers share them (redis) or each enforces its own share "
                    "because Redis is unreachable (fallback).")
    lp.add_argument("--json", action="store_true", help="print JSON")
    return {"limits": with_client(cmd_limits)}


def _number(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1000:.1f}k" if value >= 10_000 else str(value)


async def cmd_limits(client: Any, args: argparse.Namespace) -> int:
    report = await client.limits()
    if args.json:
        o.print_json({**o.to_jsonable(report), "budgets": await client.budgets()})
        return EXIT_OK
    table = o.table("LIMIT", "RATES", "USED THIS WINDOW", "NOW", "WAITING", "429s")
    for lim in report.limits:
        rates = [f"req {lim.requests}" + (f" (burst {lim.burst})" if lim.burst else "") if lim.requests else "",
                 f"tok {lim.tokens}" if lim.tokens else "",
                 f"concurrency {lim.concurrency}" if lim.concurrency else ""]
        if lim.match:
            rates.append("match " + " ".join(f"{k}={v}" for k, v in lim.match.items()))
        if not lim.defined:
            rates.append("(not in limits.yaml)")
        used = [f"{_number(lim.window_requests)} req" if lim.requests else "",
                f"{_number(lim.window_tokens)} tok" if lim.tokens else ""]
        now = [f"{_number(lim.available_requests)} req free" if lim.requests and lim.available_requests is not None
               else "", f"{_number(lim.available_tokens)} tok free" if lim.tokens and lim.available_tokens is not None
               else "", f"{_number(lim.in_flight)}/{lim.concurrency} busy" if lim.concurrency else ""]
        rejected = _number(lim.rejected_429) + (f"\nlast {o.ago(lim.last_429_at)}" if lim.last_429_at else "")
        table.add_row(lim.name, "\n".join(r for r in rates if r), "\n".join(u for u in used if u) + f"\n/{lim.window}",
                      "\n".join(n for n in now if n) or "-", _number(lim.waiting), rejected)
    o.out.print(table)
    budgets = await client.budgets()
    if budgets:
        spend = o.table("BUDGET (workflow)", "PER RUN", "PER DAY", "SPENT TODAY", "CALLS TODAY", "ASKING", "ON EXCEED")
        for b in budgets:
            per_run = " ".join(p for p in (f"{b.tokens_per_run:,} tok" if b.tokens_per_run else "",
                                           f"${b.usd_per_run:,.2f}" if b.usd_per_run else "") if p) or "-"
            spend.add_row(b.workflow, per_run, f"${b.usd_per_day:,.2f}" if b.usd_per_day else "-",
                          f"${b.spent_today_usd:,.4f}", str(b.calls_today), str(b.asking), b.on_exceed)
        o.out.print(spend)
    if report.file_error:
        o.err.print(f"limits.yaml is invalid (the workers keep its previous good version): {report.file_error}",
                    markup=False)
    if not report.limits:
        o.err.print("no limits: define them in limits.yaml beside the workflows, e.g.\n"
                    "  limits:\n    openai: {requests: 500/min, tokens: 30000/min, match: {provider: openai}}",
                    markup=False)
    if report.redis_error:
        o.err.print(f"Redis is unreachable from here ({report.redis_error}): use counters are unknown", markup=False)
    fallback = [w for w in report.workers if w.mode == "fallback"]
    if report.mode == "redis":
        o.out.print(f"mode: redis (the {len(report.workers)} live worker(s) share these buckets)", markup=False)
    elif report.mode == "unknown":
        o.out.print("mode: unknown (no live worker reports one)", markup=False)
    else:
        o.out.print(f"mode: {report.mode}: {len(fallback)} of {len(report.workers)} live worker(s) cannot reach "
                    "Redis and enforce their own share of every limit (1 / live workers)", markup=False)
        for w in fallback:
            o.out.print(f"  {w.worker_id} since {o.ago(w.since)}: {w.reason or ''}", markup=False)
    return EXIT_OK
