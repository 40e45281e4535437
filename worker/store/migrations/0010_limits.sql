-- Fleet-wide limits (worker/limits): where each worker's limiter keeps its buckets. "redis": shared by the fleet;
-- "fallback": Redis is unreachable and the worker enforces its own share of every limit. `agentrt limits` shows it.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS limits_mode text;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS limits_mode_since timestamptz;
ALTER TABLE workers ADD COLUMN IF NOT EXISTS limits_mode_reason text;
