"""Console CPU while it shows a live token stream (issue 19): a running `llm` step writing 200 tokens/s,
its inspector open in the console.

One `agentrt worker` process on durable Postgres (fsync on) and Redis; the OpenAI-wire peer
(`tests/support/llm_peer.py`, real chunked SSE, one event per word-sized piece, paced at `--tps`) in a process
of its own; the console headless (`app.run_test()` at 160x48, as bench/console_bench.py runs it) in this
process, with the GC thresholds `agentrt console` sets. Each round measures three phases, `--seconds` each,
in a rotating order, each on a fresh run:

- **idle**: the run detail screen, the inspector on a running `llm` step whose model has not answered yet
  (the peer holds the reply back): the same screen, following the step's live stream, nothing coming;
- **streaming, inspector open**: the same, while the step streams at `--tps` tokens/s: the live text grows;
- **streaming, inspector closed**: the same run detail screen while the step streams, the selection on the
  run (not the step), so the inspector shows the run and the live text reads nothing.

In each phase: this process's CPU time (`time.process_time()`: the console's event loop, its Redis and
Postgres clients, and the benchmark's own loop, which only sleeps), the event loop thread's alone
(`time.thread_time()`), the worker's (/proc), the live view's redraws (`LiveView.redraws`) and the screen
updates Textual composed (`App._display` calls with an update). Headless Textual composes each update but
writes nothing; with `--terminal` (default) the hook also encodes each update into the escape sequences a
terminal would get (`render_segments`), which is what the real driver does before its write, so that cost is
counted too (the write syscall itself is not).

    python bench/console_stream_bench.py [--rounds 3] [--seconds 20] [--tps 200] [--no-terminal] [--profile FILE]

Prints a table (medians of the rounds) and writes bench/results/console_stream.json (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stack import bench_servers, cpu_seconds, start_worker, stop_worker, wait_workflows  # noqa: E402

SIZE = (160, 48)
PHASES = ("idle", "open", "closed")
LABELS = {"idle": "idle: inspector on the step, no token yet",
          "open": "streaming, inspector open (live text)",
          "closed": "streaming, inspector on the run (closed)"}
WORDS = ["the", "refund", "for", "ticket", "was", "checked", "against", "order", "policy", "allows", "within",
         "thirty", "days", "so", "approved", "and", "customer", "told", "durable", "execution", "keeps", "every",
         "step", "idempotent", "while", "workers", "come", "and", "go"]


def peer_text(tps: float, seconds: float) -> str:
    """The long answer the peer streams (the benchmark checks the console showed exactly a prefix of it)."""
    words = int(tps * (seconds + 30))
    return "".join(WORDS[i % len(WORDS)] + ("\n\n" if i % 90 == 89 else " ") for i in range(words)).strip()


# -- the peer, in a process of its own (its pacing threads are not the console's CPU) ----------------------
def peer_main(tps: float, wait_seconds: float) -> None:
    from tests.support.llm_peer import LlmPeer, LlmRequest, Reply, openai_text

    pieces = int(tps * (wait_seconds + 30))
    text = peer_text(tps, wait_seconds)

    def respond(request: LlmRequest) -> dict[str, Any] | Reply:
        prompt = json.dumps(request.body)
        if "hold back" in prompt:  # idle: the model takes its time before the first token
            return Reply(body=openai_text("late", usage=(8, 1)), delay=wait_seconds + 30)
        if "warm up" in prompt:
            return openai_text("warm up done " * 20, usage=(8, 60))
        return openai_text(text, usage=(8, pieces))

    pace_on_a_schedule()
    with LlmPeer() as peer:
        peer.tokens_per_s = tps
        peer.responder = respond
        print(peer.openai_url, flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin


def pace_on_a_schedule() -> None:
    """The peer sleeps `1/tps` between two pieces; on a busy machine each sleep overshoots, and 200/s became
    ~150/s. Here each sleep of a stream ends at its slot on the stream's own schedule instead (a late piece
    does not delay the next ones), so the peer keeps the pace it is given."""
    import threading
    import types

    import tests.support.llm_peer as llm_peer

    state = threading.local()

    def sleep(seconds: float) -> None:
        now = time.monotonic()
        slot = getattr(state, "slot", now) + seconds
        if slot < now - 1.0 or seconds > 1.0:  # a new stream (or a long hold-back): start the schedule anew
            slot = now + seconds
        state.slot = slot
        if slot > now:
            time.sleep(slot - now)

    paced = types.ModuleType("paced_time")
    paced.__dict__.update(time.__dict__)
    paced.sleep = sleep  # type: ignore[attr-defined]
    llm_peer.time = paced  # type: ignore[attr-defined]


def start_peer(tps: float, wait_seconds: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--peer", "--tps", str(tps), "--seconds", str(wait_seconds)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# -- measuring ---------------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def processes() -> dict[int, tuple[str, float]]:
    """Every process's (command line, CPU seconds so far), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(d.name)] = (cmd or d.name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def busiest(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float,
            names: dict[int, str], n: int = 8) -> list[str]:
    """What used the CPU meanwhile: the processes with the most CPU time between two snapshots, % of one core."""
    used = sorted(((after[p][1] - before.get(p, ("", 0.0))[1], p) for p in after), reverse=True)[:n]
    return [f"{100 * cpu / wall:5.1f} % {names.get(p) or after[p][0][:110]}" for cpu, p in used if cpu > 0]


