"""TaskModules: which `module:function` names a python step may call, at load time and at run time."""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest

from worker.config import Settings
from worker.definitions.loader import load_text
from worker.errors import ConfigError, DefinitionError, StepFailed
from worker.sandbox.modules import TaskModules


def modules_in(directory: Path, **files: str) -> TaskModules:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return TaskModules.from_settings(Settings(workflows_dir=directory))


def unique(prefix: str) -> str:
    """A module name no other test imported (sys.modules is shared by the whole session)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def wf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


# ---- names -----------------------------------------------------------------------------------


def test_default_allows_the_modules_and_packages_beside_the_workflows(wf: Path) -> None:
    tm = modules_in(wf, **{"tasks.py": "def f(): return 1\n", "pkg/__init__.py": "", "pkg/sub.py": "",
                           "notapkg/mod.py": "", "_hidden.py": "", "flow.yaml": "name: x\n"})
    assert tm.workflow_modules() == ("pkg", "tasks")
    assert tm.refusal("tasks:f") is None
    assert tm.refusal("pkg.sub:g") is None
    assert tm.refusal("notapkg.mod:f") is not None
    assert tm.refusal("_hidden:f") is not None
    assert tm.search_path == (str(wf.resolve()),)


def test_a_module_added_later_is_seen(wf: Path) -> None:
    tm = modules_in(wf, **{"first.py": ""})
    assert tm.refusal("second:f") is not None
    (wf / "second.py").write_text("def f(): pass\n")
    assert tm.refusal("second:f") is None
    (wf / "later").mkdir()
    assert tm.refusal("later:f") is not None
    (wf / "later" / "__init__.py").write_text("")  # only the subdirectory's mtime changes
    assert tm.refusal("later:f") is None
    (wf / "second.py").unlink()
    assert tm.refusal("second:f") is not None


def test_the_message_says_what_is_refused_and_what_to_do(wf: Path) -> None:
    tm = modules_in(wf, **{"demo_tasks.py": "", "vault_demo_tasks.py": ""})
    assert tm.refusal("acme:getenv") == (
        "acme:getenv is not a deployed task module: python steps call only functions in the task modules the "
        "operator allows (AGENTRT_TASK_MODULES, default: the modules beside the workflows: demo_tasks, "
        "vault_demo_tasks). Put the code in a task module and call that.")
    message = tm.refusal("os:getenv") or ""
    assert message.startswith("os:getenv is refused: os is part of Python's standard library.")
    assert message.endswith("Put the code in a task module and call that.")


@pytest.mark.parametrize("function", [
    "os:getenv", "os:system", "subprocess:run", "runpy:run_path", "importlib:import_module", "pickle:loads",
    "ctypes:CDLL", "shutil:rmtree", "pathlib:Path", "posix:system", "pty:spawn", "code:interact", "sys:exit",
    "os.path:expanduser", "importlib.util:spec_from_file_location", "json:loads",
    "OS:getenv", "Subprocess:run", "BUILTINS:eval", "Os.Path:expanduser",
    "builtins:eval", "builtins:exec", "builtins:open", "__main__:main",
    "worker.config:Settings", "worker.secrets.vault:VaultSecretProvider", "worker:main", "console.app:main",
])
def test_stdlib_builtins_and_the_runtime_are_always_refused(wf: Path, function: str) -> None:
    listed = TaskModules.from_settings(Settings(workflows_dir=wf, task_modules=("tests.support", "@workflows")))
    for tm in (modules_in(wf, **{"os.py": "", "subprocess.py": "", "worker.py": "", "json.py": ""}), listed):
        reason = tm.refusal(function) or ""
        assert reason.startswith(f"{function} is refused: "), reason
        assert any(why in reason for why in ("standard library", "runtime's own code", "interpreter", "private"))


@pytest.mark.parametrize("function", ["yaml:load", "httpx:get", "pydantic:BaseModel", "requests:get"])
def test_installed_libraries_are_refused_even_when_a_workflows_file_takes_their_name(
        wf: Path, function: str) -> None:
    tm = modules_in(wf, **{"yaml.py": "def load(x): return x\n"})
    reason = tm.refusal(function) or ""
    top = function.split(":")[0]
    assert reason.startswith(f"{function} is refused: {top} is an installed library"), reason
    assert "yaml" not in tm.workflow_modules()
    if top == "yaml":
        assert "rename it" in reason


@pytest.mark.parametrize("function", [
    "tasks:_private", "tasks:__init__", "tasks._impl:f", "_tasks:f", "builtins:__import__", "tasks:__class__",
])
def test_private_names_are_refused(wf: Path, function: str) -> None:
    tm = modules_in(wf, **{"tasks.py": "", "_tasks.py": ""})
    assert "names starting with _ are private" in (tm.refusal(function) or "")


@pytest.mark.parametrize("function", [
    " tasks:f", "tasks:f ", "tasks :f", "tasks: f", "tasks:f\n", "tasks:os.getenv", "tasks", "tasks:",
    ":f", "tasks..x:f", "tasks.:f", "\uff54\uff41\uff53\uff4b\uff53:f", "tasks:\uff46", "tasks:f;x", "1tasks:f",
])
def test_malformed_names_are_refused(wf: Path, function: str) -> None:
    tm = modules_in(wf, **{"tasks.py": ""})
    reason = tm.refusal(function) or ""
    assert "is not a `module:function` name" in reason or "attribute path" in reason, reason
    assert "\n" not in reason


def test_listed_modules_are_names_or_prefixes(wf: Path) -> None:
    modules_in(wf, **{"demo_tasks.py": ""})
    tm = TaskModules.from_settings(Settings(workflows_dir=wf, task_modules=("tests.support",)))
    assert tm.refusal("tests.support.pyfuncs:add") is None
    assert tm.refusal("tests.support:anything") is None
    assert tm.refusal("tests.supportx:f") is not None
    assert tm.refusal("tests:f") is not None
    assert tm.refusal("tests.security.harness:canary") is not None
    assert tm.refusal("demo_tasks:f") is not None  # a list replaces the default...
    both = TaskModules.from_settings(Settings(workflows_dir=wf, task_modules=("tests.support", "@workflows")))
    assert both.refusal("demo_tasks:f") is None  # ...unless it includes @workflows
    root = str(Path(__file__).resolve().parents[3])
    assert both.search_path == (str(wf.resolve()), root)


@pytest.mark.parametrize(("listed", "fragment"), [
    ("json", "json is part of Python's standard library"),
    ("os.path", "os is part of Python's standard library"),
    ("Subprocess", "standard library"),
    ("builtins", "interpreter"),
    ("worker.steps", "worker is the runtime's own code"),
    ("console", "runtime's own code"),
    ("requests", "requests is an installed library"),
    ("yaml", "yaml is an installed library"),
    ("_secret", "not a public module name"),
    ("tests._x", "not a public module name"),
    ("a..b", "not a public module name"),
    ("no_such_module_anywhere", "is not on the Python path"),
])
def test_a_listed_name_that_cannot_be_a_task_module_fails_at_start(wf: Path, listed: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="AGENTRT_TASK_MODULES") as info:
        TaskModules.from_settings(Settings(workflows_dir=wf, task_modules=(listed,)))
    assert fragment in str(info.value)


def test_a_listed_module_may_live_in_the_workflows_directory(wf: Path) -> None:
    name = unique("listed")
    modules_in(wf, **{f"{name}.py": "def f():\n    return 'ok'\n"})
    tm = TaskModules.from_settings(Settings(workflows_dir=wf, task_modules=(name,)))
    assert tm.resolve(f"{name}:f")() == "ok"


# ---- load time -------------------------------------------------------------------------------


def test_problems_are_located_at_the_function(wf: Path) -> None:
    tm = modules_in(wf, **{"tasks.py": ""})
    text = textwrap.dedent("""\
        name: x
        steps:
          - {id: ok, uses: python, with: {function: "tasks:f"}}
          - {id: note, uses: set, with: {function: "os:getenv"}}
          - id: bad
            uses: python
            with:
              args: {key: VAULT_TOKEN}
              function: "os:getenv"
    """)
    with pytest.raises(DefinitionError) as info:
        load_text(text, "wf.yaml", checks=(tm.problems,))
    assert (info.value.line, info.value.column) == (9, 17)
    assert info.value.reason.startswith("steps[2].with.function: os:getenv is refused: os is part of")
    assert len(tm.problems(load_text(text.replace("os:getenv", "tasks:g")).spec)) == 0


def test_a_function_computed_by_an_expression_is_refused_at_load(wf: Path) -> None:
    tm = modules_in(wf, **{"tasks.py": ""})
    text = 'name: x\nsteps:\n  - {id: s, uses: python, with: {function: "${{ inputs.f }}"}}\n'
    with pytest.raises(DefinitionError) as info:
        load_text(text, "wf.yaml", checks=(tm.problems,))
    assert "not computed by an expression" in info.value.reason
    assert info.value.line == 3


# ---- run time ----------------------------------------------------------------------------------


def refused(tm: TaskModules, function: str) -> str:
    with pytest.raises(StepFailed) as info:
        tm.resolve(function)
    assert info.value.retryable is False
    return info.value.reason


def test_resolve_returns_functions_defined_in_the_task_module(wf: Path) -> None:
    name = unique("honest")
    tm = modules_in(wf, **{f"{name}.py": """
        class Greeter:
            def __call__(self, who: str) -> str:
                return "hi " + who

            def hello(self, who: str) -> str:
                return "hello " + who

        greet = Greeter()
        hello = greet.hello

        def shout(text: str) -> str:
            return text.upper()

        async def later() -> int:
            return 1
    """})
    assert tm.resolve(f"{name}:shout")("a") == "A"
    assert tm.resolve(f"{name}:greet")("b") == "hi b"
    assert tm.resolve(f"{name}:hello")("c") == "hello c"
    assert tm.resolve(f"{name}:later").__name__ == "later"


@pytest.mark.parametrize(("attr", "fragment"), [
    ("lookup", "it is os.getenv, imported into"),
    ("sysos", "it is the module os, not a function"),
    ("run", "it is subprocess.run, imported into"),
    ("system", "it is the built-in posix.system"),
    ("environ_get", "imported into"),
    ("partial_env", "it is functools.partial, imported into"),
    ("Popen", "it is the class subprocess.Popen, not a function"),
    ("Local", "it is the class"),
    ("hooked", "it is the built-in posix.system"),
    ("hooked_module", "it is the module subprocess"),
    ("forwarder", "its __call__ is posix.system, not task code"),
    ("opener", "it is the built-in io.open"),
    ("evaluate", "it is the built-in builtins.eval"),
    ("NUMBER", "it is a int, not a function"),
])
def test_resolve_refuses_what_the_task_module_did_not_define(wf: Path, attr: str, fragment: str) -> None:
    name = unique("hostile")
    tm = modules_in(wf, **{f"{name}.py": """
        import functools
        import os
        import os as sysos
        from os import getenv as lookup
        from posix import system
        from subprocess import Popen, run

        environ_get = os.environ.get
        partial_env = functools.partial(os.getenv, "VAULT_TOKEN")
        opener = open
        evaluate = eval
        NUMBER = 42

        class Local:
            pass

        class Forwarder:
            __call__ = staticmethod(os.system)

        forwarder = Forwarder()

        def __getattr__(name):
            import subprocess
            return {"hooked": os.system, "hooked_module": subprocess}[name]
    """})
    reason = refused(tm, f"{name}:{attr}")
    assert fragment in reason, reason
    assert reason.startswith(f"{name}:{attr} is refused: ") or "not a function" in reason
    assert os.environ.get("VAULT_TOKEN", "\0") not in reason


def test_resolve_refuses_a_substitute_in_sys_modules(wf: Path) -> None:
    name = unique("swap")
    tm = modules_in(wf, **{f"{name}/__init__.py": f"""
        import os
        import sys
        sys.modules["{name}.env"] = os
    """})
    import importlib

    importlib.import_module(name)
    assert tm.refusal(f"{name}.env:getenv") is None  # by name it is the task package's...
    reason = refused(tm, f"{name}.env:getenv")  # ...but the object is os
    assert "which is not the deployed task module" in reason


def test_resolve_refuses_a_same_named_module_imported_from_elsewhere(wf: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("twin")
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{name}.py").write_text("def f():\n    return 'not deployed'\n")
    monkeypatch.syspath_prepend(str(other))  # found first: not the file beside the workflows
    tm = modules_in(wf, **{f"{name}.py": "def f():\n    return 'deployed'\n"})
    assert "which is not the deployed task module" in refused(tm, f"{name}:f")


def test_resolve_applies_the_name_rules_first(wf: Path) -> None:
    tm = modules_in(wf, **{"os.py": "def getenv(key):\n    return 'shadow'\n"})
    reason = refused(tm, "os:getenv")
    assert reason.startswith("os:getenv is refused: os is part of Python's standard library")
    assert "is not a deployed task module" in refused(tm, "tests.support.pyfuncs:add")
