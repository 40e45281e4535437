-- `uses: wait` steps: a run parked until an outside event with a name (and key) arrives, or its timeout.
-- A wait is registered in the same transaction that commits its step.waiting event; an event is matched
-- against open waits in the transaction that records it. Both take a transaction-scoped advisory lock on
-- the event name first, so an event and a wait that meet at the same moment always find each other.
CREATE TABLE event_waits (
    run_id      uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id     text NOT NULL,
    item        int NOT NULL DEFAULT -1,          -- foreach item, -1 for a plain step
    attempt     int NOT NULL,
    name        text NOT NULL,
    key         text,                             -- NULL: any event of that name
    since       timestamptz NOT NULL,             -- events received from here on count (lookback window)
    deadline    timestamptz,
    status      text NOT NULL DEFAULT 'waiting',  -- waiting | received | timed_out | cancelled
    event_id    uuid,
    event       jsonb,                            -- {event_id, name, key, data, sent_by, received_at}
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    PRIMARY KEY (run_id, step_id, item)
);
CREATE INDEX event_waits_open_idx ON event_waits (name, key) WHERE status = 'waiting';
CREATE INDEX event_waits_event_idx ON event_waits (event_id) WHERE event_id IS NOT NULL;

-- the waiting runs an event resumed, kept with the event so an Idempotency-Key replay returns them too
ALTER TABLE external_events ADD COLUMN delivered_to uuid[] NOT NULL DEFAULT '{}';

-- what started a run: api | schedule | event | webhook | parent | replay; NULL: a person (CLI, console)
ALTER TABLE runs ADD COLUMN trigger text;
