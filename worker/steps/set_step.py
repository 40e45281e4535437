"""The `set` step: its output is its `with:` mapping, already rendered by the engine."""

from __future__ import annotations

from typing import Any, ClassVar

from worker.steps.base import StepContext


class SetExecutor:
    """Runs `uses: set` steps: no I/O, the rendered arguments are the output."""

    kind: ClassVar[str] = "set"

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        return dict(args)

    async def aclose(self) -> None:
        return None
