"""`on: {schedule: ...}` in workflow files: what loads, and located errors (file:line:column) for what does not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.services import REPO_ROOT
from worker.definitions.loader import load_text
from worker.errors import DefinitionError

HEAD = """\
name: nightly
inputs:
  day: {type: string}
"""
STEPS = """\
steps:
  - {id: a, uses: set, with: {day: "${{ inputs.day }}"}}
"""


def doc(on: str) -> str:
    return HEAD + textwrap.dedent(on) + STEPS


def load_error(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        load_text(text, "nightly.yaml")
    return caught.value


def test_cron_and_every_schedules_load() -> None:
    spec = load_text(doc("""\
        on:
          schedule: {cron: "0  2 * * *", timezone: Europe/Berlin, catch_up: all, inputs: {day: "${{ tick }}"}}
        """)).spec.on
    assert spec is not None and spec.schedule is not None
    assert (spec.schedule.cron, spec.schedule.timezone, spec.schedule.catch_up) == ("0 2 * * *", "Europe/Berlin", "all")
    every = load_text("name: t\non: {schedule: {every: 30s}}\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
    assert every.spec.on is not None and every.spec.on.schedule is not None
    assert (every.spec.on.schedule.every, every.spec.on.schedule.catch_up) == (30.0, "latest")
    both = load_text("name: t\non:\n  event: {name: x.y}\n  schedule: {every: 1m}\nsteps:\n  - {id: a, uses: set}\n")
    assert both.spec.on is not None and both.spec.on.event is not None and both.spec.on.schedule is not None


@pytest.mark.parametrize(("on", "where", "message"), [
    ('on:\n  schedule: {cron: "0 0 30 2 *", inputs: {day: x}}\n', (5, 20),
     "on.schedule.cron: cron expression '0 0 30 2 *' never fires: no month in '2' has day '30'"),
    ('on:\n  schedule:\n    cron: "61 2 * * *"\n    inputs: {day: x}\n', (6, 11),
     "the minute field '61' is not valid"),
    ('on:\n  schedule:\n    cron: "0 2 * *"\n', (6, 11), "needs five: minute hour day-of-month month day-of-week"),
    ('on:\n  schedule:\n    cron: "0 2 * * *"\n    timezone: Europe/Berln\n    inputs: {day: x}\n', (7, 15),
     "on.schedule.timezone: unknown timezone 'Europe/Berln'"),
    ('on:\n  schedule: {cron: "0 2 * * *", every: 1h, inputs: {day: x}}\n', (5, 13),
     "on.schedule: a schedule needs exactly one of cron"),
    ('on:\n  schedule: {inputs: {day: x}}\n', (5, 13), "a schedule needs exactly one of cron"),
    ('on:\n  schedule: {every: 500ms, inputs: {day: x}}\n', (5, 21),
     "on.schedule.every: 0.5s is below the minimum of 1s"),
    ('on:\n  schedule: {every: 1ms, inputs: {day: x}}\n', (5, 21), "below the minimum of 1s"),
    ('on:\n  schedule: {every: 1.5s, inputs: {day: x}}\n', (5, 21), "not a whole number of seconds"),
    ('on:\n  schedule: {every: soon, inputs: {day: x}}\n', (5, 21), "'soon' is not a duration"),
    ('on:\n  schedule: {every: 1m, catch_up: some}\n', (5, 35), "Input should be 'latest', 'all' or 'none'"),
    ('on:\n  schedule: {every: 1m, timezon: UTC}\n', (5, 25),
     "unknown key 'timezon' in on.schedule (allowed: cron, every, timezone, catch_up, inputs)"),
    ('on:\n  schedule: {every: 1m}\n', (5, 13),
     "on.schedule.inputs: every tick would be refused: missing required input 'day' (give it under "
     "on.schedule.inputs)"),
    ('on:\n  schedule: {every: 1m, inputs: {day: "${{ tick_unix }}"}}\n', (5, 33),
     "every tick would be refused: input 'day' must be string, got int"),
    ('on:\n  schedule:\n    every: 1m\n    inputs: {day: x, hour: y}\n', (7, 22),
     "on.schedule.inputs: unknown input 'hour' (declared: day)"),
    ('on:\n  schedule:\n    every: 1m\n    inputs:\n      day: "${{ inputs.day }}"\n', (8, 12),
     "on.schedule.inputs.day: unknown name 'inputs' (a schedule's inputs may read tick and tick_unix)"),
    ('on:\n  schedule:\n    every: 1m\n    inputs:\n      day: "${{ tick.__class__ }}"\n', (8, 12),
     "on.schedule.inputs.day: expression `tick.__class__`"),
    ('on:\n  schedule:\n    every: 1m\n    inputs:\n      day: "${{ tick "\n', (8, 12), "on.schedule.inputs.day:"),
])
def test_bad_schedules_are_located_errors(on: str, where: tuple[int, int], message: str) -> None:
    error = load_error(doc(on))
    assert message in error.reason, error.reason
    assert (error.line, error.column) == where, (str(error), error.excerpt)
    assert str(error).startswith(f"nightly.yaml:{where[0]}:{where[1]}: ")


def test_agentrt_validate_reports_the_location(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text(doc('on:\n  schedule: {cron: "0 0 31 4 *", inputs: {day: x}}\n'), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "worker", "validate", str(path), "--json"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    found = json.dumps(report)
    assert f"{path}" in found and "never fires" in found and '"line": 5' in found, found
