"""`limits.yaml` and the steps that opt in to its limits: what loads, and located errors (file:line:column) for
what does not. No services."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from worker.boundary import load_checks
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.definitions.registry import scan_directory
from worker.errors import DefinitionError
from worker.limits.file import OperatorLimits, load_limits_text
from worker.limits.spec import buckets, parse_rate


def limits_error(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        load_limits_text(textwrap.dedent(text), "limits.yaml")
    return caught.value


def test_a_valid_file_and_its_buckets() -> None:
    spec = load_limits_text(textwrap.dedent("""\
        limits:
          openai-gpt4o: {requests: 500/min, tokens: 30000/min, match: {provider: openai, model: gpt-4o*}}
          helpdesk-api: {requests: 20/s, concurrency: 10, burst: 5}
          slow: {requests: 2/h}
          daily: {tokens: 1_000_000/day}
        """))
    gpt, helpdesk = spec.limits["openai-gpt4o"], spec.limits["helpdesk-api"]
    assert gpt.requests is not None and gpt.requests.per_second == pytest.approx(500 / 60)
    assert gpt.match is not None and gpt.match.applies("openai", "gpt-4o-2024-08-06", "api.openai.com")
    assert not gpt.match.applies("anthropic", "gpt-4o", "api.openai.com")
    b = buckets("openai-gpt4o", gpt)
    assert b.burst == 475 and b.token_capacity == 28500 and b.period == 60
    h = buckets("helpdesk-api", helpdesk)
    assert h.interval == pytest.approx(0.05) and h.burst == 5 and h.concurrency == 10
    assert buckets("slow", spec.limits["slow"]).period == 3600
    assert spec.limits["daily"].tokens is not None and spec.limits["daily"].tokens.amount == 1_000_000
    half = h.share(0.5)
    assert half.interval == pytest.approx(0.1) and half.burst == 2 and half.concurrency == 5


@pytest.mark.parametrize(("line", "where", "reason"), [
    ("  a: {requests: 500/fortnight}", "2:17", "unknown unit 'fortnight'"),
    ("  a: {requests: -5/s}", "2:17", "a rate cannot be negative"),
    ("  a: {requests: 0/min}", "2:17", "a rate must be more than 0"),
    ("  a: {requests: lots}", "2:17", "is not a rate"),
    ("  a: {tokens: 100}", "2:15", "is not a rate"),
    ("  a: {requests: 5/s, concurrency: 0}", "2:35", "greater than or equal to 1"),
    ("  a: {requests: 5/s, concurrency: -3}", "2:35", "greater than or equal to 1"),
    ("  a: {requests: 5/s, burst: 0}", "2:29", "greater than or equal to 1"),
    ("  a: {requests: 5/s, rpm: 5}", "2:22", "unknown key 'rpm'"),
    ("  a: {}", "2:6", "at least one of requests, tokens, concurrency"),
    ("  a: {concurrency: 2, burst: 3}", "2:6", "burst applies to requests"),
    ("  a: {requests: 5/s, match: {}}", "2:29", "match needs at least one of provider, model, host"),
    ("  a: {requests: 5/s, match: {vendor: openai}}", "2:30", "unknown key 'vendor'"),
    ("  'a{b}': {requests: 5/s}", "2:3", "limit name 'a{b}'"),
])
def test_bad_input_is_a_located_error(line: str, where: str, reason: str) -> None:
    error = limits_error("limits:\n" + line + "\n")
    assert error.location == f"limits.yaml:{where}" and reason in error.reason, (error.location, error.reason)


def test_unknown_top_level_key_and_yaml_tricks() -> None:
    error = limits_error("limit:\n  a: {requests: 5/s}\n")
    assert error.location == "limits.yaml:1:1" and "unknown key 'limit'" in error.reason
    error = limits_error("limits:\n  a: &x {requests: 5/s}\n  b: *x\n")
    assert "anchors" in error.reason or "aliases" in error.reason


def test_parse_rate_units() -> None:
    assert parse_rate("20/s").period == 1 and parse_rate("3 / min").text == "3/min"
    assert parse_rate("1.5/hour").period == 3600 and parse_rate("7/day").per_second == pytest.approx(7 / 86400)


def _workflows(tmp_path: Path, limits: str | None, workflow: str) -> tuple[Settings, Path]:
    root = tmp_path / "workflows"
    root.mkdir()
    if limits is not None:
        (root / "limits.yaml").write_text(textwrap.dedent(limits))
    path = root / "wf.yaml"
    path.write_text(textwrap.dedent(workflow))
    return Settings(workflows_dir=root), path


WORKFLOW = """\
    name: wf
    steps:
      - id: ask
        uses: http
        with: {url: "https://example.com"}
        limit: helpdesk-api
      - id: think
        uses: llm
        with: {model: m, prompt: hi}
        limits: [helpdesk-api, openai]
    """


def test_steps_opt_in_to_defined_limits(tmp_path: Path) -> None:
    settings, path = _workflows(tmp_path, "limits:\n  helpdesk-api: {requests: 20/s}\n  openai: {tokens: 9/s}\n",
                                WORKFLOW)
    defn = load_file(path, checks=load_checks(settings))
    assert defn.step("ask").limit == "helpdesk-api" and defn.step("think").limits == ["helpdesk-api", "openai"]


def test_an_unknown_limit_name_is_a_located_error(tmp_path: Path) -> None:
    settings, path = _workflows(tmp_path, "limits:\n  helpdesk-api: {requests: 20/s}\n", WORKFLOW)
    with pytest.raises(DefinitionError) as caught:
        load_file(path, checks=load_checks(settings))
    assert caught.value.location == f"{path}:10:28"
    assert "unknown limit 'openai'" in caught.value.reason and "defined: helpdesk-api" in caught.value.reason


def test_without_a_limits_file_every_name_is_unknown(tmp_path: Path) -> None:
    settings, path = _workflows(tmp_path, None, WORKFLOW)
    with pytest.raises(DefinitionError) as caught:
        load_file(path, checks=load_checks(settings))
    assert caught.value.location == f"{path}:6:12" and "no limits.yaml" in caught.value.reason


def test_an_invalid_limits_file_is_listed_like_a_workflow_error(tmp_path: Path) -> None:
    settings, path = _workflows(tmp_path, "limits:\n  helpdesk-api: {requests: 500/fortnight}\n", WORKFLOW)
    scanned = scan_directory(settings.workflows_dir, load_checks(settings))
    error = scanned[settings.workflows_dir / "limits.yaml"]
    assert isinstance(error, DefinitionError) and error.location.endswith("limits.yaml:2:28")
    wf = scanned[path]
    assert isinstance(wf, DefinitionError) and "limits.yaml is invalid" in wf.reason


def test_only_limitable_kinds_take_a_limit(tmp_path: Path) -> None:
    settings, path = _workflows(tmp_path, "limits:\n  a: {requests: 1/s}\n", """\
        name: wf
        steps:
          - {id: s, uses: set, with: {x: 1}, limit: a}
        """)
    with pytest.raises(DefinitionError) as caught:
        load_file(path, checks=load_checks(settings))
    assert caught.value.location == f"{path}:3:45" and "a set step cannot take a limit" in caught.value.reason


def test_operator_limits_follow_the_file_and_keep_the_last_good_version(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    source = OperatorLimits(root, recheck=0)
    assert source.current().limits == {} and source.path is None
    (root / "limits.yaml").write_text("limits:\n  a: {requests: 1/s}\n")
    assert set(source.current().limits) == {"a"}
    (root / "limits.yaml").write_text("limits:\n  a: {requests: 1/fortnight}\n  b: {requests: 2/s}\n")
    assert set(source.current().limits) == {"a"} and source.error is not None
    (root / "limits.yaml").write_text("limits:\n  b: {requests: 2/s}\n")
    assert set(source.current().limits) == {"b"} and source.error is None
