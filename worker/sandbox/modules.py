"""Which functions a `python` step may call (placeholder: being written)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import Settings
from worker.definitions.model import Problem
from worker.definitions.schema import WorkflowSpec


@dataclass(frozen=True, slots=True)
class TaskModules:
    allowed: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskModules:
        return cls(settings.task_modules or ())

    def refusal(self, function: str) -> str | None:
        return None

    def problems(self, spec: WorkflowSpec) -> list[Problem]:
        return []
