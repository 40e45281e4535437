"""`limits.yaml`: loading it (located errors, like `tools.yaml`), following its edits, and the load-time check
that a workflow file names only limits it defines.

The file is the operator's: it lives beside the workflows, reserved like `tools.yaml` (never loaded as a workflow),
hot-reloaded (an invalid save keeps the previous good version and is listed with the workflow errors). A
workflow file can only *opt in* to the limits named here (`limit:` / `limits:`); it cannot define, change or
widen one, and a name the file does not define is a load error at its file:line:column.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from worker.definitions.loader import load_operator_text, read_operator_file
from worker.definitions.problems import Loc, Problem
from worker.definitions.schema import WorkflowSpec
from worker.errors import DefinitionError
from worker.limits.spec import LimitsFileSpec

logger = logging.getLogger(__name__)

LIMITS_FILES = ("limits.yaml", "limits.yml")
RECHECK_S = 1.0
"""How often the file's (mtime, size) is looked at again by a long-lived reader."""


def load_limits_text(text: str, path: str | Path = "<limits>") -> LimitsFileSpec:
    """Parse and validate a `limits.yaml`; DefinitionError with line:column."""
    return load_operator_text(text, path, LimitsFileSpec, "limits:")


def load_limits_file(path: Path) -> LimitsFileSpec:
    """Load `limits.yaml` (a regular file of at most 1 MiB)."""
    return load_limits_text(read_operator_file(path), path)


class OperatorLimits:
    """The `limits.yaml` of a workflows directory, read again when it changes (at most every RECHECK_S).

    An invalid file keeps the previous good version (`error` says why); with no good version yet, no limit is
    defined. A missing file defines none.
    """

    def __init__(self, workflows_dir: Path, *, recheck: float = RECHECK_S) -> None:
        self.workflows_dir = Path(workflows_dir)
        self.error: DefinitionError | None = None
        self._recheck = recheck
        self._spec = LimitsFileSpec()
        self._stamp: tuple[str, int, int] | None = None
        self._checked = -1e18

    @property
    def path(self) -> Path | None:
        return next((self.workflows_dir / n for n in LIMITS_FILES if (self.workflows_dir / n).is_file()), None)

    def current(self) -> LimitsFileSpec:
        now = time.monotonic()
        if now - self._checked < self._recheck:
            return self._spec
        self._checked = now
        path = self.path
        if path is None:
            self._stamp, self._spec, self.error = None, LimitsFileSpec(), None
            return self._spec
        try:
            info = os.stat(path)
        except OSError:
            return self._spec
        stamp = (str(path), info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            try:
                self._spec, self.error = load_limits_file(path), None
            except DefinitionError as exc:
                logger.warning("invalid %s (keeping the previous version): %s", path.name, exc)
                self.error = exc
            self._stamp = stamp
        return self._spec

    def problems(self, spec: WorkflowSpec) -> list[Problem]:
        """The load-time check: every `limit:` / `limits:` name must be defined in limits.yaml."""
        self._checked = -1e18  # a check follows a save of this file at once
        return limit_problems(spec, set(self.current().limits), self.error, self.path)


def limit_problems(spec: WorkflowSpec, known: set[str], error: DefinitionError | None = None,
                   path: Path | None = None) -> list[Problem]:
    """Problems of the steps that name limits `known` does not hold."""
    problems: list[Problem] = []
    for i, step in enumerate(spec.steps):
        named: list[tuple[Loc, str]] = [(("steps", i, "limit"), step.limit)] if step.limit else []
        named += [(("steps", i, "limits", k), name) for k, name in enumerate(step.limits)]
        for loc, name in named:
            if name in known:
                continue
            if error is not None:
                why = f"limits.yaml is invalid ({error})"
            elif path is None:
                why = "there is no limits.yaml beside the workflows"
            else:
                why = f"defined: {', '.join(sorted(known))}" if known else f"{path.name} defines none"
            problems.append(Problem(loc, f"step '{step.id}' names unknown limit '{name}' ({why}); limits are "
                                         "defined by the operator in limits.yaml, a workflow can only opt in"))
    return problems
