"""Partitioned history (issue 21): `events`, `spans` and `step_logs` are partitioned by day (migrations 0016-0018).

- `partitions`: the daily partitions, created ahead (`agentrt_ensure_partitions`, by every worker's upkeep, by
  `agentrt gc` and by the migration) and listed with their bounds.
- `retention`: dropping whole partitions instead of deleting rows: a day of run history once every run of it may
  go (`agentrt gc`), a day of spans or step logs once it is past their retention (the worker's telemetry).

A run's events all live in the partition of the day its history began (`runs.history_at`), so retention never
splits a run's log; a run still alive when its day is due is moved to today's partition first.
"""
