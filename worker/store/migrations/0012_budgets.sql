-- Budgets (worker/budgets): what each LLM call of a workflow with `budget:` cost, so that the next call can be
-- checked against the run's and the workflow's daily budget across workers. A call is written when it is let
-- through (its estimate, `settled` false) and settled with its real usage after the provider answered (zero
-- when it failed). One row per call key: a retry of the same call replaces its row.
CREATE TABLE llm_spend (
    call_key  text PRIMARY KEY,
    run_id    uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,  -- `agentrt gc` takes it with its run
    workflow  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    tokens    bigint NOT NULL DEFAULT 0,
    usd       double precision NOT NULL DEFAULT 0,
    settled   boolean NOT NULL DEFAULT false
);
CREATE INDEX llm_spend_run_idx ON llm_spend (run_id);
CREATE INDEX llm_spend_day_idx ON llm_spend (workflow, at);
