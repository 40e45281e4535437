-- Human oversight: audit trail (append-only, hash-chained), multi-approver tasks, replay links.

CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    origin     text,
    action     text NOT NULL,
    outcome    text NOT NULL,
    run_id     uuid,
    task_id    uuid,
    workflow   text,
    seen       jsonb,
    decision   jsonb,
    reason     text,
    prev_hash  text NOT NULL,
    hash       text NOT NULL UNIQUE
);
CREATE INDEX audit_log_run_idx ON audit_log (run_id, id);

CREATE FUNCTION agentrt_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION agentrt_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION agentrt_audit_append_only();

ALTER TABLE human_tasks
    ADD COLUMN requested_by     text,
    ADD COLUMN approvers        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN min_approvals    integer NOT NULL DEFAULT 1,
    ADD COLUMN forbid_requester boolean NOT NULL DEFAULT false,
    ADD COLUMN approvals        jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN escalated        boolean NOT NULL DEFAULT false;

ALTER TABLE runs
    ADD COLUMN replay_of   uuid,
    ADD COLUMN replay_from text;
CREATE INDEX runs_replay_of_idx ON runs (replay_of) WHERE replay_of IS NOT NULL;
