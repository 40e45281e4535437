"""The pure parts of the live channel: redaction across pieces, the reader's fold, the SSE id scheme."""

from __future__ import annotations

import random

import pytest

from worker.api.streams import event_id, parse_last_event_id
from worker.streams.call import Held, redaction
from worker.streams.entries import LLM_ABANDONED, LLM_DELTA, LLM_DONE, LiveEntry
from worker.streams.fold import LiveText

SECRET = "sk-live-4f9a8b7c6d5e"


@pytest.mark.parametrize("seed", range(40))
def test_a_secret_split_anywhere_is_never_published_even_in_part(seed: int) -> None:
    rng = random.Random(seed)
    text = f"key {SECRET} then {SECRET[:7]} (a prefix only) and {SECRET}{SECRET}."
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    redactor, forms = redaction({"vault": {"key": SECRET}})
    held = Held(redactor, forms)
    out = ""
    for piece in pieces:
        held.add(piece)
        out += held.take(final=False)
        assert SECRET[:8] not in out  # not even the beginning of it, at any moment
    out += held.take(final=True)
    assert out == f"key [redacted:vault.key] then {SECRET[:7]} (a prefix only) and " \
                  "[redacted:vault.key][redacted:vault.key]."


def test_without_secrets_nothing_is_held_back() -> None:
    held = Held(*redaction({}))
    held.add("abc")
    assert held.take(final=False) == "abc"


def _entry(n: int, kind: str, attempt: int | None, turn: int | None, seq: int, text: str | None = None,
           **data: object) -> LiveEntry:
    return LiveEntry(f"1-{n}", kind, "r", "s", None, attempt, turn, seq, text, (), dict(data))


def test_the_fold_keeps_an_abandoned_attempt_apart_and_counts_gaps() -> None:
    fold = LiveText()
    for e in [_entry(1, LLM_DELTA, 1, 0, 1, "Hel", ttft_ms=12.5), _entry(2, LLM_DELTA, 1, 0, 2, "lo wo"),
              _entry(3, LLM_ABANDONED, None, None, 0, superseded_by=2),
              _entry(4, LLM_DELTA, 2, 0, 1, "Hello"), _entry(5, LLM_DELTA, 2, 0, 3, " world"),
              _entry(6, LLM_DONE, 2, 0, 4, finish_reason="stop", output_tokens=2)]:
        fold.feed(e)
    first, second = fold.of_step("s")
    assert (first.text, first.abandoned, first.ttft_ms) == ("Hello wo", True, 12.5)
    assert (second.text, second.done, second.missing, second.finish_reason) == ("Hello world", True, 1, "stop")
    assert fold.current("s") is second and fold.last_id == "1-6"


def test_the_fold_takes_an_entry_once_however_often_it_is_read() -> None:
    """Two readers that overlapped (a follower still draining when the next began), or a reconnect that
    replays: every character is shown once."""
    fold = LiveText()
    entries = [_entry(1, LLM_DELTA, 1, 0, 1, "Hel"), _entry(2, LLM_DELTA, 1, 0, 2, "lo"),
               _entry(3, LLM_DELTA, 1, 0, 3, " world")]
    for e in [entries[0], entries[1], entries[0], entries[1], entries[2], entries[2]]:
        fold.feed(e)
    (call,) = fold.of_step("s")
    assert (call.text, call.missing, call.last_seq) == ("Hello world", 0, 3)


@pytest.mark.parametrize(("header", "parsed"), [
    (None, (0, None)), ("", (0, None)), ("42", (42, None)), ("-5", (0, None)),
    ("42:1765059123456-3", (42, "1765059123456-3")), ("0:0-1", (0, "0-1")),
])
def test_last_event_id_names_both_places(header: str | None, parsed: tuple[int, str | None]) -> None:
    assert parse_last_event_id(header) == parsed
    if header and parsed[0] >= 0 and not header.startswith("-"):
        assert event_id(*parsed) == header


@pytest.mark.parametrize("header", ["yesterday", "42:", "42:abc", "42:1-2-3", "x:1-2", "1:1-2:3"])
def test_other_last_event_ids_are_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_last_event_id(header)
