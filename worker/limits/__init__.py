"""Fleet-wide limits on what steps send out: request rates, token rates and concurrency, per named limit.

The operator defines the limits in `limits.yaml` beside the workflows (`spec.py` the format, `file.py` loading it,
following its edits, and the load-time check that workflow files name only defined limits). Steps opt in with
`limit:` / `limits:`; a limit with `match:` applies to every LLM call to that provider / model / host.

Every worker asks the same buckets, kept in Redis by Lua scripts that run atomically per limit (`lua.py`,
`redis_buckets.py`); while Redis cannot be reached, each worker enforces its own share (`buckets.py`). The gate
(`gate.py`: the `Limiter` of a worker, a `StepGate` per attempt, pre-call checks for budgets) admits calls
(`admission.py`): a short wait is slept in place, a longer one parks the step (`StepThrottled`) without burning
an attempt. LLM calls reserve their expected tokens and settle with the real usage; the providers' rate-limit
headers and 429s tighten the buckets (`provider.py`). `agentrt limits` (`cli.py`, through
`worker.client.limits`) shows each limit's use, waiting steps, 429s and the mode (redis / fallback).
"""
