-- Concurrency keys and priorities (worker/store/concurrency.py).
--
-- A run of a workflow with `concurrency: {key, limit}` carries its rendered key. At most `limit` runs per
-- (workflow, key) are admitted (status pending, running or waiting); the others wait in status `queued`
-- and are admitted in order (priority, then admit_seq) when a slot frees. Admission and release count the
-- runs themselves under a transaction-scoped advisory lock on (workflow, key): no table of slots can
-- drift from the runs, no session lock is held (safe behind a transaction-mode pooler).
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'pending', 'running', 'waiting', 'completed', 'failed', 'cancelled'));

ALTER TABLE runs ADD COLUMN priority text NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('high', 'normal', 'low'));
ALTER TABLE runs ADD COLUMN concurrency_key text;       -- NULL: the run's workflow has no concurrency key
ALTER TABLE runs ADD COLUMN concurrency_limit integer;  -- the limit of the run's version
ALTER TABLE runs ADD COLUMN admit_seq bigint;           -- creation order among the runs of a key

CREATE SEQUENCE runs_admit_seq;

-- the admitted runs of a key (counted at every admission and release)
CREATE INDEX runs_concurrency_active_idx ON runs (workflow, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('pending', 'running', 'waiting');
-- the queue of a key, in the order its runs are admitted
CREATE INDEX runs_concurrency_queue_idx ON runs (
    workflow, concurrency_key, (CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END), admit_seq)
    WHERE status = 'queued';
