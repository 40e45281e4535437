-- Telemetry (issue 5): the caller's trace context of a run, finished spans for the console's
-- waterfall, and log lines written by steps. Spans and step logs are bounded by retention
-- (AGENTRT_SPAN_RETENTION / AGENTRT_STEP_LOG_RETENTION) and per-run caps, pruned by the worker.

ALTER TABLE runs ADD COLUMN traceparent text;

CREATE TABLE spans (
    run_id      uuid NOT NULL,
    span_id     text NOT NULL,             -- 16 hex digits
    trace_id    text NOT NULL,             -- 32 hex digits
    parent_id   text,
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'internal',
    start_ts    timestamptz NOT NULL,
    end_ts      timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'unset' CHECK (status IN ('unset', 'ok', 'error')),
    status_message text,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    events      jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, span_id)
);
CREATE INDEX spans_created_idx ON spans (created_at);

CREATE TABLE step_logs (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL,
    step_id     text NOT NULL,
    item        integer,
    attempt     integer,
    ts          timestamptz NOT NULL,
    level       text NOT NULL,
    logger      text,
    message     text NOT NULL,
    trace_id    text,
    span_id     text
);
CREATE INDEX step_logs_run_idx ON step_logs (run_id, id);
CREATE INDEX step_logs_ts_idx ON step_logs (ts);
