-- The HTTP API: bearer tokens (stored as SHA-256 of the token, never the token) and idempotent run creation.
CREATE TABLE api_tokens (
    token_id    uuid PRIMARY KEY,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text
);
CREATE UNIQUE INDEX api_tokens_active_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;

-- One row per (caller, Idempotency-Key): the run it started and a hash of the request that started it.
CREATE TABLE run_requests (
    principal    text NOT NULL,
    idem_key     text NOT NULL,
    request_hash text NOT NULL,
    run_id       uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, idem_key)
);
CREATE INDEX run_requests_created_idx ON run_requests (created_at);
