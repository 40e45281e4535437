-- Partitioned history, step 3 of 3: the switch. Catalog-only (renames, new empty parents, attaching the legacy
-- tables as partitions without a scan, thanks to 0017), so its ACCESS EXCLUSIVE locks last milliseconds once
-- granted. Daily partitions are created ahead by agentrt_ensure_partitions (called here, by every worker's
-- upkeep and by `agentrt gc`) and dropped whole by retention (worker/history/).
--
-- No primary key on the parents: a unique index on a partitioned table must contain the partition key. Each
-- partition has its own: events (run_id, seq) is still unique because all of a run's events are in one
-- partition (history_at is the run's); spans (run_id, span_id) is unique per day (a span exported again across
-- midnight could be stored twice: it shows twice in the waterfall, nothing else reads it). The events parent
-- carries no foreign key to runs: every insert already joins the run's row (to find history_at), and retention
-- removes history with its partition or explicitly (worker/history/retention.py).
ALTER TABLE events RENAME TO events_legacy;
ALTER TABLE events_legacy ALTER COLUMN history_at DROP DEFAULT;
CREATE TABLE events (
    run_id     uuid NOT NULL,
    seq        integer NOT NULL,
    ts         timestamptz NOT NULL,
    type       text NOT NULL,
    step_id    text,
    item       integer,
    attempt    integer,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    history_at timestamptz NOT NULL
) PARTITION BY RANGE (history_at);
ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO ('2000-01-01 00:00:00+00');

ALTER TABLE spans RENAME TO spans_legacy;
CREATE TABLE spans (
    run_id         uuid NOT NULL,
    span_id        text NOT NULL,
    trace_id       text NOT NULL,
    parent_id      text,
    name           text NOT NULL,
    kind           text NOT NULL DEFAULT 'internal',
    start_ts       timestamptz NOT NULL,
    end_ts         timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'unset'
                   CONSTRAINT spans_status_check CHECK (status IN ('unset', 'ok', 'error')),
    status_message text,
    attributes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    events         jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

ALTER TABLE step_logs RENAME TO step_logs_legacy;
CREATE TABLE step_logs (
    id       bigint NOT NULL DEFAULT nextval('step_logs_id_seq'),
    run_id   uuid NOT NULL,
    step_id  text NOT NULL,
    item     integer,
    attempt  integer,
    ts       timestamptz NOT NULL,
    level    text NOT NULL,
    logger   text,
    message  text NOT NULL,
    trace_id text,
    span_id  text
) PARTITION BY RANGE (ts);
-- the id sequence outlives the legacy table (dropping it must not drop the sequence)
ALTER SEQUENCE step_logs_id_seq OWNED BY step_logs.id;
-- an index on the parent: the legacy table's identical index is attached (no build), new partitions get one
CREATE INDEX step_logs_run_idx_p ON ONLY step_logs (run_id, id);

DO $$
DECLARE
    bound timestamptz := (SELECT legacy_until FROM history_partitioning);
BEGIN
    EXECUTE format('ALTER TABLE spans ATTACH PARTITION spans_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    EXECUTE format('ALTER TABLE step_logs ATTACH PARTITION step_logs_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                   bound);
END $$;

-- One daily partition of a history table, unless it exists (or the day is inside the legacy partition's range);
-- true when it made one. Created empty, its primary key built, then ATTACHed: a SHARE UPDATE EXCLUSIVE lock on
-- the parent, so inserts and reads go on.
CREATE FUNCTION agentrt_history_partition(parent text, day timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    start  timestamptz := date_trunc('day', day, 'UTC');
    legacy timestamptz := (SELECT legacy_until FROM history_partitioning);
    part   text := parent || '_p' || to_char(date_trunc('day', day, 'UTC') AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('events', 'spans', 'step_logs') THEN
        RAISE EXCEPTION 'not a history table: %', parent;
    END IF;
    IF to_regclass(part) IS NOT NULL OR (parent <> 'events' AND start < legacy) THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', part,
                   CASE parent WHEN 'events' THEN 'run_id, seq' WHEN 'spans' THEN 'run_id, span_id' ELSE 'id' END);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, start, start + interval '1 day');
    RETURN true;
END
$fn$;

-- The daily partitions of events, spans and step_logs from today (UTC) to `ahead_days` days ahead, those missing
-- only; how many it made. One caller at a time. A lock it cannot get within 5 s (a retention detach waiting
-- for old transactions holds the parent's SHARE UPDATE EXCLUSIVE lock) makes it fail rather than stall the
-- worker's upkeep: the partitions are a week ahead, the next pass makes them.
CREATE FUNCTION agentrt_ensure_partitions(ahead_days integer) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    made integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    PERFORM pg_advisory_xact_lock(7412);
    FOR i IN 0..greatest(ahead_days, 0) LOOP
        made := made + (SELECT count(*) FILTER (WHERE agentrt_history_partition(t, now() + make_interval(days => i)))
                        FROM unnest(ARRAY['events', 'spans', 'step_logs']) AS t)::integer;
    END LOOP;
    RETURN made;
END
$fn$;


-- Retention finds a day's runs by their history day. Partial: the runs from before partitioning (-infinity) are
-- not in it, so building it reads `runs` once but writes an empty index; a SHARE lock on runs for that read
-- (workers wait to write; ~1 s per million runs here). On a big table create it by hand first with
-- CREATE INDEX CONCURRENTLY IF NOT EXISTS under the same name and definition: this line then skips it.
-- Rows enter it when their run is created (an UPDATE never changes history_at but retention's move, so the
-- engine's per-step UPDATEs stay HOT).
CREATE INDEX IF NOT EXISTS runs_history_idx ON runs (history_at) WHERE history_at > '-infinity';

-- Today's partitions and a week ahead (workers keep it so).
SELECT agentrt_ensure_partitions(7);
