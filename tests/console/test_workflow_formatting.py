"""Pure helpers of the Workflows screen: excerpt window, reload history cells, diff styles, default pair."""

from __future__ import annotations

from dataclasses import replace

from console.formatting import format_short_timestamp
from console.screens.workflow_diff import default_pair, diff_text
from console.workflow_text import diff_line_style, excerpt_window, reload_summary
from tests.console.fakes import FIXED_NOW, HASH, make_versions, make_workflow_events
from worker.models import WorkflowEvent


def test_excerpt_window_keeps_the_caret_under_the_column() -> None:
    assert excerpt_window("    retyr: 3", 5, 40) == ("    retyr: 3", 4)
    assert excerpt_window("a\tb\x1bc", 3, 40) == ("a b·c", 2)  # one cell per character
    assert excerpt_window("short", None, 40) == ("short", None)
    assert excerpt_window("short", 30, 40) == ("short", 5)  # past the end of the line: just after it
    long = "x" * 100 + "BAD" + "y" * 100
    text, caret = excerpt_window(long, 101, 40)
    assert len(text) == 40 and text[0] == "…" and text[-1] == "…"
    assert caret is not None and text[caret:caret + 3] == "BAD"
    text, caret = excerpt_window("BAD" + "y" * 100, 1, 40)
    assert text.startswith("BAD") and text.endswith("…") and caret == 0


def test_reload_history_cells() -> None:
    events = {e.kind + (e.name or ""): e for e in make_workflow_events()}
    assert reload_summary(events["invalid"], 80) == "scratch.yaml:3:9: mapping values are not allowed here"
    assert reload_summary(events["loadedhello"], 80) == f"hello.yaml → {HASH['hello'][:8]}"
    assert reload_summary(events["deletedold-digest"], 80) == "old-digest.yaml"
    odd = WorkflowEvent(1, FIXED_NOW, "invalid", "/w/x.yaml", None, None, "Postgres said no")
    assert reload_summary(odd, 80) == "Postgres said no"
    assert reload_summary(events["invalid"], 12).endswith("…")
    assert format_short_timestamp(FIXED_NOW) == "03-14 12:00:00"


def test_diff_lines_keep_their_prefix_and_get_a_style() -> None:
    assert [diff_line_style(x) for x in ("--- a", "+++ b", "@@ -1 +1 @@", "+x", "-y", " z")] == [
        "bold", "bold", "cyan", "green", "red", ""]
    text = diff_text("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new")
    assert text.plain.splitlines() == ["--- a", "+++ b", "@@ -1 +1 @@", "-old", "+new"]
    assert "same YAML source" in diff_text("").plain


def test_default_pair_index() -> None:
    versions = make_versions()
    assert default_pair(versions["nightly-report"]) == 0
    assert default_pair(versions["fan-out"]) is None
    reverted = [replace(v, active=i == 2) for i, v in enumerate(versions["nightly-report"])]
    assert default_pair(reverted) == 2
    oldest_active = [replace(v, active=i == 3) for i, v in enumerate(versions["nightly-report"])]
    assert default_pair(oldest_active) == 2  # the last pair, in stored order
