-- Schedules (`on: {schedule: {cron | every}}`): one row per workflow whose active version has a schedule,
-- kept in step with the workflow files by every worker's scheduler loop (worker/schedules/store.py).
-- A tick fires in one transaction: the schedule row is locked (FOR UPDATE SKIP LOCKED), the tick's row
-- (UNIQUE per workflow and tick) and its run are inserted, next_fire_at moves on. So however many workers
-- race, a tick starts one run; a worker that dies before the commit leaves nothing, and the next one fires it.
CREATE TABLE schedules (
    workflow       text PRIMARY KEY,
    def_hash       text NOT NULL,                 -- the version its runs start with
    spec           jsonb NOT NULL,                -- the `on.schedule` mapping of that version
    active         boolean NOT NULL DEFAULT true, -- false: the workflow, or its schedule, is gone (row kept:
                                                  -- the paused state survives a file removed and put back)
    next_fire_at   timestamptz,                   -- the next tick not yet fired or skipped
    last_fire_at   timestamptz,                   -- the last tick that fired
    last_run_id    uuid,
    skipped_ticks  bigint NOT NULL DEFAULT 0,     -- due ticks the catch-up policy dropped
    paused         boolean NOT NULL DEFAULT false,
    paused_by      text,
    paused_reason  text,
    paused_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE active AND NOT paused;

CREATE TABLE schedule_ticks (
    workflow   text NOT NULL,
    tick_at    timestamptz NOT NULL,
    run_id     uuid,                              -- NULL: the tick could not start a run (see error)
    def_hash   text NOT NULL,
    fired_by   text NOT NULL,                     -- the worker
    fired_at   timestamptz NOT NULL DEFAULT now(),
    error      text,
    PRIMARY KEY (workflow, tick_at)
);
CREATE INDEX schedule_ticks_fired_idx ON schedule_ticks (fired_at);
