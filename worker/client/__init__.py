"""RuntimeClient: the API that the CLI and the console use to read state and send commands.

Reads come from Postgres, live events from the Redis events stream. Commands (start, approve,
reject, resolve, cancel) write to Postgres in one transaction, then nudge the workers via Redis;
if Redis is down the reconciler delivers them anyway.

What lives where (`RuntimeClient` combines the parts; import it, `RUN_ORDERS` and `load_workflow_file`
from here):

- `base`: `ClientBase`: connecting and closing, the acting identity and authorization (`_actor`,
  `_authorize`), nudges, `resolve_run_id`, `register_local`, opening sealed payloads for display,
  the active definition of a workflow, `health`, `watch_events`.
- `starts`: `StartsApi`: start runs, one (`start`: its id and status; `start_run`, `start_run_once`) or
  many (`start_runs`), with a priority and admitted under their workflow's concurrency key.
- `runs`: `RunsApi`: list (`RUN_ORDERS`), count, get (with agent progress and a queued run's place), cancel,
  wait for and replay runs, `matching_runs`.
- `tasks`: `TasksApi`: human tasks: list, get, decide (approve/reject), resolve.
- `observe`: `ObserveApi`: spans, step logs, audit, workflows (list, versions, diff, events), workers.
- `access`: `AccessApi`: the HTTP API's bearer tokens (create, list, revoke, check) and `acting_as`.
- `events`: `EventsApi`: events from the outside world start the runs of the workflows that subscribe.
- `webhooks`: `WebhooksApi`: the workflow behind a webhook path, its HMAC secret (from Vault, with the
  workflow's own policy), starting its runs once per delivery, auditing refused deliveries.
- `limits`: `LimitsApi`: the operator's limits (limits.yaml) and their use across the fleet (`agentrt limits`).
- `schedules`: `SchedulesApi`: the workflows' schedules (next fire, last run), pause and resume (audited).
- `notifications`: `NotificationsApi`: the outbox of webhooks to the operator's notify.yaml targets.
- `pauses`: `PausesApi`: pause and resume a run or a whole workflow (worker/pauses), audited.
- `search`: `SearchApi`: saved views (named run filters, worker/search) for `list_runs(filters=...)`.
- `live`: `LiveApi`: what `llm`/`agent` steps are writing, as it is written: a run's live stream (resumable
  from an entry id) and `LiveText`, the fold of its entries into text per call (worker/streams).
- `replica`: `ReplicaApi`: the optional read replica (AGENTRT_DATABASE_READ_URL) that read-only listings use
  (`ClientBase.reader`), and its lag (`read_replica`).
- `retries`: `RetriesApi`: retry failed runs under their own version or the current one (default: the current
  one when the file changed and can take the run over).
"""

from __future__ import annotations

from pathlib import Path

from worker.client.access import AccessApi
from worker.client.events import EventsApi
from worker.client.limits import LimitsApi
from worker.client.live import LiveApi
from worker.client.notifications import NotificationsApi
from worker.client.observe import ObserveApi
from worker.client.pauses import PausesApi
from worker.client.replica import ReplicaApi
from worker.client.retries import RetriesApi
from worker.client.runs import RUN_ORDERS, RunsApi
from worker.client.schedules import SchedulesApi
from worker.client.search import SearchApi
from worker.client.starts import StartsApi
from worker.client.tasks import TasksApi
from worker.client.webhooks import WebhooksApi
from worker.config import Settings
from worker.definitions.model import Definition

__all__ = ["RUN_ORDERS", "RuntimeClient", "load_workflow_file"]


class RuntimeClient(StartsApi, RetriesApi, RunsApi, TasksApi, ObserveApi, AccessApi, EventsApi, WebhooksApi,
                    SchedulesApi, LimitsApi, NotificationsApi, PausesApi, SearchApi, LiveApi, ReplicaApi):
    """The runtime's API: `await RuntimeClient.connect(settings)`, or `async with` one to close it after."""


def load_workflow_file(path: Path, settings: Settings | None = None) -> Definition:
    """Validate one file (used by `agentrt validate`): raises DefinitionError.

    With `settings`, the deployment's trust checks run too (what the operator allows the file to reach).
    """
    from worker.boundary import load_checks
    from worker.definitions.loader import load_file

    return load_file(path, checks=load_checks(settings) if settings is not None else ())
