"""Messages the live feed posts to the app, which forwards them to the screens.

They do not bubble: the app posts a fresh copy to each screen, and a screen's copy must not come
back up to the app. `can_replace` collapses bursts (a run that emits fifty step events in a second
costs one reload, not fifty).
"""

from __future__ import annotations

from textual.message import Message


class RunChanged(Message, bubble=False):
    """Something happened to a run (created, step started/finished, parked, finished)."""

    def __init__(self, run_id: str, event_type: str, status: str | None = None,
                 current_step: str | None = None, waiting_on: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.event_type = event_type
        self.status = status
        """The run's status after the event (None when the event did not say)."""
        self.current_step = current_step
        self.waiting_on = waiting_on

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunChanged) and message.run_id == self.run_id


class TasksChanged(Message, bubble=False):
    """The set of pending human tasks may have changed."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TasksChanged)


class WorkflowsChanged(Message, bubble=False):
    """A workflow file was loaded, reloaded, found invalid or deleted."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, WorkflowsChanged)


class WorkersChanged(Message, bubble=False):
    """A worker started or stopped."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, WorkersChanged)


class FeedAppended(Message, bubble=False):
    """New live events are in `AgentConsole.recent_events`."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FeedAppended)


class RefreshAll(Message, bubble=False):
    """Reload everything: the periodic safety net, or the feed reconnected and may have missed events."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RefreshAll)
