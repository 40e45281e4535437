-- Saved run views (worker/search): named filters of the runs list, shared by everyone who operates the runtime
-- (`agentrt runs --save-view NAME`, `agentrt runs --view NAME`, the console's `:view NAME`).
CREATE TABLE run_views (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    filters     jsonb NOT NULL,
    created_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
