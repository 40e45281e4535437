"""Under contention for a limit, higher-priority runs go first and the others still progress (issue 17)."""

from __future__ import annotations

from tests.limits.support import write_limits
from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.config import Settings

PING = """
name: ping
inputs: {sink: {type: string}, n: {type: integer}}
steps:
  - id: call
    uses: http
    limit: slow
    with: {url: "${{ inputs.sink }}/ping/${{ inputs.n }}"}
"""


async def _places(client, sink: HttpSink, later: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Start 12 low runs; once their calls queue for the limit, 3 `later` ones. The places of the 3 in the
    order the calls went out."""
    sink.clear()
    lows = [await client.start_run("ping", {"sink": sink.url, "n": i}, priority="low") for i in range(12)]

    async def queued() -> bool:  # every low call asked: the first went, some are reserved, the rest wait
        (lim,) = [x for x in (await client.limits()).limits if x.name == "slow"]
        return sink.count() + (lim.waiting or 0) >= 10

    await eventually(queued, 20, interval=0.02, what="the low calls queued for the limit")
    highs = [await client.start_run("ping", {"sink": sink.url, "n": 100 + i}, priority=later) for i in range(3)]
    finals = [await client.wait_for_run(r, timeout=60) for r in lows + highs]
    assert all(f.status.value == "completed" for f in finals), [f.error for f in finals]
    order = [int(r.path.rsplit("/", 1)[1]) for r in sink.requests]
    assert sorted(order) == sorted([*range(12), 100, 101, 102])  # every run got its call, none twice
    return sorted(order.index(100 + i) for i in range(3))


async def test_high_priority_runs_take_the_limit_first_and_low_ones_still_finish(
        settings: Settings, http_sink: HttpSink) -> None:
    write_limits(settings.workflows_dir, "limits:\n  slow: {requests: 4/s}\n")
    write_workflow(settings, "ping.yaml", PING)
    async with running_worker(settings), client_for(settings) as client:
        behind = await _places(client, http_sink, "low")  # the same priority: first come, first served
        ahead = await _places(client, http_sink, "high")
    # slots within the horizon (lease_ttl / 2 = 1.5 s here) are reserved first come, first served: the first low
    # call and the 6 reserved behind it go out before anything else (1 + 4/s x 1.5 s); the high runs, started
    # after all twelve low ones, then go ahead of the 5 low ones still queued. All low runs finish.
    assert min(behind) >= 10, behind
    assert max(ahead) <= 9, ahead
