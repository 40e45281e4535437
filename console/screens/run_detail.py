"""Run detail: the step tree (attempts, foreach items, agent turns, child runs) with an inspector, a waterfall
of attempts, and the event log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from console.formatting import (
    compact_json,
    format_age,
    format_clock_ms,
    format_duration,
    item_suffix,
    run_elapsed,
    short_id,
    status_glyph,
    status_label,
    status_style,
    trigger_label,
)
from console.messages import RunChanged
from console.run_tree import AgentCall, ChildRun, agent_calls, call_label, child_label, child_runs
from console.screens.base import ConsoleScreen, guarded
from console.screens.confirm import ConfirmDialog
from console.screens.run_rows import run_label, run_state
from console.widgets.inspector import (
    attempt_seconds,
    inspect_call,
    inspect_child,
    inspect_run,
    inspect_step,
    logs_text,
)
from console.widgets.live_text import LiveView, live_target
from console.widgets.nav_table import NavTable, NavTree
from console.widgets.span_waterfall import SpanWaterfall, span_detail
from console.widgets.waterfall import Span, Waterfall
from worker.errors import NotFound, WorkerError
from worker.models import RunDetail, SpanView, StepLogLine, StepView

# Tree node data: ("run",) | ("step", step_id, item) | ("attempt", step_id, item, attempt)
#   | ("turn", step_id, item, call_index) (an agent's LLM turn or tool call) | ("child", run_id)
NodeKey = tuple[object, ...]


class RunDetailScreen(ConsoleScreen):
    """Pushed over the runs screen (or any other) by `enter` or the command palette; `esc` goes back."""

    MODE = "runs"
    CSS_PATH = "run_detail.tcss"
    AUTO_FOCUS = "#step-tree"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("s", "tab('steps')", "Steps"),
        Binding("w", "tab('waterfall')", "Waterfall"),
        Binding("e", "tab('events')", "Events"),
        *guarded("c", "cancel", "Cancel run"),
        *guarded("R", "replay", "Replay"),
        *guarded("E", "send_event", "Send event", show=False),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.detail: RunDetail | None = None
        self._tree_nodes: dict[NodeKey, TreeNode[NodeKey]] = {}
        self._selected: NodeKey = ("run",)
        self._calls: dict[NodeKey, tuple[StepView, AgentCall]] = {}
        self._children: dict[NodeKey, ChildRun] = {}
        self.spans: list[SpanView] = []
        self._logs: dict[str, list[StepLogLine]] = {}
        """Log lines by step id, loaded when a step is selected; dropped on every reload."""

    def nav_mode(self) -> str:
        return self.app.current_mode  # opened from approvals or events: that tab stays lit

    def compose_body(self) -> Iterable[Widget]:
        yield Static(f"Loading run {self.run_id}…", id="detail-header")
        with TabbedContent(initial="steps", id="detail-tabs"):
            with TabPane("Steps", id="steps"), Horizontal(id="steps-split"):
                yield NavTree("run", id="step-tree")
                with VerticalScroll(id="inspector"):
                    yield LiveView(id="inspector-live")
                    yield Static(id="inspector-body")
            with TabPane("Waterfall", id="waterfall"):
                yield SpanWaterfall(id="span-chart")
                yield Static(id="span-detail")
                with VerticalScroll(id="waterfall-scroll"):
                    yield Waterfall(id="waterfall-chart")
            with TabPane("Events", id="events"):
                yield NavTable(id="events-table")

    # -- data ------------------------------------------------------------------------------
    async def reload(self) -> None:
        try:
            detail = await self.console_app.client.get_run(self.run_id)
        except NotFound as exc:
            self.notify(str(exc), title="Run not found", severity="error")
            if self.is_current and len(self.app.screen_stack) > 1:
                self.app.pop_screen()
            return
        try:
            spans = await self.console_app.client.spans(detail.summary.run_id)
        except WorkerError:  # e.g. no span store: the attempt-based waterfall stands in
            spans = []
        self.detail = detail
        self.run_id = detail.summary.run_id
        self.spans = spans
        self._logs.clear()
        self._render_header(detail)
        self._render_tree(detail)
        self._render_waterfall(detail)
        self._render_events(detail)
        self._render_inspector()

    def on_screen_suspend(self) -> None:
        self.query_one(LiveView).show(None)  # nobody looks: stop following (resuming renders the inspector again)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._render_inspector()

    def on_run_changed(self, message: RunChanged) -> None:
        if message.run_id == self.run_id:
            self.request_reload()

    # -- rendering -------------------------------------------------------------------------
    def _render_header(self, d: RunDetail) -> None:
        s, now = d.summary, self.console_app.now()
        line1 = Content.assemble(run_label(s, s.run_id in self.console_app.uncertain_runs), "  ",
                                 (s.workflow, "bold"), "  ", (s.run_id, "dim"))
        state = run_state(s, now)
        bits = [state] if state else []
        bits += [f"trigger {trigger_label(s.trigger)}", f"version {short_id(s.def_hash)}",
                 f"started {format_age(s.created_at, now)}",
                 format_duration(run_elapsed(s.created_at, s.finished_at, now))]
        if s.current_step:
            bits.append(f"step {s.current_step}")
        line2 = Content(" · ".join(bits))
        if s.error:
            line2 = Content.assemble(line2, "  ", (s.error, "red"))
        self.query_one("#detail-header", Static).update(Content("\n").join([line1, line2]))

    def _steps_by_id(self, d: RunDetail) -> dict[str, list[StepView]]:
        groups: dict[str, list[StepView]] = {}
        for view in d.steps:
            groups.setdefault(view.step_id, []).append(view)
        return groups

    def _step_label(self, view: StepView, *, foreach: int = 0) -> Text:
        label = Text()
        label.append(status_glyph(view.status) + " ", style=status_style(view.status))
        label.append(f"{view.step_id}{item_suffix(view.item)}" if view.item is None else f"item {view.item}")
        extra = f" {view.kind}" if view.item is None else ""
        if foreach:
            extra += f" x{foreach}"
        if len(view.attempts) > 1:
            extra += f" {len(view.attempts)} tries"
        label.append(extra, style="dim")
        return label

    def _attempt_label(self, view: StepView, n: int) -> Text:
        a = view.attempts[n]
        label = Text()
        label.append(f"#{a.attempt} ", style="bold")
        label.append(f"{status_glyph(a.status)} {a.status}", style=status_style(a.status))
        label.append(f" {format_duration(attempt_seconds(a, self.console_app.now()))}", style="dim")
        return label

    def _add_nested(self, node: TreeNode[NodeKey], view: StepView, calls: list[AgentCall],
                    children: list[ChildRun]) -> None:
        """A step's (or item's) attempts, then its agent turns (tool calls beneath them), then its child runs."""
        for i, a in enumerate(view.attempts):
            key: NodeKey = ("attempt", view.step_id, view.item, a.attempt)
            self._tree_nodes[key] = node.add_leaf(self._attempt_label(view, i), data=key)
        turn = node
        for call in calls:
            key = ("turn", view.step_id, view.item, call.index)
            self._calls[key] = (view, call)
            if call.kind == "llm":
                turn = node.add(call_label(call), data=key, expand=True, allow_expand=bool(call.tool_calls))
                self._tree_nodes[key] = turn
            else:
                self._tree_nodes[key] = turn.add_leaf(call_label(call), data=key)
        for child in children:
            key = ("child", child.run_id)
            self._children[key] = child
            self._tree_nodes[key] = node.add_leaf(child_label(child), data=key)

    def _render_tree(self, d: RunDetail) -> None:
        tree = self.query_one("#step-tree", NavTree)
        expanded = {k: n.is_expanded for k, n in self._tree_nodes.items() if n.allow_expand and k != ("run",)}
        tree.clear()
        root = tree.root
        root.set_label(Text.assemble((status_glyph(d.summary.status) + " ", status_style(d.summary.status)),
                                     f"run {short_id(d.summary.run_id)}"))
        root.data = ("run",)
        self._tree_nodes = {("run",): root}
        self._calls, self._children = {}, {}
        kids: dict[tuple[str | None, int | None], list[ChildRun]] = {}
        for child in child_runs(d):
            kids.setdefault((child.step_id, child.item), []).append(child)
        for step_id, views in self._steps_by_id(d).items():
            head = next((v for v in views if v.item is None), views[0])
            items = [v for v in views if v.item is not None]
            key: NodeKey = ("step", step_id, None)
            label = self._step_label(head, foreach=len(items))
            calls, children = ([], []) if items else (agent_calls(head), kids.pop((step_id, None), []))
            if not items and not head.attempts and not calls and not children:
                self._tree_nodes[key] = root.add_leaf(label, data=key)
                continue
            node = root.add(label, data=key, expand=True)
            self._tree_nodes[key] = node
            for item in items:
                ikey: NodeKey = ("step", step_id, item.item)
                inode = node.add(self._step_label(item), data=ikey,
                                 expand=len(item.attempts) > 1 or item.status != "completed")
                self._tree_nodes[ikey] = inode
                self._add_nested(inode, item, agent_calls(item), kids.pop((step_id, item.item), []))
            if not items:
                self._add_nested(node, head, calls, children)
        for child in (c for rest in kids.values() for c in rest):  # children no step claims
            ckey: NodeKey = ("child", child.run_id)
            self._children[ckey] = child
            self._tree_nodes[ckey] = root.add_leaf(child_label(child), data=ckey)
        for k, was_open in expanded.items():  # what the user opened or closed stays so across reloads
            again = self._tree_nodes.get(k)
            if again is not None and again.allow_expand:
                (again.expand if was_open else again.collapse)()
        root.expand()
        target = self._tree_nodes.get(self._selected, root)
        parent: TreeNode[NodeKey] | None = target.parent
        while parent is not None:  # the selected node stays in view, even beneath a collapsed item
            parent.expand()
            parent = parent.parent
        tree.call_after_refresh(tree.move_cursor, target, animate=False)

    def _render_waterfall(self, d: RunDetail) -> None:
        """The stored spans when there are any; else one bar per attempt, from the event log."""
        chart = self.query_one("#span-chart", SpanWaterfall)
        has_spans = bool(self.spans)
        chart.display = has_spans
        self.query_one("#span-detail", Static).display = has_spans
        self.query_one("#waterfall-scroll").display = not has_spans
        if has_spans:
            chart.set_spans(self.spans)
            return
        spans: list[Span] = []
        groups = self._steps_by_id(d)
        for views in groups.values():
            items = [v for v in views if v.item is not None]
            for view in items or views:
                for a in view.attempts:
                    spans.append(Span(f"{view.step_id}{item_suffix(view.item)} #{a.attempt}", a.started_at,
                                      a.finished_at, a.status))
        self.query_one("#waterfall-chart", Waterfall).set_spans(spans, self.console_app.now())

    def _render_events(self, d: RunDetail) -> None:
        table = self.query_one("#events-table", NavTable)
        keep = table.selected_key()
        if not table.columns:
            table.add_column("SEQ", width=4, key="seq")
            table.add_column("TIME", width=12, key="time")
            table.add_column("TYPE", width=14, key="type")
            table.add_column("STEP", width=14, key="step")
            table.add_column("ATT", width=3, key="attempt")
            table.add_column("DATA", key="data")
        table.clear()
        width = max(20, self.size.width - 62)
        for e in d.events:
            style = "red" if e.type.endswith("failed") else ("green" if e.type.endswith("completed") else "")
            table.add_row(str(e.seq), format_clock_ms(e.ts), Text(e.type, style=style),
                          f"{e.step_id or ''}{item_suffix(e.item)}", "" if e.attempt is None else str(e.attempt),
                          compact_json(e.data, width), key=str(e.seq))
        table.restore_cursor(keep)

    def _render_inspector(self) -> None:
        body = self.query_one("#inspector-body", Static)
        d, now = self.detail, self.console_app.now()
        if d is None:
            return
        key = self._selected
        self.query_one(LiveView).show(live_target(self.run_id, key, d))  # follows only a running llm/agent step
        if key[0] == "turn" and key in self._calls:
            body.update(inspect_call(*self._calls[key]))
            return
        if key[0] == "child" and key in self._children:
            body.update(inspect_child(self._children[key]))
            return
        if key[0] not in ("step", "attempt"):
            body.update(inspect_run(d, now))
            return
        step_id, item = key[1], key[2]
        views = self._steps_by_id(d).get(str(step_id), [])
        view = next((v for v in views if v.item == item), None)
        if view is None:
            body.update(inspect_run(d, now))
            return
        items = [v for v in views if v.item is not None] if item is None else []
        attempt = key[3] if key[0] == "attempt" and isinstance(key[3], int) else None
        logs = self._logs.get(str(step_id))
        if logs is None:
            self.load_logs(str(step_id))
        section = logs_text(logs, item, attempt) if logs is not None else Text("\nlogs: loading…\n", style="dim")
        body.update(inspect_step(view, items, now, attempt, section))

    @work(group="logs", exclusive=True, exit_on_error=False)
    async def load_logs(self, step_id: str) -> None:
        try:
            lines = await self.console_app.client.step_logs(self.run_id, step_id=step_id)
        except WorkerError as exc:
            self.notify(str(exc), title="Logs", severity="warning")
            lines = []
        except Exception as exc:  # noqa: BLE001 - banner
            self.console_app.report_error(exc)
            return
        self._logs[step_id] = lines
        key = self._selected
        if key[0] in ("step", "attempt") and key[1] == step_id:
            self._render_inspector()

    @on(SpanWaterfall.Highlighted, "#span-chart")
    def _span_highlighted(self, event: SpanWaterfall.Highlighted) -> None:
        self.query_one("#span-detail", Static).update(span_detail(event.row, self.size.width - 2))

    @on(Tree.NodeHighlighted, "#step-tree")
    def _highlighted(self, event: Tree.NodeHighlighted[NodeKey]) -> None:
        if event.node.data is not None:
            self._selected = event.node.data
            self._render_inspector()

    @on(Tree.NodeSelected, "#step-tree")
    def _node_selected(self, event: Tree.NodeSelected[NodeKey]) -> None:
        """`enter` on a child run opens its detail (`esc` comes back)."""
        key = event.node.data
        if key is not None and key[0] == "child":
            self.console_app.open_run(str(key[1]))

    # -- actions ---------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one("#detail-tabs", TabbedContent).active = tab
        chart = "#span-chart" if self.spans else "#waterfall-scroll"
        target = {"steps": "#step-tree", "waterfall": chart, "events": "#events-table"}[tab]
        self.query_one(target).focus()

    def action_replay(self) -> None:
        """Replay the run; from the selected step when the cursor is on a step (or its attempts or turns)."""
        if self.detail is None:
            return
        key = self._selected
        from_step = str(key[1]) if key[0] in ("step", "attempt", "turn") else None
        s = self.detail.summary
        self.replay_run(s.run_id, s.workflow, from_step)

    def action_send_event(self) -> None:
        """`E`: the event this run waits for, in a dialog prefilled from its wait."""
        if self.detail is not None:
            self.send_event_to(self.detail.summary)

    @work(group="action", exclusive=True, exit_on_error=False)
    async def action_cancel(self) -> None:
        if self.detail is None:
            return
        s = self.detail.summary
        if s.status.terminal:
            self.notify(f"Run {short_id(s.run_id)} is already {s.status.value}.", severity="warning")
            return
        ok = await self.app.push_screen_wait(ConfirmDialog(
            "Cancel 1 run?", f"{short_id(s.run_id)}  {s.workflow}  {status_label(s.status)}",
            confirm_label="Yes, cancel it", cancel_label="Keep", danger=True))
        if not ok:
            return
        try:
            await self.console_app.client.cancel(s.run_id)
        except WorkerError as exc:
            self.notify(str(exc), title="Not cancelled", severity="error", timeout=10)
        except Exception as exc:  # noqa: BLE001 - unreachable database: banner
            self.console_app.report_error(exc)
        else:
            self.notify(f"Cancel requested for run {short_id(s.run_id)}.", title="Cancelled")
        self.request_reload()

