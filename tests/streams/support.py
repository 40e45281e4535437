"""Shared by the live-stream tests: answers long enough to stream, workflows, reading a run's live stream."""

from __future__ import annotations

import uuid
from typing import Any

import redis

from tests.support.llm_peer import step_context
from worker.bus.streams import Keys
from worker.config import Settings
from worker.streams.entries import LiveEntry, decode_entry
from worker.streams.fold import LiveText

ANSWER = ("The refund for ticket T-1 was checked against the order: 40 EUR, paid by card on the 3rd. "
          "The policy allows refunds within 30 days, so I approved it, and the customer was told. "
          "Ünïcödé survives the stream too: 東京, ✓.")


def uuid_context(**kw: Any) -> Any:
    """A hand-built StepContext of a run with a real (UUID) id: its deltas are published."""
    return step_context(run_id=str(uuid.uuid4()), **kw)


def live_entries(settings: Settings, run_id: str) -> list[LiveEntry]:
    """Every entry the run's live stream holds, read straight from Redis."""
    r = redis.Redis.from_url(settings.redis_url)
    try:
        rows = r.xrange(Keys(settings.redis_prefix).live(run_id))
    finally:
        r.close()
    return [e for e in (decode_entry(i, f) for i, f in rows) if e is not None]  # type: ignore[union-attr]


def fold(entries: list[LiveEntry]) -> LiveText:
    text = LiveText()
    for e in entries:
        text.feed(e)
    return text


def llm_workflow(name: str = "ask", *, provider: str = "openai", extra: str = "", retry: str = "",
                 top: str = "") -> str:
    """A workflow with one `llm` step `ask` against the peer at input `llm`; `extra` goes into its `with:`,
    `top` to the top level of the file."""
    return f"""
        name: {name}
        {top}
        inputs: {{llm: {{type: string}}}}
        pricing: {{m: {{input: 2.0, output: 10.0}}}}
        steps:
          - id: ask
            uses: llm
            {retry}
            with:
              provider: {provider}
              model: m
              base_url: "${{{{ inputs.llm }}}}"
              system: You answer support questions.
              prompt: Was the refund for T-1 made?
              {extra}
        output: "${{{{ steps.ask.output }}}}"
        """
