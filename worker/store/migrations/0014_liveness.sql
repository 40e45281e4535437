-- Fast death detection (worker/engine/liveness.py): each worker holds a session advisory lock on a connection of
-- its own while it lives; `liveness_at` says since when. A worker killed with -9 loses that connection at once,
-- so the others see its lock free and take its runs over without waiting for its leases to expire.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS liveness_at timestamptz;
