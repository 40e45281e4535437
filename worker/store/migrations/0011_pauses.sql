-- Pause and resume (worker/pauses): a paused run starts no further step and, once the step in flight is
-- recorded, is parked with status `paused` (no worker holds it) until it is resumed. A paused workflow
-- pauses every run of it, the running ones and the ones started while it is paused (nothing is dropped:
-- they are created and wait). Both survive restarts: they are rows, and each run records `run.paused` /
-- `run.unpaused` in its event log when its worker takes the pause into account.
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'));

ALTER TABLE runs ADD COLUMN paused_by text;      -- NULL: the run itself is not paused (its workflow may be)
ALTER TABLE runs ADD COLUMN paused_at timestamptz;
ALTER TABLE runs ADD COLUMN pause_reason text;
ALTER TABLE runs ADD COLUMN pause_now boolean NOT NULL DEFAULT false;  -- interrupt the steps in flight

CREATE TABLE workflow_pauses (
    workflow   text PRIMARY KEY,
    paused_by  text NOT NULL,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    reason     text,
    pause_now  boolean NOT NULL DEFAULT false
);

-- a paused run still holds its concurrency key's slot, and is reconciled like a parked run
DROP INDEX IF EXISTS runs_concurrency_active_idx;
CREATE INDEX runs_concurrency_active_idx ON runs (workflow, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'running', 'waiting', 'paused');
DROP INDEX IF EXISTS runs_active_idx;
CREATE INDEX runs_active_idx ON runs (wake_at) WHERE status IN ('pending', 'running', 'waiting', 'paused');
-- the paused runs of a workflow (resume --workflow)
CREATE INDEX runs_paused_idx ON runs (workflow) WHERE status = 'paused';