def workflows(folder: Path, peer_url: str) -> None:
    for name, prompt in (("stream", "write a long answer"), ("slow", "hold back"), ("warm", "warm up")):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nsteps:\n  - id: ask\n    uses: llm\n"
            f"    with: {{model: m, base_url: \"{peer_url}\", prompt: \"{prompt}\"}}\n")


async def phase(app: Any, pilot: Any, client: Any, worker_pid: int, kind: str, seconds: float,
                profile: Any = None, names: dict[int, str] | None = None, expected: str = "") -> dict[str, Any]:
    from textual.widgets import Tree

    from console.screens.run_detail import RunDetailScreen
    from console.widgets.live_text import LiveView
    from tests.support.llm_sse import _pieces  # how the peer cut the text: its pieces are the tokens

    run_id = await client.start_run("slow" if kind == "idle" else "stream")
    deadline = time.monotonic() + 30
    while True:  # the step is running (its model was asked); for the streams, text is coming
        detail = await client.get_run(run_id)
        running = any(s.step_id == "ask" and str(s.status) == "running" for s in detail.steps)
        if running and (kind == "idle" or await client.live_entries(run_id, count=1)):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not start streaming: {detail.summary.status}")
        await asyncio.sleep(0.05)
    app.open_run(run_id)
    while not (isinstance(app.screen, RunDetailScreen) and ("step", "ask", None) in app.screen._tree_nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the run detail screen did not load")
        await pilot.pause(0.05)
    screen = app.screen
    key = ("run",) if kind == "closed" else ("step", "ask", None)
    view = screen.query_one("#inspector-live", LiveView)
    moved = 0.0
    while not (view.following if kind != "closed" else not view.display):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live view did not get ready ({kind})")
        if time.monotonic() - moved > 1.0:  # (again, if a reload of the screen came in between)
            screen.query_one("#step-tree", Tree).move_cursor(screen._tree_nodes[key], animate=False)
            moved = time.monotonic()
        await pilot.pause(0.05)
    if kind == "open":
        while view.text.current("ask") is None or not view.text.current("ask").text:  # type: ignore[union-attr]
            await pilot.pause(0.05)
    await pilot.pause(1.0)  # settle: the first page, the first redraws
    counts = app._bench_counts
    before = dict(counts)
    redraws, chars = view.redraws, 0
    call = view.text.current("ask")
    chars = call.chars if call is not None else 0
    pieces = len(_pieces(call.text)) if call is not None else 0
    load0 = loadavg()
    procs0 = processes()
    w0, p0, t0, wall0 = cpu_seconds(worker_pid), time.process_time(), time.thread_time(), time.monotonic()
    if profile is not None:
        profile.enable()
    await asyncio.sleep(seconds)
    if profile is not None:
        profile.disable()
    w1, p1, t1, wall1 = cpu_seconds(worker_pid), time.process_time(), time.thread_time(), time.monotonic()
    load1 = loadavg()
    wall = wall1 - wall0
    others = busiest(procs0, processes(), wall, names or {})
    call = view.text.current("ask")
    shown_chars = (call.chars if call is not None else 0) - chars
    shown_pieces = (len(_pieces(call.text)) if call is not None else 0) - pieces
    entries = await client.live_entries(run_id, count=100_000)
    detail = await client.get_run(run_id)
    still = any(s.step_id == "ask" and str(s.status) == "running" for s in detail.steps)
    out = {"kind": kind, "run_id": run_id, "wall_s": wall,
           "console_cpu_pct": 100 * (p1 - p0) / wall, "loop_thread_cpu_pct": 100 * (t1 - t0) / wall,
           "worker_cpu_pct": 100 * (w1 - w0) / wall,
           "live_redraws_per_s": (view.redraws - redraws) / wall,
           "screen_updates_per_s": (counts["updates"] - before["updates"]) / wall,
           "terminal_kb_per_s": (counts["bytes"] - before["bytes"]) / 1024 / wall,
           "chars_shown_per_s": shown_chars / wall if kind == "open" else None,
           "tokens_shown_per_s": shown_pieces / wall if kind == "open" else None,
           # the live text is exactly what the peer wrote so far (no piece lost, none shown twice)
           "shown_text_matches": expected.startswith(call.text) if kind == "open" and call is not None else None,
           "live_entries_total": len(entries), "step_still_running": still,
           "loadavg_before": load0, "loadavg_after": load1, "busiest": others}
    if (await client.get_run(run_id)).summary.status.value not in ("completed", "failed", "cancelled"):
        await client.cancel(run_id, reason="bench phase over")
    await pilot.press("escape")  # back to the runs screen
    while isinstance(app.screen, RunDetailScreen):
        await pilot.pause(0.05)
    await pilot.pause(1.0)
    return out


def hook_display(app: Any, terminal: bool) -> None:
    """Count the screen updates Textual composes (and, with `terminal`, encode them as a terminal would)."""
    counts = {"updates": 0, "bytes": 0}
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        if renderable is not None and not app._batch_count:
            counts["updates"] += 1
            if terminal and hasattr(renderable, "render_segments"):
                counts["bytes"] += len(renderable.render_segments(app.console).encode())
        original(screen, renderable)

    app._display = display
    app._bench_counts = counts


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from console.app import AgentConsole, tune_gc
    from console.screens.runs import RunsScreen
    from worker.client import RuntimeClient
    from worker.config import Settings

    tune_gc()  # as `agentrt console` does
    rounds: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    peer, peer_url = start_peer(args.tps, args.seconds)
    try:
        async with bench_servers("console-stream-bench") as srv:
            workflows(srv.workflows, peer_url)
            url = srv.db_url("bench")
            settings = Settings(database_url=url, redis_url=srv.redis.url(), workflows_dir=srv.workflows)
            env = {**os.environ, "AGENTRT_DATABASE_URL": url, "AGENTRT_REDIS_URL": srv.redis.url(),
                   "AGENTRT_WORKFLOWS_DIR": str(srv.workflows), "AGENTRT_LOG_LEVEL": "WARNING",
                   "AGENTRT_HTTP_ALLOWED_HOSTS": "127.0.0.1", "AGENTRT_WORKER_ID": "bench-console-stream"}
            with (srv.tmp / "worker.log").open("ab") as log:
                worker = start_worker(env, log)
            setup = await RuntimeClient.connect(settings)
            client = await RuntimeClient.connect(settings)
            try:
                await wait_workflows(setup, {"stream", "slow", "warm"}, 30)
                for _ in range(2):  # warm-up: connections, the first trace bootstrap
                    warm = await setup.start_run("warm")
                    await setup.wait_for_run(warm, timeout=30)
                names = {os.getpid(): "(the console: this benchmark)", worker.pid: "(the agentrt worker)",
                         peer.pid: "(the streaming peer)"}
                app = AgentConsole(client)
                hook_display(app, args.terminal)
                async with app.run_test(size=SIZE) as pilot:
                    while not (isinstance(app.screen, RunsScreen) and app.screen.loaded):
                        await pilot.pause(0.05)
                    for i in range(args.rounds):
                        order = PHASES[i % 3:] + PHASES[:i % 3]
                        results = {}
                        for kind in order:
                            others.append({"round": i + 1, "phase": kind, "loadavg": loadavg()})
                            profile = None
                            if args.profile and kind == "open":
                                import cProfile

                                profile = cProfile.Profile()
                            results[kind] = await phase(app, pilot, setup, worker.pid, kind, args.seconds, profile,
                                                        names, peer_text(args.tps, args.seconds))
                            if profile is not None:
                                profile.dump_stats(f"{args.profile}.round{i + 1}")
                            r = results[kind]
                            rate = f", {r['tokens_shown_per_s']:.0f} tokens/s shown" if kind == "open" else ""
                            if r["shown_text_matches"] is False:
                                rate += " (THE LIVE TEXT IS NOT THE PEER'S TEXT: pieces shown twice or lost)"
                            print(f"round {i + 1} {kind:6}: console {r['console_cpu_pct']:5.1f} % "
                                  f"(loop thread {r['loop_thread_cpu_pct']:5.1f} %), live redraws "
                                  f"{r['live_redraws_per_s']:4.1f}/s, screen updates "
                                  f"{r['screen_updates_per_s']:5.1f}/s, "
                                  f"worker {r['worker_cpu_pct']:5.1f} %, load {r['loadavg_before'][0]:.2f}"
                                  f"→{r['loadavg_after'][0]:.2f}{rate}", flush=True)
                        rounds.append(results)
            finally:
                await client.close()
                await setup.close()
                stop_worker(worker)
    finally:
        assert peer.stdin is not None
        peer.stdin.close()
        peer.wait(10)
    keys = [k for k, v in rounds[0]["open"].items() if isinstance(v, int | float) and not isinstance(v, bool)
            and k != "wall_s"]
    medians = {kind: {k: statistics.median(float(r[kind][k]) for r in rounds) for k in keys
                      if all(r[kind][k] is not None for r in rounds)} for kind in PHASES}
    return {"rounds": rounds, "medians": medians, "others": others, "args": vars(args), "cores": os.cpu_count(),
            "at": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase")
    p.add_argument("--tps", type=float, default=200.0, help="the peer's pace, tokens (pieces) a second")
    p.add_argument("--no-terminal", dest="terminal", action="store_false",
                   help="do not encode screen updates into terminal output (headless Textual's own cost only)")
    p.add_argument("--profile", metavar="FILE", help="cProfile the open phases into FILE.roundN (skews the figures)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "console_stream.json"), help="the JSON written")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer:
        peer_main(args.tps, args.seconds)
        return
    results = asyncio.run(main_async(args))
    m = results["medians"]
    print(f"\nconsole CPU while showing a {args.tps:g} tokens/s stream ({os.cpu_count()} cores; headless "
          f"app.run_test at {SIZE[0]}x{SIZE[1]}, terminal encoding {'on' if args.terminal else 'off'}; medians of "
          f"{args.rounds} rounds of {args.seconds:g} s)")
    print(f"{'phase':44} {'console CPU':>12} {'loop thread':>12} {'live redraws/s':>15} {'screen updates/s':>17} "
          f"{'terminal KB/s':>14} {'worker CPU':>11}")
    for kind in PHASES:
        r = m[kind]
        print(f"{LABELS[kind]:44} {r['console_cpu_pct']:11.1f}% {r['loop_thread_cpu_pct']:11.1f}% "
              f"{r['live_redraws_per_s']:15.1f} {r['screen_updates_per_s']:17.1f} {r['terminal_kb_per_s']:14.1f} "
              f"{r['worker_cpu_pct']:10.1f}%")
    print(f"tokens shown per second while streaming: {m['open']['tokens_shown_per_s']:.0f} "
          f"({m['open']['chars_shown_per_s']:.0f} characters/s)")
    wrong = [i + 1 for i, r in enumerate(results["rounds"]) if r["open"]["shown_text_matches"] is False]
    if wrong:
        print(f"rounds whose live text differed from the peer's (pieces shown twice or lost): {wrong}")
    loads = [o["loadavg"][0] for o in results["others"]]
    print(f"load average (1 min) at the phases' starts: {min(loads):.2f} to {max(loads):.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
