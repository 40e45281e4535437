"""RuntimeClient, part observe: spans, step logs, the audit log, workflows (versions, diffs, hot-reload
history) and workers. Spans, step logs and workers are read from the read replica when one is configured
(worker/client/replica.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.client.base import ClientBase
from worker.definitions.versions import diff_pair, source_diff
from worker.errors import NotFound
from worker.models import RunId, SpanView, StepLogLine, WorkerInfo, WorkflowEvent, WorkflowInfo, WorkflowVersion
from worker.oversight import audit


class ObserveApi(ClientBase):
    """What the console's waterfall, inspector, audit, workflows and workers screens read."""

    # -- spans and step logs ---------------------------------------------------------------
    async def spans(self, run_id: str) -> list[SpanView]:
        """The run's finished spans from the span store, by start time."""
        from worker.store.spans import load_spans

        run_id = await self.resolve_run_id(run_id)
        db, row = await self.read_run_from("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        stored = await load_spans(db, run_id)
        return [SpanView(s["span_id"], s["parent_id"], s["name"], s["kind"],
                         datetime.fromtimestamp(s["start"], tz=UTC), datetime.fromtimestamp(s["end"], tz=UTC),
                         s["status"], s["status_message"], s["attributes"]) for s in stored]

    async def step_logs(self, run_id: str, *, step_id: str | None = None, after_id: int = 0,
                        limit: int = 2000) -> list[StepLogLine]:
        """Log lines a run's steps wrote (e.g. `python` steps using logging), oldest first."""
        from worker.store.spans import load_step_logs

        run_id = await self.resolve_run_id(run_id)
        db, row = await self.read_run_from("SELECT workflow FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        await self._authorize(self.identity, "view", row["workflow"], run_id=run_id, audit_denial=False)
        lines = await load_step_logs(db, run_id, step_id=step_id, after_id=after_id, limit=limit)
        return [StepLogLine(x.id, x.step_id, x.item, x.attempt, x.ts, x.level, x.message) for x in lines]

    # -- audit -------------------------------------------------------------------------------
    async def audit_records(self, *, run_id: str | None = None, limit: int = 1000) -> list[audit.AuditRecord]:
        if run_id is not None:
            run_id = await self.resolve_run_id(run_id)
        return await audit.records(self.pool, run_id=run_id, limit=limit)

    async def verify_audit(self) -> audit.Verification:
        return await audit.verify(self.pool)

    # -- workflows and workers ---------------------------------------------------------------
    async def list_workflows(self) -> list[WorkflowInfo]:
        rows = await self.pool.fetch(
            """SELECT f.path, f.name, f.def_hash, f.status, f.error, f.error_line, f.error_column, f.updated_at,
                      f.excerpt, (SELECT count(*) FROM definitions d WHERE d.name = f.name) AS versions
               FROM workflow_files f ORDER BY f.name NULLS LAST, f.path""")
        return [WorkflowInfo(r["path"], r["name"], r["def_hash"], r["status"], r["error"], r["error_line"],
                             r["error_column"], r["updated_at"], r["versions"], r["excerpt"]) for r in rows]

    # The version new runs use: the same rule as worker.store.definitions.active_version.
    _ACTIVE_HASH_SQL = """(SELECT f.def_hash FROM workflow_files f WHERE f.name = $1 AND f.status <> 'deleted'
                          ORDER BY f.updated_at DESC LIMIT 1)"""

    async def workflow_versions(self, name: str, *, limit: int = 50) -> list[WorkflowVersion]:
        """The stored versions of workflow `name`, newest first: the active one marked, and how many runs each
        pinned (one pass over the workflow's runs by index, grouped by version)."""
        await self._authorize(self.identity, "view", name, audit_denial=False)
        rows = await self.pool.fetch(
            f"""WITH used AS (SELECT r.def_hash, count(*) AS n FROM runs r WHERE r.workflow = $1 GROUP BY r.def_hash)
                SELECT d.def_hash, d.name, d.created_at, d.source_path, coalesce(u.n, 0) AS runs,
                       coalesce(d.def_hash = {self._ACTIVE_HASH_SQL}, false) AS active
                FROM definitions d LEFT JOIN used u ON u.def_hash = d.def_hash
                WHERE d.name = $1 ORDER BY d.created_at DESC, d.def_hash LIMIT $2""", name, limit)
        if not rows:
            raise NotFound(f"no workflow named {name!r} (see `agentrt workflows`)")
        return [WorkflowVersion(r["def_hash"], r["name"], r["created_at"], r["source_path"], r["active"], r["runs"])
                for r in rows]

    async def workflow_diff(self, name: str, old_hash: str | None = None, new_hash: str | None = None, *,
                            context: int = 3) -> str:
        """A unified diff of the YAML sources of two versions of `name` ("" when identical).

        Hashes may be unique prefixes. By default: the version before the active one, against the active one.
        """
        await self._authorize(self.identity, "view", name, audit_denial=False)
        rows = await self.pool.fetch(
            f"""SELECT d.def_hash, d.def_hash = {self._ACTIVE_HASH_SQL} AS active FROM definitions d
                WHERE d.name = $1 ORDER BY d.created_at DESC, d.def_hash""", name)
        hashes = [r["def_hash"] for r in rows]
        active = next((r["def_hash"] for r in rows if r["active"]), None)
        old, new = diff_pair(name, hashes, active, old_hash, new_hash)
        sources = {r["def_hash"]: r["source"] for r in await self.pool.fetch(
            "SELECT def_hash, source FROM definitions WHERE def_hash = ANY($1::text[])", [old, new])}
        return source_diff(sources[old], sources[new], f"{name}@{old[:12]}", f"{name}@{new[:12]}", context=context)

    async def workflow_events(self, limit: int = 200) -> list[WorkflowEvent]:
        """The hot-reload history, newest first: files loaded, found invalid (with the error) or deleted."""
        rows = await self.pool.fetch(
            """SELECT id, at, kind, path, name, def_hash, error FROM workflow_events ORDER BY id DESC LIMIT $1""",
            limit)
        return [WorkflowEvent(r["id"], r["at"], r["kind"], r["path"], r["name"], r["def_hash"], r["error"])
                for r in rows]

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers, newest heartbeat first (from the read replica when one is configured)."""
        rows = await self.reader.fetch(
            """SELECT w.worker_id, w.hostname, w.pid, w.started_at, w.heartbeat_at, w.concurrency, w.stopped_at,
                      w.heartbeat_at + make_interval(secs => w.lease_ttl) > now() AND w.stopped_at IS NULL AS alive,
                      coalesce((SELECT array_agg(r.run_id::text) FROM runs r WHERE r.lease_owner = w.worker_id
                                AND r.lease_expires > now()), '{}') AS held
               FROM workers w ORDER BY w.heartbeat_at DESC LIMIT 200""")
        return [WorkerInfo(r["worker_id"], r["hostname"], r["pid"], r["started_at"], r["heartbeat_at"], r["alive"],
                           tuple(RunId(x) for x in r["held"]), r["concurrency"]) for r in rows]
