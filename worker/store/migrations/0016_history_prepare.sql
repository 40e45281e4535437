-- Partitioned history, step 1 of 3 (issue 21; worker/history/): what makes the switch cheap on a populated database.
--
-- `events` will be partitioned by the day its RUN's history began (`runs.history_at`, not the event's own time):
-- every event of a run lives in one partition, so a run's log is never split by retention, and dropping a day's
-- partition removes whole runs only (worker/history/retention.py moves the few runs of that day that are still
-- alive into today's partition first). `spans` and `step_logs` are telemetry with a plain time retention: they
-- are partitioned by their own time (created_at, ts).
--
-- Today's tables become the first partition of each ("legacy"), attached without a scan because a CHECK
-- constraint, validated ONLINE in 0017 (SHARE UPDATE EXCLUSIVE: reads and writes go on), already proves their rows
-- fit that partition's bounds. Everything here is catalog-only: adding a column with a constant default rewrites
-- nothing, a NOT VALID constraint checks nothing. Existing runs and events get history_at = -infinity (they live in
-- the legacy partition); a new run takes now().
ALTER TABLE runs ADD COLUMN history_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE runs ALTER COLUMN history_at SET DEFAULT now();
ALTER TABLE events ADD COLUMN history_at timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE events ADD CONSTRAINT events_legacy_history CHECK (history_at = '-infinity') NOT VALID;

-- Where the legacy spans and step logs end: the day after tomorrow (UTC), so that rows written between this
-- migration and 0018 (which follow in the same `agentrt migrate`) still fit. The daily partitions start there.
CREATE TABLE history_partitioning (
    legacy_until timestamptz NOT NULL
);
DO $$
DECLARE
    bound timestamptz := date_trunc('day', now(), 'UTC') + interval '2 days';
BEGIN
    INSERT INTO history_partitioning (legacy_until) VALUES (bound);
    EXECUTE format('ALTER TABLE spans ADD CONSTRAINT spans_legacy_bound CHECK (created_at < %L) NOT VALID', bound);
    EXECUTE format('ALTER TABLE step_logs ADD CONSTRAINT step_logs_legacy_bound CHECK (ts < %L) NOT VALID', bound);
END $$;
