"""Pause and resume runs and workflows ("stop every refund now"), durable across restarts.

- `store`: the SQL: marking a run or a workflow paused (or not) in the transaction that audits it, and
  which runs must be told.
- `cli`: `agentrt pause` / `agentrt resume` (a run, or `--workflow W`) and `agentrt paused`.

A paused run starts no further step: its worker records `run.paused` in the run's event log, lets the step in
flight finish (or interrupts it with `--now`: it is retried on resume, or a human is asked whether a
non-idempotent call took effect), then parks it with status `paused`, holding no worker slot. A paused
workflow does that to each of its unfinished runs, and runs started while it is paused (by anyone or any
trigger) are created and wait: nothing is dropped. Resuming records `run.unpaused` and the run goes on where it
stopped. While paused a run is frozen: timers that come due (sleep, deadlines) take effect when it resumes;
decisions made meanwhile (approvals, finished children, events) are recorded and acted on after it resumes.
"""
