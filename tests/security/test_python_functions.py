"""Hostile `python` steps: a workflow file naming code the operator did not deploy.

Each case is a small workflow file in the workflows directory, loaded the way the worker loads it
(`load_file(path, root, checks=load_checks(settings))`): it must be refused at file:line:column with
what to do instead. Task modules that smuggle foreign code past the name check (`from os import getenv
as lookup`, `import os as sysos`) pass the load and fail when the step runs, never returning the value.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from tests.security.harness import Canary
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from tests.support.services import worker_environment
from worker.boundary import load_checks
from worker.config import Settings
from worker.definitions.loader import load_file
from worker.errors import DefinitionError

REPO_ROOT = Path(__file__).resolve().parents[2]
ADVICE = "Put the code in a task module and call that."

HOSTILE = """\
name: {name}
steps:
  - id: grab
    uses: python
    with:
      function: {function}
      args: {{key: VAULT_TOKEN}}
"""
LINE, COLUMN = 6, 17  # where the function's value starts in HOSTILE

REFUSED = [
    # the standard library: environment, processes, arbitrary code, files, memory
    "os:getenv", "os:system", "subprocess:getoutput", "subprocess:run", "runpy:run_path", "importlib:import_module",
    "pickle:loads", "ctypes:CDLL", "shutil:rmtree", "pathlib:Path", "os.path:expanduser", "posix:system",
    "pty:spawn", "code:interact", "sys:exit", "marshal:loads", "multiprocessing:Process", "socket:create_connection",
    "importlib.util:spec_from_file_location", "asyncio.subprocess:create_subprocess_shell",
    # the interpreter itself
    "builtins:eval", "builtins:exec", "builtins:open", "builtins:compile",
    # the runtime's own code: its settings, its Vault session
    "worker.config:Settings", "worker.secrets.vault:VaultSession", "worker.cli:main", "console.app:main",
    # installed libraries
    "httpx:get", "yaml:load", "pydantic:create_model",
    # case variants of the above
    "OS:getenv", "Subprocess:getoutput", "Builtins:eval", "OS.PATH:expanduser",
]
PRIVATE = ["demo_tasks:_private", "demo_tasks:__builtins__", "builtins:__import__", "demo_tasks._impl:f"]
MALFORMED = ["demo_tasks:os.getenv", "demo_tasks:os.environ.get", " os:getenv", "os:getenv ", "os :getenv",
             "\\uff4f\\uff53:getenv"]


@pytest.fixture
def workflows(settings: Settings) -> Path:
    """The test's workflows directory, with the demo task modules beside the files (the honest deployment)."""
    for module in ("demo_tasks.py", "vault_demo_tasks.py"):
        shutil.copy(REPO_ROOT / "workflows" / module, settings.workflows_dir / module)
    return settings.workflows_dir


def hostile_file(workflows: Path, n: int, function: str) -> Path:
    path = workflows / f"hostile-{n}.yaml"
    path.write_text(HOSTILE.format(name=f"hostile-{n}", function=json.dumps(function).replace("\\\\", "\\")))
    return path


