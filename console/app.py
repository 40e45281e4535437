"""The console app: modes (screens), the live feed worker, connection state and shared actions."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive

from console.backend import ConsoleClient
from console.command_log import CommandLog, LoggedClient
from console.commands import ConsoleCommands
from console.feed import messages_for
from console.formatting import describe_error, is_connection_error
from console.messages import FeedAppended, RefreshAll, RunChanged, TasksChanged, WorkersChanged, WorkflowsChanged
from console.screens.approvals import ApprovalsScreen
from console.screens.base import ConsoleScreen
from console.screens.command_log import CommandLogScreen
from console.screens.events import EventsScreen
from console.screens.help import HelpScreen, binding_rows
from console.screens.limits import LimitsScreen
from console.screens.run_detail import RunDetailScreen
from console.screens.runs import RunsScreen
from console.screens.schedules import SchedulesScreen
from console.screens.workers import WorkersScreen
from console.screens.workflows import WorkflowsScreen
from console.throttle import Coalescer
from worker.models import HumanTask, LiveEvent, RunStatus, RunSummary

logger = logging.getLogger(__name__)

RECENT_EVENTS = 500
FEED_MAX_BACKOFF = 30.0
HEALTH_RECHECK = 2.0
"""Seconds between health checks while Postgres or Redis is down."""


GC_THRESHOLDS = (10_000, 20, 20)
"""The console process's garbage-collector thresholds (Python's are 700, 10, 10). A live console allocates
steadily (Textual leaves each redrawn line's caches in a reference cycle). With the defaults a full
collection, 150-250 ms over the UI's objects on a busy 2-core machine, ran every two seconds or so and was
the largest cause of late updates (bench/console_bench.py). With these, young collections run a few times a
second and stay short, and a full one runs every few minutes."""


def tune_gc() -> None:
    """Set GC_THRESHOLDS: done by `agentrt console` before the app starts (and by the benchmarks)."""
    gc.set_threshold(*GC_THRESHOLDS)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AgentConsole(App[None]):
    """`AgentConsole(client)`: everything it shows comes through `client` (a RuntimeClient or a fake)."""

    TITLE = "AgentRuntime console"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, Callable[[], ConsoleScreen]]] = {  # type: ignore[assignment]
        "runs": RunsScreen,
        "approvals": ApprovalsScreen,
        "workflows": WorkflowsScreen,
        "workers": WorkersScreen,
        "events": EventsScreen,
        "schedules": SchedulesScreen,
        "limits": LimitsScreen,
    }
    DEFAULT_MODE = "runs"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('runs')", "Runs", show=False),
        Binding("2", "switch_mode('approvals')", "Approvals", show=False),
        Binding("3", "switch_mode('workflows')", "Workflows", show=False),
        Binding("4", "switch_mode('workers')", "Workers", show=False),
        Binding("5", "switch_mode('events')", "Events", show=False),
        Binding("6", "switch_mode('schedules')", "Schedules", show=False),
        Binding("7", "switch_mode('limits')", "Limits", show=False),
        Binding("question_mark", "help", "Keys"),
        Binding("L", "command_log", "Command log (this session)", show=False),
        # declaring the palette action replaces Textual's own ctrl+p binding: keep it exactly as it was, and add
        # `:` (not a priority binding, so typing a colon in an input still types a colon)
        Binding(App.COMMAND_PALETTE_BINDING, "command_palette", "palette", show=False, priority=True,
                tooltip="Open the command palette"),
        Binding("colon", "command_palette", "palette", show=False),
        Binding("q", "quit", "Quit"),
    ]

    nav_counts: reactive[dict[str, int]] = reactive(dict)
    """Badges for the nav bar: active runs, pending approvals, invalid workflow files."""
    offline_reason: reactive[str | None] = reactive(None)
    """Why the runtime is unreachable, or None when it is reachable."""
    health: reactive[dict[str, str | None]] = reactive(dict)
    """The last `client.health()`: {"postgres": None or the error, "redis": None or the error}."""

    def __init__(self, client: ConsoleClient, *, readonly: bool = False,
                 now: Callable[[], datetime] = _utcnow, refresh_interval: float = 5.0) -> None:
        super().__init__()
        self.command_log = CommandLog(now)
        """What this session did to the runtime, and how it went (`L`)."""
        self.client: ConsoleClient = LoggedClient(client, self.command_log)
        """`client`, recording each action in the command log."""
        self.readonly = readonly
        self.now = now
        self.refresh_interval = refresh_interval
        self.recent_events: deque[LiveEvent] = deque(maxlen=RECENT_EVENTS)
        self.events_seen = 0
        self.last_runs: list[RunSummary] = []
        """The newest runs, as the runs screen last loaded them (for the command palette)."""
        self._subscribers: set[ConsoleScreen] = set()
        self._last_stream_id = "$"
        self._counts = Coalescer(self, self._load_counts, group="counts", pause=1.0)
        self._pending_tasks: set[str] | None = None
        """The pending human tasks at the last count (None before the first): new ones ring the bell."""
        self.uncertain_runs: frozenset[str] = frozenset()
        """Runs waiting on a person to settle an uncertain effect (the runs list says so, not just `human`)."""

    # -- lifecycle -------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.readonly:
            self.sub_title = "read-only"
        self.follow_events()
        self.set_interval(self.refresh_interval, self._tick, name="safety-refresh")
        self._counts.request()

    def _tick(self) -> None:
        """The slow safety net: the feed is best effort (Redis may drop events), Postgres is truth."""
        self.post_message(RefreshAll())
        self.check_health()  # the feed hides a Redis outage (it just waits): ask

    # -- health ----------------------------------------------------------------------------
    @property
    def unhealthy(self) -> bool:
        return any(self.health.values())

    @work(exclusive=True, group="health", exit_on_error=False)
    async def check_health(self) -> None:
        """Which of Postgres/Redis is down (for the banner); re-checked every few seconds until both are up."""
        try:
            health = await self.client.health()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - health() should not raise; treat as "Postgres down"
            health = {"postgres": describe_error(exc, 120), "redis": None}
        self.health = dict(health)
        if self.unhealthy:
            self.set_timer(HEALTH_RECHECK, self.check_health, name="health-recheck")
        elif self.offline_reason is not None:
            self.report_ok()

    # -- live feed -------------------------------------------------------------------------
    @work(exclusive=True, group="feed", exit_on_error=False)
    async def follow_events(self) -> None:
        delay = 1.0
        while True:
            try:
                async for event in self.client.watch_events(last_id=self._last_stream_id):
                    self._live_event(event)
                    delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the feed must outlive any outage
                self.report_error(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, FEED_MAX_BACKOFF)
            self.post_message(RefreshAll())  # events may have been missed meanwhile

    def _live_event(self, event: LiveEvent) -> None:
        if event.stream_id:
            self._last_stream_id = event.stream_id
        if event.kind != "span":  # telemetry: the run detail's waterfall shows attempts already
            self.recent_events.append(event)
            self.events_seen += 1
        for message in messages_for(event):
            self.post_message(message)
        self.post_message(FeedAppended())

    # -- fan-out to screens (each gets its own copy: messages are collapsed per queue) ------
    def subscribe(self, screen: ConsoleScreen) -> None:
        self._subscribers.add(screen)

    def unsubscribe(self, screen: ConsoleScreen) -> None:
        self._subscribers.discard(screen)

    def _forward(self, make: Callable[[], Message]) -> None:
        for screen in list(self._subscribers):
            screen.post_message(make())

    def on_run_changed(self, m: RunChanged) -> None:
        self._forward(lambda: RunChanged(m.run_id, m.event_type, m.status, m.current_step, m.waiting_on))
        self._counts.request()

    def on_tasks_changed(self, _m: TasksChanged) -> None:
        self._forward(TasksChanged)
        self._counts.request()

    def on_workflows_changed(self, _m: WorkflowsChanged) -> None:
        self._forward(WorkflowsChanged)
        self._counts.request()

    def on_workers_changed(self, _m: WorkersChanged) -> None:
        self._forward(WorkersChanged)

    def on_feed_appended(self, _m: FeedAppended) -> None:
        self._forward(FeedAppended)

    def on_refresh_all(self, _m: RefreshAll) -> None:
        self._forward(RefreshAll)
        self._counts.request()

    async def _load_counts(self) -> None:
        try:
            counts = await self.client.count_runs()
            tasks = await self.client.list_tasks(status="pending")
            workflows = await self.client.list_workflows()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - banner
            self.report_error(exc)
            return
        active = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)  # admitted; queued runs wait for a slot
        self.nav_counts = {
            "active": sum(counts.get(s.value, 0) for s in active),
            "approvals": len(tasks),
            "invalid": sum(1 for w in workflows if w.status == "invalid"),
        }
        self._announce(tasks)
        uncertain = frozenset(t.run_id for t in tasks if t.kind == "uncertain")
        if uncertain != self.uncertain_runs:
            self.uncertain_runs = uncertain
            self._forward(TasksChanged)
        self.report_ok()

    def _announce(self, tasks: list[HumanTask]) -> None:
        """A human task that arrived while the console is open rings the terminal bell and shows a toast (those
        pending when it opened do not: the nav bar counts them)."""
        seen, self._pending_tasks = self._pending_tasks, {t.task_id for t in tasks}
        new = [t for t in tasks if seen is not None and t.task_id not in seen]
        if not new:
            return
        self.bell()
        for t in new[:3]:
            title = "Approval needed" if t.kind == "approval" else "Decision needed (uncertain effect)"
            until = f" · deadline {t.deadline.astimezone():%H:%M}" if t.deadline else ""
            self.notify(f"{t.workflow} · {t.step_id}{until}\n{t.prompt[:160]}\n2: approvals", title=title,
                        timeout=10, markup=False)
        if len(new) > 3:
            self.notify(f"and {len(new) - 3} more waiting: 2 opens the approvals", title="Approvals", timeout=10,
                        markup=False)

    # -- connection state ------------------------------------------------------------------
    def report_error(self, exc: BaseException) -> None:
        """Unreachable runtime: banner and keep retrying. Anything else: a notification."""
        if is_connection_error(exc):
            reason = describe_error(exc, 120)
            if self.offline_reason is None:
                logger.warning("runtime unreachable: %s", reason)
                self.check_health()
            self.offline_reason = reason
            return
        logger.error("console error: %s", describe_error(exc, 500), exc_info=exc)
        self.notify(describe_error(exc, 300), title="Error", severity="error", timeout=10)

    def report_ok(self) -> None:
        if self.health.get("postgres"):
            self.health = {**self.health, "postgres": None}
        if self.offline_reason is not None:
            self.offline_reason = None
            self.notify("Connection restored.", title="Reconnected")
            self.post_message(RefreshAll())

    # -- shared actions --------------------------------------------------------------------
    def open_run(self, run_id: str) -> None:
        top = self.screen
        if isinstance(top, RunDetailScreen) and top.run_id.startswith(run_id):
            return
        self.push_screen(RunDetailScreen(run_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A dialog is answered first: no screen switching, help or log underneath it.
        return not (action in ("switch_mode", "help", "command_log") and self.screen.is_modal)

    def action_command_log(self) -> None:
        self.push_screen(CommandLogScreen())

    def action_help(self) -> None:
        screen = self.screen
        title = type(screen).__name__.removesuffix("Screen")
        notes: tuple[str, ...] = getattr(screen, "HELP_NOTES", ())
        self.push_screen(HelpScreen(title, binding_rows(screen), self.readonly, notes))
