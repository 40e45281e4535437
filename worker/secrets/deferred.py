"""Deferred secret references: `${{ secrets.<name>.<key> }}` is rendered twice.

1. The pure scheduler renders a step's `with:` and stores the result in the event log. There the
   `secrets` root is `DeferredSecrets`: every reference renders to an inert marker such as
   `[secret:stripe.api_key]`, so no secret value is ever part of the stored inputs.
2. When the step runs, `fill_secrets` walks the definition's template and the stored inputs side by
   side and re-renders, from the definition, only the template strings that read `secrets`. Data
   that came from step outputs is never rendered again: a step output containing
   `${{ secrets.x.y }}` stays that literal string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.definitions.expressions import OPEN, render, root_reads


def marker(name: str, key: object) -> str:
    """The inert text stored in place of `secrets.<name>.<key>`."""
    return f"[secret:{name}.{key}]"


class DeferredCredential(dict[str, str]):
    """Stands for `secrets.<name>`: any key reads as its marker; stored whole as `{"$secret": name}`."""

    def __init__(self, name: str) -> None:
        super().__init__({"$secret": name})
        self.credential = name

    def __missing__(self, key: str) -> str:
        return marker(self.credential, key)


class DeferredSecrets(dict[str, DeferredCredential]):
    """The `secrets` root the scheduler renders with: it holds no value at all."""

    def __missing__(self, name: str) -> DeferredCredential:
        return DeferredCredential(name)


def reads_secrets(text: str) -> bool:
    """True if the template string `text` reads the `secrets` root."""
    return OPEN in text and any(read.root == "secrets" for read in root_reads(text))


def template_reads_secrets(template: Any) -> bool:
    """True if any template string inside `template` reads `secrets`."""
    return any(read.root == "secrets" for read in root_reads(template))


_STEP_READS: dict[tuple[str, str], bool] = {}
_STEP_READS_MAX = 50_000


def step_reads_secrets(def_hash: str, step_id: str, template: Any) -> bool:
    """`template_reads_secrets` of a stored definition's step, worked out once (a version never changes): the
    walk over the step's `with:` is not repeated for every attempt."""
    key = (def_hash, step_id)
    found = _STEP_READS.get(key)
    if found is None:
        if len(_STEP_READS) >= _STEP_READS_MAX:
            _STEP_READS.clear()
        found = _STEP_READS[key] = template_reads_secrets(template)
    return found


def fill_secrets(template: Any, rendered: Any, context: Mapping[str, Any]) -> Any:
    """`rendered` with each position whose template string reads `secrets` rendered again with `context`.

    `template` is the step's `with:` from the definition; `rendered` is what the scheduler stored.
    Both have the same shape (rendering keeps mapping keys and list lengths), except below a string
    template that rendered to a structure: such values came from data and are kept as they are.
    """
    if isinstance(template, str):
        return render(template, context) if reads_secrets(template) else rendered
    if isinstance(template, Mapping) and isinstance(rendered, Mapping):
        return {key: fill_secrets(template[key], value, context) if key in template else value
                for key, value in rendered.items()}
    if isinstance(template, list | tuple) and isinstance(rendered, list) and len(template) == len(rendered):
        return [fill_secrets(t, r, context) for t, r in zip(template, rendered, strict=True)]
    return rendered
