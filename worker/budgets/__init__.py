"""Budgets for the LLM calls of a workflow (`budget:` in its file): tokens and dollars per run, dollars per day.

- `ledger`: the `llm_spend` table: a row per call let through (its estimate), settled with the real usage.
- `check`: the pre-call check the worker's limiter runs before every LLM call (worker/limits/gate.py's hook):
  with the workflow's advisory lock held, it adds what the run and the workflow's day (UTC) have spent to the
  call's estimate; over a budget, the call does not go out: `on_exceed: ask` parks the run with a human task
  (approve: this run may go on past its budgets; reject: the step fails), `on_exceed: fail` fails the step.
  Decisions are audited like every human task.
"""
