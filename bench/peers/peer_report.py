"""The figures of `bench/peers.py`: one sample per engine per round, medians, per-round ratios, the table.

Kept apart from the driver (no servers, no peers) so the arithmetic and the wording of the ratios are
tested without installing anything (tests/bench/test_peer_report.py).

A ratio always reads "AgentRuntime is Nx <peer>" with N > 1 meaning AgentRuntime is better: for the
latencies it is the peer's time over AgentRuntime's, for the throughput AgentRuntime's rate over the
peer's. Each round's ratio compares two engines measured minutes apart on the same machine, so the
median of the per-round ratios moves less with the machine's load than the ratio of the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

AGENTRT = "agentrt"
TITLES = {"agentrt": "AgentRuntime", "dbos": "DBOS", "restate": "Restate"}

Sample = dict[str, float]
"""One engine's figures in one round: w1_p50_ms, w1_p99_ms, w2_steps_per_s (and whatever else it adds)."""

Round = dict[str, Sample]

FIGURES: list[tuple[str, str, str, bool]] = [
    # (key, label, short label, higher is better)
    ("w1_p50_ms", "W1: sequential {steps}-step run, start to result seen, p50 (ms)", "W1 p50", False),
    ("w1_p99_ms", "W1: the same, p99 (ms)", "W1 p99", False),
    ("w2_steps_per_s", "W2: {runs} concurrent {steps}-step runs, all results seen (steps/s)", "W2 steps/s", True),
]


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile by nearest rank (what engine_bench.py uses too); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def sample(walls_s: Sequence[float], concurrent_s: float, concurrent_runs: int, steps: int) -> Sample:
    """One round's figures from the sequential runs' wall times and the concurrent batch's duration."""
    return {"w1_p50_ms": pct(walls_s, 50) * 1000, "w1_p99_ms": pct(walls_s, 99) * 1000,
            "w1_runs": float(len(walls_s)), "w2_steps_per_s": concurrent_runs * steps / concurrent_s,
            "w2_s": concurrent_s, "w2_runs": float(concurrent_runs)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def medians(rounds: Sequence[Round], engine: str) -> Sample:
    """Per figure, the median over the rounds that have this engine."""
    keys = {k for r in rounds if engine in r for k in r[engine]}
    return {k: median([r[engine][k] for r in rounds if engine in r and k in r[engine]]) for k in sorted(keys)}


def ratio(agentrt: Sample, peer: Sample, key: str, higher_is_better: bool) -> float:
    """How many times better AgentRuntime is than the peer on `key` (> 1: AgentRuntime better)."""
    a, b = agentrt[key], peer[key]
    return a / b if higher_is_better else b / a


def round_ratios(rounds: Sequence[Round], peer: str, key: str, higher_is_better: bool) -> list[float]:
    """AgentRuntime over `peer` in each round that measured both."""
    return [ratio(r[AGENTRT], r[peer], key, higher_is_better) for r in rounds if AGENTRT in r and peer in r]


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def ratio_sentence(rounds: Sequence[Round], peers: Sequence[str], key: str, higher_is_better: bool) -> str:
    """'AgentRuntime is 1.20x DBOS (rounds 1.10, 1.30), 0.50x Restate (...)' from per-round ratios."""
    parts = []
    for peer in peers:
        rs = round_ratios(rounds, peer, key, higher_is_better)
        if rs:
            parts.append(f"{median(rs):.2f}x {TITLES.get(peer, peer)} (rounds: {', '.join(f'{x:.2f}' for x in rs)})")
    return "AgentRuntime is " + ", ".join(parts) if parts else "no peer measured"


def format_report(rounds: Sequence[Round], engines: Sequence[str], skipped: Mapping[str, str], *,
                  steps: int, concurrent_runs: int, header: str) -> str:
    """The table of medians, one line of per-round ratios per figure, and every skipped peer's reason."""
    measured = [e for e in engines if any(e in r for r in rounds)]
    lines = [header]
    width = max(14, *(len(TITLES.get(e, e)) + 2 for e in measured)) if measured else 14
    lines.append(f"{'figure (medians of the rounds)':72}" + "".join(f"{TITLES.get(e, e):>{width}}" for e in measured))
    meds = {e: medians(rounds, e) for e in measured}
    for key, label, _, _ in FIGURES:
        text = label.format(steps=steps, runs=concurrent_runs)
        lines.append(f"{text:72}" + "".join(f"{_num(meds[e].get(key, float('nan'))):>{width}}" for e in measured))
    peers = [e for e in measured if e != AGENTRT]
    if AGENTRT in measured and peers:
        lines.append("AgentRuntime against each peer, median of per-round ratios (> 1: AgentRuntime better):")
        for key, _, short, higher in FIGURES:
            lines.append(f"  {short}: {ratio_sentence(rounds, peers, key, higher)}")
    for engine, reason in skipped.items():
        lines.append(f"skipped {TITLES.get(engine, engine)}: {reason}")
    return "\n".join(lines)