def refusal(settings: Settings, path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        load_file(path, settings.workflows_dir, checks=load_checks(settings))
    return info.value


@pytest.mark.parametrize("function", REFUSED)
def test_code_that_was_not_deployed_is_refused_at_load(settings: Settings, workflows: Path, function: str) -> None:
    error = refusal(settings, hostile_file(workflows, 0, function))
    assert (error.line, error.column) == (LINE, COLUMN), error
    assert error.reason.startswith(f"steps[0].with.function: {function} is refused: "), error.reason
    assert error.reason.endswith(ADVICE)
    assert "AGENTRT_TASK_MODULES" in error.reason and "demo_tasks" in error.reason


@pytest.mark.parametrize("function", PRIVATE)
def test_private_names_are_refused_at_load(settings: Settings, workflows: Path, function: str) -> None:
    error = refusal(settings, hostile_file(workflows, 0, function))
    assert (error.line, error.column) == (LINE, COLUMN), error
    assert "names starting with _ are private" in error.reason


@pytest.mark.parametrize("function", MALFORMED)
def test_attribute_paths_and_lookalike_names_are_refused_at_load(settings: Settings, workflows: Path,
                                                                  function: str) -> None:
    error = refusal(settings, hostile_file(workflows, 0, function))
    assert (error.line, error.column) == (LINE, COLUMN), error
    assert "steps[0].with.function" in error.reason


def test_a_function_chosen_by_the_run_input_is_refused_at_load(settings: Settings, workflows: Path) -> None:
    path = workflows / "chosen.yaml"
    path.write_text(HOSTILE.format(name="chosen", function='"${{ inputs.f }}"').replace(
        "steps:", "inputs: {f: {type: string}}\nsteps:"))
    error = refusal(settings, path)
    assert (error.line, error.column) == (LINE + 1, COLUMN)
    assert "not computed by an expression" in error.reason


def test_a_workflows_file_named_like_the_stdlib_does_not_open_it(settings: Settings, workflows: Path) -> None:
    (workflows / "os.py").write_text("def getenv(key):\n    return 'mine'\n")
    (workflows / "yaml.py").write_text("def load(text):\n    return text\n")
    reason = refusal(settings, hostile_file(workflows, 1, "os:getenv")).reason
    assert "os is part of Python's standard library" in reason
    reason = refusal(settings, hostile_file(workflows, 2, "yaml:load")).reason
    assert "yaml is an installed library" in reason and "rename it" in reason


async def test_agentrt_validate_reports_the_refusal_with_its_location(settings: Settings, workflows: Path,
                                                                      canary: Canary) -> None:
    path = hostile_file(workflows, 3, "subprocess:getoutput")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "validate", str(path), cwd=REPO_ROOT,
        env={**worker_environment(settings), **canary.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 1, text
    assert f"{path}:{LINE}:{COLUMN}" in text
    assert "subprocess:getoutput is refused: subprocess is part of Python's standard library" in text
    await canary.assert_absent(settings, texts={"agentrt validate output": text})


# ---- task modules that smuggle foreign code past the name check -----------------------------------

SMUGGLER = '''
import os as sysos
from os import getenv as lookup

__all__ = ["honest", "lookup", "sysos"]


def honest(key: str) -> str:
    return "no " + key
'''


@pytest.mark.parametrize("isolation", ["process", "inline"])
@pytest.mark.parametrize(("attr", "reason"), [
    ("lookup", "is refused: it is os.getenv, imported into {module} from os"),
    ("sysos", "is refused: it is the module os, not a function"),
])
async def test_a_task_module_cannot_pass_on_what_it_imported(settings: Settings, canary: Canary,
                                                             attr: str, reason: str, isolation: str) -> None:
    module = f"mytasks_{attr}_{isolation}"  # one name per test: sys.modules outlives a test
    (settings.workflows_dir / f"{module}.py").write_text(SMUGGLER)
    steps = "".join(
        f"  - {{id: grab{i}, uses: python, needs: [], continue_on_error: true,\n"
        f"     with: {{function: \"{module}:{attr}\", args: {{key: {key}}}}}}}\n"
        for i, key in enumerate(("VAULT_TOKEN", "AGENTRT_CANARY_SECRET", "AWS_SECRET_ACCESS_KEY")))
    path = write_workflow(settings, "smuggle.yaml", f"name: smuggle\nsteps:\n{steps}")
    load_file(path, settings.workflows_dir, checks=load_checks(settings))  # the module is allowed: it loads
    async with running_worker(settings, python_isolation=isolation), client_for(settings) as client:
        run_id = await client.start_run("smuggle")
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
    assert [s.status.value for s in detail.steps] == ["failed"] * 3
    for step in detail.steps:
        assert step.output is None
        assert [a.status for a in step.attempts] == ["failed"]  # not retried: it cannot succeed
        assert reason.format(module=module) in (step.attempts[0].error or ""), step.attempts[0].error
    await canary.assert_absent(settings, texts={"run detail": repr(detail), "run summary": repr(summary)})


async def test_a_hostile_save_against_a_running_worker_keeps_the_previous_version(
        settings: Settings, workflows: Path, canary: Canary) -> None:
    honest = """
        name: reload
        steps:
          - id: grab
            uses: python
            with:
              function: "demo_tasks:shout"
              args: {text: VAULT_TOKEN}
    """
    path = write_workflow(settings, "reload.yaml", honest)
    async with running_worker(settings), client_for(settings) as client:
        first = await client.start_run("reload")
        assert (await client.wait_for_run(first, timeout=20)).status.value == "completed"
        path.write_text(textwrap.dedent(honest).lstrip().replace("demo_tasks:shout", "os:getenv")
                        .replace("text: VAULT_TOKEN", "key: VAULT_TOKEN"))

        async def invalid() -> bool:
            return {w.path: w for w in await client.list_workflows()}[str(path)].status == "invalid"

        await eventually(invalid, timeout=10, interval=0.05, what="the hostile save reported invalid")
        info = {w.path: w for w in await client.list_workflows()}[str(path)]
        assert (info.error_line, info.error_column) == (LINE, COLUMN)  # the value of `function:`
        assert "os:getenv is refused: os is part of Python's standard library" in (info.error or "")
        second = await client.start_run("reload")  # the previous version is still the active one
        assert (await client.wait_for_run(second, timeout=20)).status.value == "completed"
        outputs = [(await client.get_run(r)).output for r in (first, second)]
        events = await client.workflow_events()
    assert outputs == ["VAULT_TOKEN", "VAULT_TOKEN"]
    assert any(e.kind == "invalid" and "os:getenv" in (e.error or "") for e in events)
    await canary.assert_absent(settings, texts={"outputs": repr(outputs), "workflow info": repr(info)})
