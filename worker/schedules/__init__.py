"""Schedules: `on: {schedule: {cron: ... | every: ...}}` starts a run at every tick, exactly once.

A schedule's ticks are instants fixed by its spec alone (a cron expression read in a timezone, or multiples
of an interval since the Unix epoch), so every worker computes the same ones, and `(workflow, tick)` names
one firing. Postgres decides who fires it: each worker's scheduler loop locks the due schedule rows
(`FOR UPDATE SKIP LOCKED`), and inserts the tick's row (UNIQUE per workflow and tick), its run and the
schedule's next fire time in one transaction. A worker killed before that commit leaves nothing behind; the
next worker to look fires the tick, as the schedule's `catch_up` policy says.

Modules:
- `ticks`: pure: cron/every validation, next and recent tick times, the catch-up plan (`plan_fire`).
- `inputs`: the run's inputs from the schedule's `inputs:` (`${{ tick }}`, `${{ tick_unix }}`) and their
  load-time checks.
- `store`: the `schedules` and `schedule_ticks` tables (migration 0007): following the active workflow
  versions, firing due ticks, listing, pausing.
- `loop`: `SchedulerLoop`, the loop every worker runs.
- `cli`: `agentrt schedules [pause|resume]`.

The client side (`list_schedules`, `pause_schedule`, `resume_schedule`) is `worker.client.schedules`.
"""
