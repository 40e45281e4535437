"""`agentrt tail RUN [--step ID] [--json]`: the text of a run's `llm`/`agent` steps as it is written.

Plain output is the text only, on stdout, as it arrives (pipe it); where a call begins, ends with tool
calls, or is abandoned (its worker died, the provider dropped it: the retry writes the answer again), a
note goes to stderr. `--json` prints each live entry as one JSON object per line, with its `id`: give the
last one to `--after` to go on where you stopped. It follows until the run (or the step) has finished.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from worker.cli.support import EXIT_OK, with_client
from worker.streams.entries import LLM_ABANDONED, LLM_DELTA, LLM_DONE
from worker.streams.fold import CallKey, LiveText


def register(sub: Any) -> dict[str, Any]:
    t = sub.add_parser(
        "tail", help="print what a run's llm/agent steps are writing, as it is written",
        description="Follow a run's live LLM output until the run (or --step) finishes: the text on stdout (plain, "
                    "pipe-friendly), notes (which step, tool calls, abandoned attempts) on stderr. With --json, one "
                    "JSON object per live entry (llm.delta, llm.done, llm.abandoned), each with its stream id.")
    t.add_argument("run_id", help="run id or a unique prefix of it")
    t.add_argument("--step", default=None, metavar="ID", help="only this step")
    t.add_argument("--after", default=None, metavar="ID",
                   help="start after this entry id (the last `id` --json printed): resume without repeats")
    t.add_argument("--no-follow", action="store_true", help="print what the stream holds now, then stop")
    t.add_argument("--json", action="store_true", help="the entries, one JSON object per line")
    return {"tail": with_client(cmd_tail)}


class _Printer:
    """Plain output: text to stdout, notes to stderr; a note starts on a line of its own."""

    def __init__(self) -> None:
        self.fold = LiveText()
        self.current: CallKey | None = None
        self.at_line_start = True

    def _out(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        if text:
            self.at_line_start = text.endswith("\n")

    def _note(self, text: str) -> None:
        if not self.at_line_start:
            self._out("\n")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def show(self, entry: Any) -> None:
        changed = self.fold.feed(entry)
        if entry.type == LLM_ABANDONED:
            for call in changed:
                self._note(f"[{_name(call.key)}: abandoned ({call.reason or 'interrupted'}); its text above is not "
                           "part of the answer]")
            return
        if not changed:
            return
        call = changed[0]
        if entry.type == LLM_DELTA:
            if call.key != self.current:
                self.current = call.key
                self._note(f"[{_name(call.key)}]")
            if entry.text:
                self._out(entry.text)
            elif entry.text is None and call.encrypted and call.chars and entry.seq == 1:
                self._note("[this run's payloads are encrypted: its text is not on the live channel]")
        elif entry.type == LLM_DONE:
            for tool in call.tools.values():
                self._note(f"[tool call {tool['name']} {tool['arguments'] or '{}'}]")
            figures = [f"{call.output_tokens} tokens" if call.output_tokens is not None else "",
                       f"first token after {call.ttft_ms:.0f} ms" if call.ttft_ms is not None else "",
                       f"{call.output_tokens_per_s:.0f} tokens/s" if call.output_tokens_per_s else ""]
            self._note(f"[{_name(call.key)} done: {', '.join(f for f in figures if f) or call.finish_reason}]")
            self.current = None

    def close(self) -> None:
        if not self.at_line_start:
            self._out("\n")


def _name(key: CallKey) -> str:
    step, item, attempt, turn = key
    where = step if item is None else f"{step}[{item}]"
    return f"{where} attempt {attempt}" + (f" turn {turn}" if turn else "")


async def cmd_tail(client: Any, args: argparse.Namespace) -> int:
    printer = None if args.json else _Printer()
    if args.no_follow:
        entries = await client.live_entries(args.run_id, args.after)
        source: Any = _each(e for e in entries if args.step is None or e.step_id == args.step)
    else:
        source = client.follow_live(args.run_id, after=args.after, step_id=args.step)
    try:
        async for entry in source:
            if printer is None:
                sys.stdout.write(orjson.dumps(entry.to_json()).decode() + "\n")
                sys.stdout.flush()
            else:
                printer.show(entry)
    except BrokenPipeError:  # `agentrt tail RUN | head`
        return EXIT_OK
    if printer is not None:
        printer.close()
    return EXIT_OK


async def _each(items: Any) -> Any:
    for item in items:
        yield item

