-- Events from the outside world (`POST /v1/events`, `agentrt send-event`): kept with what they started,
-- so that a sender's Idempotency-Key replays the delivery instead of repeating it.
CREATE TABLE external_events (
    event_id     uuid PRIMARY KEY,
    name         text NOT NULL,
    key          text,
    data         jsonb NOT NULL,
    sent_by      text NOT NULL,
    idem_key     text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    started      uuid[] NOT NULL DEFAULT '{}',
    refused      jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE UNIQUE INDEX external_events_idem_idx ON external_events (sent_by, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX external_events_name_idx ON external_events (name, key, received_at DESC);
CREATE INDEX external_events_received_idx ON external_events (received_at);
