"""The key footer, without Textual's leak of one set of keys per bindings change.

Textual's `Footer` builds new `FooterKey` widgets every time the screen's bindings change (focus moves,
a screen is pushed or popped), and each key watches the footer's `compact` reactive through
`data_bind`. Watchers are dropped only when the watched value changes (`Reactive._check_watchers`),
and `compact` never does, so every old key stayed alive with its styles and caches: about 1 MB a
minute for a console moved between screens (Textualize/textual#6666, open in 8.2.8). This footer drops
the watchers of keys that are gone after each rebuild.
"""

from __future__ import annotations

from textual.dom import DOMNode
from textual.widgets import Footer


def prune_watchers(node: DOMNode) -> int:
    """Forget watchers on `node` whose watching node was removed; the number dropped."""
    watchers: dict[str, list[tuple[DOMNode, object]]] = getattr(node, "__watchers", {})
    dropped = 0
    for entries in watchers.values():
        alive = [(owner, callback) for owner, callback in entries if not owner._closing and not owner._closed]
        dropped += len(entries) - len(alive)
        entries[:] = alive
    return dropped


class KeyFooter(Footer):
    async def recompose(self) -> None:
        await super().recompose()
        prune_watchers(self)
