"""The Restate side of `bench/peers.py`: a service whose handler runs 10 no-op steps, each a `ctx.run`.

Runs in the Restate peer venv, served by hypercorn (`hypercorn restate_app:app`); the driver registers
it with the restate-server's admin API and calls `Bench/run` over the server's HTTP ingress. Each
`ctx.run` journals the step's result in Restate's log (the server's defaults decide how durably) before
the handler goes on, which is what a durable step is in Restate.
"""

from __future__ import annotations

import os

import restate

STEPS = int(os.environ.get("BENCH_STEPS", "10"))

bench = restate.Service("Bench")


async def noop() -> None:
    return None


@bench.handler()
async def run(ctx: restate.Context) -> int:
    """`BENCH_STEPS` (10) no-op steps in sequence; returns how many ran."""
    for i in range(STEPS):
        await ctx.run(f"s{i + 1}", noop)
    return STEPS


app = restate.app(services=[bench])
