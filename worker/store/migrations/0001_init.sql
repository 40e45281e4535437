-- AgentRuntime schema, version 1. Postgres is the source of truth; Redis only carries work.

CREATE TABLE definitions (
    def_hash    text PRIMARY KEY,
    name        text NOT NULL,
    spec        jsonb NOT NULL,
    source      text NOT NULL,
    source_path text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX definitions_name_idx ON definitions (name, created_at DESC);

-- One row per workflow file, as last seen by a worker (the active version is def_hash).
CREATE TABLE workflow_files (
    path         text PRIMARY KEY,
    name         text,
    def_hash     text REFERENCES definitions (def_hash),
    status       text NOT NULL CHECK (status IN ('active', 'invalid', 'deleted')),
    error        text,
    error_line   integer,
    error_column integer,
    excerpt      text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_files_name_idx ON workflow_files (name);

CREATE TABLE workflow_events (
    id        bigserial PRIMARY KEY,
    path      text NOT NULL,
    name      text,
    kind      text NOT NULL,
    def_hash  text,
    error     text,
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    run_id              uuid PRIMARY KEY,
    workflow            text NOT NULL,
    def_hash            text NOT NULL REFERENCES definitions (def_hash),
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    inputs              jsonb NOT NULL DEFAULT '{}'::jsonb,
    output              jsonb,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    current_step        text,
    waiting_on          text,
    parent_run_id       uuid REFERENCES runs (run_id),
    parent_step         text,
    parent_item         integer,
    requested_by        text,
    -- lease and fencing: only the owner of the current epoch may append events
    lease_owner         text,
    lease_epoch         bigint NOT NULL DEFAULT 0,
    lease_expires       timestamptz,
    -- scheduling: durable timers, (re)delivery and signals from outside (approvals, cancel, children)
    wake_at             timestamptz,
    enqueued_at         timestamptz,
    signal_version      bigint NOT NULL DEFAULT 0,
    seen_signal_version bigint NOT NULL DEFAULT 0,
    cancel_requested    boolean NOT NULL DEFAULT false,
    cancel_reason       text,
    next_seq            integer NOT NULL DEFAULT 1
);
CREATE INDEX runs_created_idx ON runs (created_at DESC);
CREATE INDEX runs_status_created_idx ON runs (status, created_at DESC);
CREATE INDEX runs_workflow_created_idx ON runs (workflow, created_at DESC);
CREATE INDEX runs_active_idx ON runs (wake_at) WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX runs_lease_owner_idx ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_parent_idx ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- The append-only event log: run state is derived from it.
CREATE TABLE events (
    run_id   uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq      integer NOT NULL,
    ts       timestamptz NOT NULL,
    type     text NOT NULL,
    step_id  text,
    item     integer,
    attempt  integer,
    data     jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE human_tasks (
    task_id     uuid PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id     text NOT NULL,
    item        integer,
    kind        text NOT NULL CHECK (kind IN ('approval', 'uncertain')),
    task_key    text,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'approved', 'rejected', 'timed_out', 'resolved', 'cancelled')),
    prompt      text NOT NULL,
    context     jsonb,
    deadline    timestamptz,
    on_timeout  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz,
    decided_by  text,
    reason      text,
    decision    jsonb
);
CREATE INDEX human_tasks_pending_idx ON human_tasks (created_at) WHERE status = 'pending';
CREATE INDEX human_tasks_run_idx ON human_tasks (run_id);

CREATE TABLE workers (
    worker_id    text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    held_runs    integer NOT NULL DEFAULT 0,
    lease_ttl    double precision NOT NULL DEFAULT 15
);

-- Durable sub-steps of a step (agent turns, tool calls): committed one by one, fenced by the lease.
CREATE TABLE step_journal (
    run_id      uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id     text NOT NULL,
    item        integer NOT NULL DEFAULT -1,
    call_index  integer NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_id, item, call_index)
);
