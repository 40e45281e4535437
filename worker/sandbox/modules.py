"""Which functions a `python` step may call: only code the operator deployed (the task modules).

A workflow file names `module:function`; it is untrusted, so the name alone must never reach the
worker's own powers (`os:getenv`, `subprocess:run`, `builtins:eval`, `worker.config:Settings`...).
The operator allows task modules by name or prefix (`AGENTRT_TASK_MODULES`); by default, the modules
and packages that sit directly in the workflows directory. Whatever the setting says, these are never
task modules: the standard library (any case, any submodule), `builtins`, `__main__`, the runtime's
own packages (`worker`, `console`), installed libraries (site-packages), and private names (`_x`).

The rules are applied twice: at load time on the names (`problems`, located at file:line:column), and
when a step runs on the objects (`resolve`): the module imported must be the file the operator
deployed, and the function must be defined in it, not imported into it (`from os import getenv`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import site
import sys
import sysconfig
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.errors import ConfigError, StepFailed

if TYPE_CHECKING:  # only stdlib and worker.errors at import time: a sandbox process imports this module
    from worker.config import Settings
    from worker.definitions.model import Problem
    from worker.definitions.schema import WorkflowSpec

WORKFLOWS_TOKEN = "@workflows"
"""In AGENTRT_TASK_MODULES: also allow the modules beside the workflows (the default's set)."""

_COMPONENT = r"[A-Za-z][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
_FUNCTION = re.compile(rf"(?P<module>{_MODULE.pattern}):(?P<attr>{_COMPONENT})")
_RUNTIME = frozenset({"worker", "console"})
_RESERVED = frozenset(n.lower() for n in (*sys.stdlib_module_names, *sys.builtin_module_names,
                                          "builtins", "__main__", *_RUNTIME))
_ADVICE = "Put the code in a task module and call that."


@cache
def _library_dirs() -> tuple[str, ...]:
    """Where the standard library and installed packages live (never a task module's home)."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.add(user)
    return tuple(sorted(os.path.realpath(d) for d in dirs))


def _inside(path: str | Path, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


@cache
def _installed(top: str) -> str | None:
    """Where `top` is found among the standard library and installed packages, if it is."""
    if top in sys.builtin_module_names:
        return "built into the interpreter"
    spec = importlib.machinery.PathFinder.find_spec(top, list(_library_dirs()))
    if spec is None:
        return None
    return spec.origin or next(iter(spec.submodule_search_locations or ()), None) or "site-packages"


def _reserved(module: str) -> str | None:
    """Why `module` can never be a task module, or None."""
    top = module.split(".", 1)[0]
    lower = top.lower()
    if lower not in _RESERVED:
        return None
    if lower in _RUNTIME:
        return f"{top} is the runtime's own code"
    if lower in ("builtins", "__main__"):
        return f"{top} is the interpreter itself"
    return f"{top} is part of Python's standard library"


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in re.split(r"[.:]", name))


@dataclass(frozen=True, slots=True)
class _Scan:
    """The workflows directory's module names, valid while the mtimes in `key` do not move."""

    key: tuple[int, ...] = ()
    """mtimes of the directory (a file added or removed) and of each subdirectory (an `__init__.py`)."""
    subdirs: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    shadowing: Mapping[str, str] = field(default_factory=dict)  # name -> the library it would shadow


def _mtime(path: str | Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _scan_key(directory: Path, subdirs: tuple[str, ...]) -> tuple[int, ...]:
    """A few stat calls, no listing: cheap enough to ask on every step."""
    return (_mtime(directory), *(_mtime(d) for d in subdirs))


def _scan(directory: Path) -> _Scan:
    top = _mtime(directory)  # before listing: a file added meanwhile moves it again
    names: list[str] = []
    subdirs: list[str] = []
    mtimes: list[int] = []
    shadowing: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            subdirs.append(str(entry))
            mtimes.append(_mtime(entry))
        if entry.is_file() and entry.suffix == ".py":
            name = entry.stem
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            name = entry.name
        else:
            continue
        if not re.fullmatch(_COMPONENT, name) or _reserved(name) is not None:
            continue
        where = _installed(name)
        if where is not None:
            shadowing[name] = where
        else:
            names.append(name)
    return _Scan((top, *mtimes), tuple(subdirs), tuple(names), shadowing)


@dataclass(frozen=True, slots=True)
class TaskModules:
    """The task modules `python` steps may call, for one deployment."""

    allowed: tuple[str, ...]
    """Module names or prefixes the operator listed (AGENTRT_TASK_MODULES), without the workflows token."""
    workflows_dir: Path | None = None
    """Also allow the modules and packages directly in this directory (the default)."""
    roots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Where each listed name's code lives (a package directory or a module file), checked at run time."""
    explicit: bool = False
    """Whether AGENTRT_TASK_MODULES was set (for messages)."""
    _cache: dict[Path, _Scan] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskModules:
        """The deployment's task modules; a listed name that cannot be one is a ConfigError (fail fast)."""
        workflows = settings.workflows_dir.resolve()
        if settings.task_modules is None:
            return cls((), workflows)
        allowed: list[str] = []
        roots: dict[str, tuple[str, ...]] = {}
        include_workflows = False
        for name in settings.task_modules:
            if name == WORKFLOWS_TOKEN:
                include_workflows = True
                continue
            roots[name] = _listed_root(name, workflows)
            allowed.append(name)
        return cls(tuple(allowed), workflows if include_workflows else None, roots, explicit=True)

    # -- names (load time and run time) --------------------------------------------------------
    def workflow_modules(self) -> tuple[str, ...]:
        """The module names found beside the workflows now (a file added later is seen)."""
        return self._current_scan().names

    def _current_scan(self) -> _Scan:
        if self.workflows_dir is None:
            return _Scan()
        cached = self._cache.get(self.workflows_dir)
        if cached is None or cached.key != _scan_key(self.workflows_dir, cached.subdirs):
            cached = _scan(self.workflows_dir)
            self._cache[self.workflows_dir] = cached
        return cached

    def describe(self, scan: _Scan | None = None) -> str:
        """What is allowed, for messages: `AGENTRT_TASK_MODULES, default: modules beside the workflows: a, b`."""
        found = ", ".join((scan or self._current_scan()).names) or "none yet"
        beside = f"the modules beside the workflows: {found}"
        if not self.explicit:
            return f"AGENTRT_TASK_MODULES, default: {beside}"
        listed = ", ".join(self.allowed) or "none"
        return f"AGENTRT_TASK_MODULES: {listed}" + (f"; {beside}" if self.workflows_dir is not None else "")

    def _owner(self, module: str, scan: _Scan | None = None) -> str | None:
        """The allowed name that `module` falls under, or None."""
        for name in (*self.allowed, *(scan or self._current_scan()).names):
            if module == name or module.startswith(name + "."):
                return name
        return None

    def refusal(self, function: str) -> str | None:
        """None if `module:attr` may be called; else a complete message: what is refused and what to do."""
        scan = self._current_scan()
        match = _FUNCTION.fullmatch(function)
        if match is not None:
            module = match["module"]
            top = module.split(".", 1)[0]
            owner = self._owner(module, scan)
            reason = _reserved(module)
            if reason is None and top in scan.shadowing:
                reason = (f"{top} is an installed library ({scan.shadowing[top]}); the file {top} beside the "
                          f"workflows cannot take its name: rename it")
            if reason is None and owner is None and _installed(top):
                reason = f"{top} is an installed library, not a task module"
            if reason is None and owner is not None:
                return None
            head = f"{function} is refused: {reason}." if reason else f"{function} is not a deployed task module:"
        else:
            plain = function.isprintable() and function.isascii() and function.strip() == function
            shown = function if plain else ascii(function)
            if _private(function) and ":" in function:
                head = f"{shown} is refused: names starting with _ are private and cannot be called from a workflow."
            elif ":" in function and "." in function.partition(":")[2]:
                head = (f"{shown} is refused: an attribute path is not a function of a task module; name a "
                        f"function defined at the top of the module.")
            else:
                head = f"{shown} is not a `module:function` name (ASCII letters, digits and _, e.g. demo_tasks:shout)."
        return (f"{head} python steps call only functions in the task modules the operator allows "
                f"({self.describe(scan)}). {_ADVICE}")

    def problems(self, spec: WorkflowSpec) -> list[Problem]:
        """One located problem per `python` step whose function may not be called."""
        from worker.definitions.model import Problem, format_loc

        problems: list[Problem] = []
        for i, step in enumerate(spec.steps):
            function = step.with_.get("function") if step.uses == "python" else None
            if not isinstance(function, str):
                continue
            loc = ("steps", i, "with", "function")
            if "${{" in function:
                reason = ("function must be written out as module:name, not computed by an expression: what a "
                          "step may call is checked when the file is loaded")
            else:
                reason = self.refusal(function) or ""
            if reason:
                problems.append(Problem(loc, f"{format_loc(loc)}: {reason}"))
        return problems

    # -- objects (run time) ------------------------------------------------------------------------
    def resolve(self, function: str) -> Callable[..., Any]:
        """Import and return the function; StepFailed(retryable=False) if it may not be called."""
        reason = self.refusal(function)
        if reason is not None:
            raise StepFailed(reason, retryable=False)
        module_name, _, attr = function.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise StepFailed(f"cannot import {function}: {exc}", retryable=False) from exc
        except Exception as exc:  # the module itself raised while being imported (e.g. SyntaxError)
            raise StepFailed(f"cannot import {function}: {type(exc).__name__}: {exc}", retryable=False) from exc
        self._check_module(function, module_name, module)
        try:
            func = getattr(module, attr)
        except AttributeError as exc:
            raise StepFailed(
                f"cannot import {function}: module {module_name!r} has no attribute {attr!r}", retryable=False
            ) from exc
        except Exception as exc:  # a module __getattr__ hook that raised
            raise StepFailed(f"cannot import {function}: {type(exc).__name__}: {exc}", retryable=False) from exc
        reason = self._foreign(func, module_name)
        if reason is not None:
            raise StepFailed(
                f"{function} is refused: {reason}; python steps call only functions defined in a task module. "
                f"Define the function in {module_name} itself.", retryable=False)
        return func  # type: ignore[no-any-return]

    def _check_module(self, function: str, module_name: str, module: object) -> None:
        """The imported module must be the deployed file, not a library or a substitute in sys.modules."""
        file = getattr(module, "__file__", None)
        owner = self._owner(module_name) or module_name
        roots = self.roots.get(owner) or ((str(self.workflows_dir),) if self.workflows_dir is not None else ())
        if (not isinstance(module, types.ModuleType) or getattr(module, "__name__", None) != module_name
                or not isinstance(file, str) or _inside(file, _library_dirs())
                or (roots and not _inside(file, roots))):
            where = file if isinstance(file, str) else type(module).__name__
            raise StepFailed(
                f"{function} is refused: {module_name} resolved to {where}, which is not the deployed task "
                f"module; python steps call only functions in the task modules the operator allows "
                f"({self.describe()}). {_ADVICE}", retryable=False)

    def _allowed_module(self, name: object) -> bool:
        return (isinstance(name, str) and _reserved(name) is None and not _private(name)
                and self._owner(name) is not None)

    def _foreign(self, obj: object, module_name: str) -> str | None:
        """Why `obj` is not a function defined in an allowed module, or None."""
        if inspect.ismodule(obj):
            return f"it is the module {obj.__name__}, not a function"
        if inspect.isclass(obj):
            return f"it is the class {obj.__module__}.{obj.__qualname__}, not a function"
        if not callable(obj):
            return f"it is a {type(obj).__name__}, not a function"
        if inspect.isfunction(obj):
            home = obj.__module__
        elif inspect.ismethod(obj):
            owner = obj.__self__ if inspect.isclass(obj.__self__) else type(obj.__self__)
            home = obj.__func__.__module__ if self._allowed_module(owner.__module__) else owner.__module__
        elif inspect.isbuiltin(obj) or inspect.ismethoddescriptor(obj) or inspect.ismethodwrapper(obj):
            home = getattr(obj, "__module__", None) or "builtins"
            return f"it is the built-in {home}.{getattr(obj, '__qualname__', type(obj).__name__)}, not task code"
        else:  # a callable instance: its class and its __call__ must both be task code
            call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's, not the instance's
            home = type(obj).__module__
            if self._allowed_module(home) and not (inspect.isfunction(call) and self._allowed_module(call.__module__)):
                where = getattr(call, "__module__", None) or "builtins"
                return f"its __call__ is {where}.{getattr(call, '__qualname__', '?')}, not task code"
        if self._allowed_module(home):
            return None
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        return f"it is {home}.{name}, imported into {module_name} from {home}"

    @property
    def search_path(self) -> tuple[str, ...]:
        """The sys.path entries task code needs (the workflows dir, the listed modules' homes)."""
        paths: list[str] = []
        if self.workflows_dir is not None:
            paths.append(str(self.workflows_dir))
        for roots in self.roots.values():
            for root in roots:
                # a package directory's parent, or a module file's directory
                parent = str(Path(root).parent)
                if parent not in paths:
                    paths.append(parent)
        return tuple(paths)


def _listed_root(name: str, workflows: Path) -> tuple[str, ...]:
    """Check one AGENTRT_TASK_MODULES entry and return where its code lives; ConfigError if it cannot be."""
    advice = "list the names of your own task modules (or @workflows for the modules beside the workflows)"
    if not _MODULE.fullmatch(name) or _private(name):
        raise ConfigError(f"AGENTRT_TASK_MODULES: {name!r} is not a public module name: {advice}")
    reason = _reserved(name)
    if reason is not None:
        raise ConfigError(f"AGENTRT_TASK_MODULES lists {name}, but {reason} and can never be a task module: "
                          f"{advice}")
    top = name.split(".", 1)[0]
    where = _installed(top)
    if where is not None:
        raise ConfigError(f"AGENTRT_TASK_MODULES lists {name}, but {top} is an installed library ({where}), "
                          f"not a task module: {advice}")
    try:
        spec = importlib.util.find_spec(top) or importlib.machinery.PathFinder.find_spec(top, [str(workflows)])
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"AGENTRT_TASK_MODULES lists {name}, which cannot be found: {exc}") from exc
    if spec is None:
        raise ConfigError(f"AGENTRT_TASK_MODULES lists {name}, but {top} is not on the Python path "
                          f"(sys.path) nor in the workflows directory {workflows}")
    locations = tuple(os.path.realpath(p) for p in (spec.submodule_search_locations or ()))
    if not locations and spec.origin:
        locations = (os.path.realpath(spec.origin),)
    if not locations or any(_inside(p, _library_dirs()) for p in locations):
        raise ConfigError(f"AGENTRT_TASK_MODULES lists {name}, but {top} resolves to "
                          f"{', '.join(locations) or 'no file'}, an installed library: {advice}")
    return locations
