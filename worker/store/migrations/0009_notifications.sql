-- Notifications (worker/notify): a transactional outbox of webhooks to the operator's notify.yaml targets.
--
-- A row is written in the transaction that caused it (a human task's insert, a run's final failure, a takeover's
-- run.resumed; the pre-deadline reminder by a periodic scan that marks the task in the same transaction), one row
-- per (notification, target). `notification_id` is stable (X-Notification-Id): every delivery attempt of a row
-- carries it, so a receiver deduplicates. A dispatcher in every worker claims due rows (FOR UPDATE SKIP LOCKED);
-- a claim moves next_attempt_at past the delivery's timeout, so a worker killed mid-delivery leaves the row due
-- again for another. A row is delivered (2xx), or retried with backoff until give_up_at, then failed.
CREATE TABLE notifications (
    notification_id uuid NOT NULL,
    target          text NOT NULL,                  -- a target of notify.yaml
    kind            text NOT NULL,                  -- task.created | task.expiring | task.escalated | run.failed
                                                    -- | worker.lost
    subject         text NOT NULL,                  -- the task, run or lost worker it is about
    workflow        text,
    run_id          uuid REFERENCES runs (run_id) ON DELETE CASCADE,  -- NULL for worker.lost (several runs)
    task_id         uuid,
    body            jsonb NOT NULL,                 -- the event; rendered per the target's format when sent
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,     -- deliveries started (a claim counts one)
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    give_up_at      timestamptz NOT NULL,
    claimed_by      text,                           -- the worker delivering it now (until claimed_until)
    claimed_until   timestamptz,
    finished_at     timestamptz,                    -- delivered or given up
    last_status     integer,                        -- the receiver's last HTTP status
    last_error      text,                           -- why the last attempt failed (never a URL or a secret)
    PRIMARY KEY (notification_id, target)
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_created_idx ON notifications (created_at DESC);
CREATE INDEX notifications_run_idx ON notifications (run_id) WHERE run_id IS NOT NULL;

-- task.expiring: set when the reminder for a task's deadline was decided (sent or routed nowhere), once.
ALTER TABLE human_tasks ADD COLUMN expiry_notified_at timestamptz;
CREATE INDEX human_tasks_deadline_idx ON human_tasks (deadline)
    WHERE status = 'pending' AND deadline IS NOT NULL AND expiry_notified_at IS NULL;
