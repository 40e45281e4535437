"""The runs filter's language (console/run_query.py): `key:value` terms combined with free text, the `:view` and
`:save` commands, and the local preview of terms. Pure: no app, no client."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console.run_query import (
    Command,
    QueryError,
    RunQuery,
    format_query,
    is_command,
    parse_command,
    parse_query,
    preview_match,
)
from tests.console.fakes import FIXED_NOW, make_runs
from worker.search.filters import RunFilter


def test_plain_text_is_the_regex_it_always_was() -> None:
    assert parse_query("  ^(hello|nightly)  ") == RunQuery(RunFilter(), "^(hello|nightly)")
    assert parse_query("fan-out(") == RunQuery(RunFilter(), "fan-out(")  # not a regex: TextFilter copes
    assert parse_query("a  b") == RunQuery(RunFilter(), "a  b")  # kept exactly as typed
    assert parse_query("(?:x)|y") == RunQuery(RunFilter(), "(?:x)|y")  # a colon inside a word is no term
    assert parse_query("T-42:") == RunQuery(RunFilter(), "T-42:")
    assert parse_query("http\\://x") == RunQuery(RunFilter(), "http\\://x")  # an escaped colon: text
    assert parse_query("") == RunQuery(RunFilter(), "")


def test_terms_combine_into_a_run_filter_and_the_rest_is_searched_for() -> None:
    q = parse_query("workflow:refund-request status:failed error:timeout since:2h")
    assert q.terms == RunFilter(workflow="refund-request", status="failed", error="timeout", since="2h")
    assert q.text == "" and q.has_terms
    q = parse_query("render step:render  waiting:retry 503")
    assert q.terms == RunFilter(step="render", waiting="retry") and q.text == "render 503"
    assert q.filters() == RunFilter(step="render", waiting="retry", search="render 503")


def test_quoted_values_aliases_and_case() -> None:
    q = parse_query('error:"HTTP 503" waiting-on:\'group:payments leads\' Status:FAILED')
    assert q.terms == RunFilter(error="HTTP 503", waiting="group:payments leads", status="failed")
    assert parse_query("waiting:alice@example.com").terms == RunFilter(waiting="alice@example.com")
    assert parse_query("status:retrying").terms.status == "retrying"


def test_the_tab_s_status_applies_unless_a_term_names_one() -> None:
    assert parse_query("workflow:hello").filters("failed") == RunFilter(workflow="hello", status="failed")
    assert parse_query("status:running").filters("failed").status == "running"


@pytest.mark.parametrize(("line", "says"), [
    ("wrkflow:refund", "unknown filter wrkflow: (known: workflow: status: step: error: since: waiting:)"),
    ("http://example", "to search for the text, write http\\:"),
    ("status:faild", "status: 'faild' is not a status (one of queued, pending, running, waiting, paused, "
                     "completed, failed, cancelled, retrying)"),
    ("since:2x", "since: '2x' is not a duration (use e.g. 500ms, 30s, 5m, 4h, 1d)"),
    ("since:yesterday", "is not a duration"),
    ("status:", "status: needs a value, e.g. status:failed"),
    ('error:""', "error: needs a value, e.g. error:timeout"),
    ('error:"HTTP 503', "error: the quote \" is not closed"),
    ("status:failed status:running", "status: given twice ('failed' and 'running')"),
    ("error:" + "x" * 501, "error: at most 500 characters of text"),
])
def test_bad_terms_say_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(line)
    assert says in str(caught.value)


def test_the_same_term_twice_with_one_value_is_fine() -> None:
    assert parse_query("status:failed status:FAILED").terms == RunFilter(status="failed")


@pytest.mark.parametrize("filters", [
    RunFilter(workflow="refund-request", status="failed", error="timeout", since="2h"),
    RunFilter(error="HTTP 503 from \"reports\"", waiting="group:leads", search="^(a|b)"),
    RunFilter(error="it's-\"quoted\""),  # no space: needs no quotes
    RunFilter(error="say \"hi\" now"),
    RunFilter(waiting="'x'"),
    RunFilter(step="render", search="x y"),
    RunFilter(),
])
def test_a_filter_written_as_a_line_reads_back_the_same(filters: RunFilter) -> None:
    line = format_query(filters)
    q = parse_query(line)
    assert q.filters() == filters, line


def test_a_view_s_line_leaves_its_status_to_the_tab() -> None:
    f = RunFilter(workflow="refund-request", status="failed", error="HTTP 503")
    assert format_query(f, skip=("status",)) == 'workflow:refund-request error:"HTTP 503"'


def test_commands() -> None:
    assert is_command(" :view") and not is_command("view:")
    assert parse_command(":view") == Command("view", None)
    assert parse_command(":view failing-refunds") == Command("view", "failing-refunds")
    assert parse_command(" :SAVE  mine ") == Command("save", "mine")
    for line, says in [(":save", ":save NAME: name the view"), (":views x", "unknown command :views"),
                       (":", "unknown command :"), (":view a b", ":view takes one view name, not 2 words")]:
        with pytest.raises(QueryError, match=says):
            parse_command(line)


def test_the_local_preview_matches_what_a_row_tells() -> None:
    runs = make_runs()

    def shown(line: str) -> set[tuple[str, str]]:
        f = parse_query(line).terms
        return {(r.workflow, r.status.value) for r in runs if preview_match(f, r, FIXED_NOW)}

    assert shown("workflow:nightly-report status:failed") == {("nightly-report", "failed")}
    assert shown("status:retrying") == {("nightly-report", "waiting")}
    assert shown("error:http") == {("nightly-report", "failed"), ("nightly-report", "waiting")}
    assert shown("since:1m") == {("fan-out", "running"), ("hello", "pending")}
    assert shown("waiting:event") == {("refund-request", "waiting")}
    assert shown("step:approve waiting:human") == {("refund-request", "waiting")}
    # a person: the tasks say who may decide, the row does not: every waiting run stays until the server answers
    assert all(r.status.value == "waiting" for r in runs
               if preview_match(replace(RunFilter(), waiting="alice"), r, FIXED_NOW))
