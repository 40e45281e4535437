"""The set of workflow definitions found in a directory, and how it changes as files change.

Files named `tools.yaml` / `tools.yml` (shared tool servers) and `limits.yaml` / `limits.yml` (the operator's
rate limits, worker/limits) and `notify.yaml` / `notify.yml` (notification targets, worker/notify) are reserved
and are not workflows; they are validated, not loaded, here. Hidden
files and editor temporaries (`.#x.yaml`, `x.yaml~`, `.x.yaml.swp`) are ignored too.

A workflow name, and a webhook path (`on: {webhook: {path: ...}}`), belongs to one file: a file that
claims one another file holds is refused (its previous version, if any, stays active).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from worker.definitions.loader import load_file, load_tools_file
from worker.definitions.model import Definition
from worker.definitions.trust import TrustCheck
from worker.errors import DefinitionError

WORKFLOW_SUFFIXES = (".yaml", ".yml")
RESERVED_NAMES = frozenset({"tools.yaml", "tools.yml", "limits.yaml", "limits.yml", "notify.yaml", "notify.yml"})
"""Reserved for the operator's shared tool servers, limits and notifications; never loaded as workflows."""

ChangeKind = Literal["loaded", "unchanged", "invalid", "deleted"]


def is_workflow_file(path: Path) -> bool:
    """True for `*.yaml` / `*.yml` files that are not hidden, editor temporaries or reserved."""
    name = path.name
    return (
        name.endswith(WORKFLOW_SUFFIXES)
        and not name.startswith((".", "#"))
        and name not in RESERVED_NAMES
    )


def load_operator_file(path: Path) -> None:
    """Validate a reserved file (`tools.yaml`, `limits.yaml`); DefinitionError with file:line:column."""
    if path.name.startswith("limits."):
        from worker.limits.file import load_limits_file  # the limits capability owns its format

        load_limits_file(path)
    elif path.name.startswith("notify."):
        from worker.notify.config import load_notify_file  # the notifications capability owns its format

        load_notify_file(path)
    else:
        load_tools_file(path)


def scan_directory(root: Path, checks: Sequence[TrustCheck] = ()) -> dict[Path, Definition | DefinitionError]:
    """Load every workflow file directly inside `root` (not recursive), sorted by file name.

    A file that fails to load maps to its DefinitionError; nothing here raises for a bad file
    (an OSError still escapes if `root` itself cannot be listed).
    """
    results: dict[Path, Definition | DefinitionError] = {}
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.name in RESERVED_NAMES and path.is_file():
            # not a workflow; an invalid one is listed with the workflow errors (file:line:column)
            try:
                load_operator_file(path)
            except DefinitionError as error:
                results[path] = error
            continue
        if not is_workflow_file(path) or path.is_dir():
            continue
        try:
            results[path] = load_file(path, root=root, checks=checks)
        except DefinitionError as error:
            results[path] = error
    return results


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """What applying a file's latest load result did to the registry."""

    path: Path
    kind: ChangeKind
    """loaded: a new version is active; unchanged: same hash, nothing to do; invalid: the file is
    broken and its previous good version (if any) stays active; deleted: the file is gone."""
    name: str | None
    """The workflow name now active for this file (for invalid: the one still active; may be None)."""
    def_hash: str | None
    """The hash now active for this file (for deleted: the hash that was removed)."""
    error: DefinitionError | None = None


class Registry:
    """In-memory view of the active definitions, keyed by workflow name, and the files' errors."""

    def __init__(self) -> None:
        self._files: dict[Path, Definition] = {}  # last good definition of each file
        self._owners: dict[str, Path] = {}  # workflow name -> the file that defines it
        self._hooks: dict[str, Path] = {}  # webhook path -> the file whose active workflow receives it
        self._errors: dict[Path, DefinitionError] = {}

    def apply(self, path: Path, result: Definition | DefinitionError) -> RegistryChange:
        """Record the latest load result for `path`.

        A valid file whose hash is unchanged (and which had no pending error) is "unchanged". A
        file that fixes an earlier error is "loaded" even if its hash equals the active one, so
        listeners learn that the error is gone.
        """
        previous = self._files.get(path)
        if isinstance(result, DefinitionError):
            return self._invalid(path, previous, result)
        owner = self._owners.get(result.name)
        if owner is not None and owner != path:
            error = DefinitionError(path, f"workflow name '{result.name}' is already defined in {owner.name}")
            return self._invalid(path, previous, error)
        hook = _webhook_path(result)
        holder = self._hooks.get(hook) if hook is not None else None
        if holder is not None and holder != path:
            error = DefinitionError(path, f"webhook path '{hook}' is already used by workflow "
                                          f"'{self._files[holder].name}' ({holder.name})")
            return self._invalid(path, previous, error)
        if previous is not None and previous.def_hash == result.def_hash and path not in self._errors:
            return RegistryChange(path, "unchanged", previous.name, previous.def_hash)
        if previous is not None and previous.name != result.name:
            del self._owners[previous.name]
        if previous is not None and self._hooks.get(_webhook_path(previous) or "") == path:
            del self._hooks[_webhook_path(previous) or ""]
        self._files[path] = result
        self._owners[result.name] = path
        if hook is not None:
            self._hooks[hook] = path
        self._errors.pop(path, None)
        return RegistryChange(path, "loaded", result.name, result.def_hash)

    def _invalid(self, path: Path, previous: Definition | None, error: DefinitionError) -> RegistryChange:
        self._errors[path] = error
        return RegistryChange(path, "invalid", previous.name if previous else None,
                              previous.def_hash if previous else None, error)

    def remove(self, path: Path) -> RegistryChange:
        """Forget a deleted file; its workflow stops being active.

        Another file that was refused because it declared the same name is not promoted here:
        it becomes active the next time it is applied (e.g. on the next scan or save).
        """
        previous = self._files.pop(path, None)
        self._errors.pop(path, None)
        if previous is not None and self._owners.get(previous.name) == path:
            del self._owners[previous.name]
        if previous is not None and self._hooks.get(_webhook_path(previous) or "") == path:
            del self._hooks[_webhook_path(previous) or ""]
        return RegistryChange(path, "deleted", previous.name if previous else None,
                              previous.def_hash if previous else None)

    def sync(self, results: Mapping[Path, Definition | DefinitionError]) -> list[RegistryChange]:
        """Apply a full scan: every file in `results`, and remove known files missing from it."""
        changes = [self.remove(path) for path in sorted(self.paths() - results.keys())]
        changes += [self.apply(path, result) for path, result in results.items()]
        return changes

    def paths(self) -> set[Path]:
        """Every file the registry knows about (valid or not)."""
        return set(self._files) | set(self._errors)

    def active(self) -> dict[str, Definition]:
        """The active definition of each workflow name."""
        return {name: self._files[path] for name, path in sorted(self._owners.items())}

    def get(self, name: str) -> Definition | None:
        """The active definition named `name`, if any."""
        path = self._owners.get(name)
        return self._files[path] if path is not None else None

    def errors(self) -> dict[Path, DefinitionError]:
        """The current error of each file that failed its latest load."""
        return dict(self._errors)


def _webhook_path(defn: Definition) -> str | None:
    on = defn.spec.on
    return on.webhook.path if on is not None and on.webhook is not None else None
