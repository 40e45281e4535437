"""The base of RuntimeClient: connections, identity and authorization, and the helpers every part uses.

Also the reads that belong to no one part: run id prefixes, workflow registration without a worker,
connection health and the live events stream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, Self

import asyncpg
import redis.asyncio as aioredis

from worker.bus.codec import decode_event
from worker.bus.connect import REDIS_ERRORS, pipe_publish, redis_client, redis_keys
from worker.bus.streams import WORK_MAXLEN
from worker.client.completion import CompletionWatcher
from worker.config import Settings
from worker.definitions.model import Definition
from worker.errors import NotFound, StoreError, WorkerError
from worker.identity import Identity
from worker.identity import current as current_person
from worker.oversight import audit
from worker.oversight.policy import Action, Authorizer
from worker.secrets.transit import CipherError, build_cipher, is_sealed, open_fields
from worker.store.concurrency import Admitted
from worker.store.definitions import active_version
from worker.store.pool import create_pool


def check_idempotency_key(key: str | None) -> None:
    """An Idempotency-Key is 1-255 printable characters (runs and events alike)."""
    if key is not None and (not key or len(key) > 255 or not key.isprintable()):
        raise WorkerError("an idempotency key is 1-255 printable characters")


class ClientBase:
    """The attributes of a client and the helpers its parts share (see `worker.client`)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, *,
                 identity: Identity | None = None, reader: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self.pool = pool
        """The primary: every write, every decision, and every read that must see a write just made."""
        self.reader: asyncpg.Pool = reader or pool
        """Where read-only listings go: the read replica (AGENTRT_DATABASE_READ_URL), else the primary
        (worker/client/replica.py)."""
        self.redis = redis
        self.identity = identity or current_person()
        self.authorizer = Authorizer.from_path(settings.policy_file)
        self.cipher = build_cipher(settings)  # opens encrypted payloads for display (and seals new inputs)
        self.keys = redis_keys(settings)
        self._definitions: dict[str, Definition] = {}
        self.completions = CompletionWatcher(redis, self.keys)
        """Pushed ends of runs, for `wait_for_run` (one pub/sub connection per client)."""

    @classmethod
    async def connect(cls, settings: Settings, *, identity: Identity | None = None) -> Self:
        authorizer = Authorizer.from_path(settings.policy_file)  # a broken policy file fails before connecting
        pool = await create_pool(settings.database_url, min_size=1, max_size=4, pooler=settings.database_pooler)
        redis = redis_client(settings, socket_timeout=5, socket_connect_timeout=3)
        reader = None
        if settings.database_read_url:
            try:
                reader = await create_pool(settings.database_read_url, min_size=1, max_size=4,
                                           pooler=settings.database_pooler)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, StoreError):
                    raise StoreError(f"the read replica (AGENTRT_DATABASE_READ_URL): {exc}") from exc
                raise
        client = cls(settings, pool, redis, identity=identity, reader=reader)
        client.authorizer = authorizer
        return client

    # -- authorization: every action goes through here, for the CLI and the console alike ------
    def _actor(self, by: str | None) -> Identity:
        """The acting identity; `by` (for programmatic callers and tests) names a user without groups."""
        return self.identity if by is None else Identity(user=by)

    async def _authorize(self, who: Identity, action: Action, workflow: str, *, run_id: str | None = None,
                         task_id: str | None = None, audit_denial: bool = True) -> None:
        if self.authorizer.allowed(who, action, workflow):
            return
        if audit_denial:
            await audit.append(self.pool, who, action, outcome="denied", run_id=run_id, task_id=task_id,
                               workflow=workflow, reason="not allowed by the policy file")
        self.authorizer.check(who, action, workflow)  # logs and raises PermissionDenied

    async def close(self) -> None:
        await self.completions.close()
        if self.reader is not self.pool:
            await self.reader.close()
        await self.pool.close()
        await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- nudges (best effort: Postgres already has the truth) --------------------------------
    async def _nudge(self, run_id: str, *, signal: bool = False) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.keys.work, {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                if signal:
                    pipe_publish(pipe, self.keys.signals, run_id)
                await pipe.execute()
        except REDIS_ERRORS:
            pass  # the reconciler re-derives the work from Postgres

    async def _nudge_admitted(self, admitted: list[Admitted]) -> None:
        """Tell the workers what admissions did: startable runs on their priority's stream, cancels as signals."""
        wake = [w for a in admitted for w in a.wake]
        signal = [r for a in admitted for r in a.signal]
        if not wake and not signal:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for run_id, priority in wake:
                    pipe.xadd(self.keys.work_lane(priority), {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                for run_id in signal:
                    pipe.xadd(self.keys.work, {"run": run_id}, maxlen=WORK_MAXLEN, approximate=True)
                    pipe_publish(pipe, self.keys.signals, run_id)
                await pipe.execute()
        except REDIS_ERRORS:
            pass  # the reconciler re-derives the work from Postgres

    # -- run ids, local registration, payloads for display --------------------------------
    async def resolve_run_id(self, run_id: str) -> str:
        """Full run id from a full id or a unique prefix (as shown in listings)."""
        try:
            return str(uuid.UUID(run_id))
        except ValueError:
            pass
        from worker.search.filters import id_range

        bounds = id_range(run_id)
        if bounds is None:
            raise NotFound(f"no run {run_id!r}")
        # a range of the primary key (an index range scan at any size), not LIKE over every id as text
        rows = await self.pool.fetch(
            "SELECT run_id::text FROM runs WHERE run_id BETWEEN $1 AND $2 ORDER BY run_id LIMIT 2", *bounds)
        if not rows:
            raise NotFound(f"no run {run_id!r}")
        if len(rows) > 1:
            raise NotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")
        return str(rows[0]["run_id"])

    async def read_run_from(self, sql: str, run_id: str) -> tuple[asyncpg.Pool, asyncpg.Record | None]:
        """`sql` (`$1`: the run id) on the reader, or on the primary when the reader does not have the run yet (a
        replica behind a run just started). Returns the pool that had it: the rest of the read uses the same one,
        so a run's row and its events never come from two points in time."""
        row = await self.reader.fetchrow(sql, run_id)
        if row is None and self.reader is not self.pool:
            return self.pool, await self.pool.fetchrow(sql, run_id)
        return self.reader, row

    async def register_local(self, name: str) -> bool:
        """Load workflow `name` from the local workflows directory into Postgres (no worker needed)."""
        from worker.boundary import load_checks
        from worker.engine.definitions_sync import DefinitionsSync  # local: only for this fallback

        root = self.settings.workflows_dir.resolve()
        if not root.is_dir():
            return False
        sync = DefinitionsSync(self.pool, root, None, checks=load_checks(self.settings))
        changes = await sync.initial_scan()
        return any(c.name == name and c.kind != "invalid" for c in changes)

    def _encrypts(self, defn: Definition) -> bool:
        return self.settings.encrypt_payloads or defn.spec.encrypt_payloads

    async def _open_for_display(self, holders: list[dict[str, Any]]) -> None:
        """Decrypt sealed payloads for display; without Vault access, say so instead of showing ciphertext."""
        try:
            await open_fields(self.cipher, holders)
        except CipherError as exc:
            for h in holders:
                for field in ("inputs", "output"):
                    if is_sealed(h.get(field)):
                        h[field] = f"<encrypted with Vault transit: {exc}>"

    async def _active_definition(self, workflow: str) -> tuple[str, Definition]:
        """The version new runs of `workflow` use (registering the local file if no worker has yet)."""
        found = await active_version(self.pool, workflow)
        if found is None and await self.register_local(workflow):
            found = await active_version(self.pool, workflow)
        if found is None:
            raise NotFound(f"no active workflow named {workflow!r} (see `agentrt workflows`)")
        def_hash, spec = found
        defn = self._definitions.get(def_hash)
        if defn is None:
            defn = self._definitions[def_hash] = Definition.from_json(spec)
        return def_hash, defn

    # -- health (the console's connection banner) -------------------------------------------
    async def health(self) -> dict[str, str | None]:
        """{"postgres": None or the error, "redis": None or the error}: for connection banners."""
        result: dict[str, str | None] = {"postgres": None, "redis": None}
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 3)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result["postgres"] = f"{type(exc).__name__}: {exc}"
        try:
            await asyncio.wait_for(self.redis.ping(), 3)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result["redis"] = f"{type(exc).__name__}: {exc}"
        return result

    # -- live events -------------------------------------------------------------------------
    async def watch_events(self, last_id: str = "$", block_ms: int = 1000) -> AsyncIterator[Any]:
        """Live events after `last_id`, forever; yields nothing (but keeps trying) while Redis is down."""
        while True:
            try:
                reply = await self.redis.xread({self.keys.events: last_id}, count=500, block=block_ms)
            except REDIS_ERRORS:
                await asyncio.sleep(1.0)
                continue
            streams: list[Any] = list(reply or [])  # redis-py types replies loosely
            for _stream, entries in streams:
                for entry_id, fields in entries:
                    event = decode_event(entry_id, fields)
                    last_id = event.stream_id
                    yield event
