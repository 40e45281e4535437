"""RuntimeClient, part notifications: the outbox of webhooks to the operator's notify.yaml targets (worker/notify).

`list_notifications` shows what was sent, what is waiting for its next attempt (and why the last one failed) and
what was given up; a row of a workflow the caller may not view (policy file) is left out; `worker.lost` rows,
about workers rather than one workflow, are shown to everyone. `notify_config` says which notify file this
client sees and whether it is valid (the workers read the same file beside the workflows, or AGENTRT_NOTIFY_FILE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.client.base import ClientBase
from worker.errors import WorkerError
from worker.notify import outbox
from worker.notify.config import OperatorNotify
from worker.notify.payloads import summary_of

STATUSES = ("pending", "delivered", "failed")


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    notification_id: str
    """What the receiver deduplicates on (X-Notification-Id)."""
    target: str
    kind: str
    status: str
    """pending (waiting for its first or next attempt) | delivered | failed (given up)."""
    summary: str
    workflow: str | None
    run_id: str | None
    task_id: str | None
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    """When it is tried next (pending only)."""
    give_up_at: datetime
    finished_at: datetime | None
    claimed_by: str | None
    """The worker delivering it right now, if any."""
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class NotifyConfigInfo:
    path: str | None
    """The notify file in force (None: there is none, nothing is sent)."""
    error: str | None
    """Why the file is invalid (the workers keep its previous good version)."""
    targets: list[str]
    routes: int


def _info(r: Any) -> NotificationInfo:
    body: dict[str, Any] = r["body"] or {}
    return NotificationInfo(
        notification_id=r["notification_id"], target=r["target"], kind=r["kind"], status=r["status"],
        summary=summary_of(r["kind"], body), workflow=r["workflow"], run_id=r["run_id"], task_id=r["task_id"],
        attempts=r["attempts"], created_at=r["created_at"],
        next_attempt_at=r["next_attempt_at"] if r["status"] == "pending" else None, give_up_at=r["give_up_at"],
        finished_at=r["finished_at"], claimed_by=r["claimed_by"] if r["claimed_until"] else None,
        last_status=r["last_status"], last_error=r["last_error"])


class NotificationsApi(ClientBase):
    """`list_notifications`, `notify_config`."""

    async def list_notifications(self, *, status: str | None = None, limit: int = 100) -> list[NotificationInfo]:
        """The newest notifications (of one status: pending, delivered, failed), newest first."""
        if status is not None and status not in STATUSES:
            raise WorkerError(f"unknown notification status {status!r} (one of {', '.join(STATUSES)})")
        found = await outbox.rows(self.pool, status=status, limit=max(1, min(limit, 10_000)))
        return [_info(r) for r in found
                if r["workflow"] is None or r["kind"] == "worker.lost"
                or self.authorizer.allowed(self.identity, "view", r["workflow"])]

    def notify_config(self) -> NotifyConfigInfo:
        """The notify file this client's settings point at, as a worker would load it."""
        config = OperatorNotify(self.settings)
        spec = config.current()
        return NotifyConfigInfo(str(config.path) if config.path else None, str(config.error) if config.error else None,
                                sorted(spec.targets), len(spec.routes))
