"""bench/peers.py's figures: percentiles, medians, and the direction of "AgentRuntime is N x <peer>" (issue 20).

Only the arithmetic and the table: the peers themselves are installed and run by the benchmark, never here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "peers"))

from peer_report import format_report, medians, pct, round_ratios, sample


def test_a_sample_holds_the_percentiles_of_the_walls_and_the_rate_of_the_batch() -> None:
    s = sample([0.010, 0.020, 0.030, 0.040, 1.0], concurrent_s=2.0, concurrent_runs=500, steps=10)
    assert s["w1_p50_ms"] == 30.0
    assert s["w1_p99_ms"] == 1000.0
    assert s["w2_steps_per_s"] == 2500.0
    assert pct([], 50) != pct([], 50)  # nan, not a made-up figure


def rounds() -> list[dict[str, dict[str, float]]]:
    def s(p50: float, rate: float) -> dict[str, float]:
        return {"w1_p50_ms": p50, "w1_p99_ms": 2 * p50, "w2_steps_per_s": rate}

    return [{"agentrt": s(40, 1500), "dbos": s(60, 200), "restate": s(20, 300)},
            {"agentrt": s(50, 1000), "dbos": s(50, 250), "restate": s(25, 100)},
            {"agentrt": s(45, 1200), "dbos": s(90, 200)}]  # restate failed in round 3


def test_ratios_are_per_round_and_read_better_when_above_one() -> None:
    # latency: the peer's time over AgentRuntime's; throughput: AgentRuntime's rate over the peer's
    assert round_ratios(rounds(), "dbos", "w1_p50_ms", higher_is_better=False) == [1.5, 1.0, 2.0]
    assert round_ratios(rounds(), "restate", "w2_steps_per_s", higher_is_better=True) == [5.0, 10.0]
    assert medians(rounds(), "restate")["w1_p50_ms"] == 22.5  # only the rounds that measured it


def test_the_report_names_medians_ratios_and_skipped_peers() -> None:
    text = format_report(rounds(), ["agentrt", "dbos", "restate"], {"restate": "failed in round 3: boom"},
                         steps=10, concurrent_runs=500, header="Peers")
    lines = text.splitlines()
    assert lines[0] == "Peers"
    assert lines[1].split()[-3:] == ["AgentRuntime", "DBOS", "Restate"]
    w2 = next(line for line in lines if line.startswith("W2: 500 concurrent 10-step runs"))
    assert w2.split()[-3:] == ["1,200", "200", "200"]
    # Restate's W1 times are half AgentRuntime's: 20/40 and 25/50
    assert "W1 p50: AgentRuntime is 1.50x DBOS (rounds: 1.50, 1.00, 2.00), 0.50x Restate (rounds: 0.50, 0.50)" \
        in text
    assert "W2 steps/s: AgentRuntime is 6.00x DBOS (rounds: 7.50, 4.00, 6.00), 7.50x Restate (rounds: 5.00, 10.00)" \
        in text
    assert lines[-1] == "skipped Restate: failed in round 3: boom"


def test_a_peer_never_measured_is_left_out_of_the_table_but_its_reason_is_shown() -> None:
    only = [{"agentrt": r["agentrt"]} for r in rounds()]
    text = format_report(only, ["agentrt", "dbos"], {"dbos": "not installed: npm missing"}, steps=10,
                         concurrent_runs=500, header="h")
    assert "DBOS" not in text.splitlines()[1]
    assert "AgentRuntime against each peer" not in text
    assert text.splitlines()[-1] == "skipped DBOS: not installed: npm missing"
