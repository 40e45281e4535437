"""Retry policy arithmetic (pure: randomness arrives as an argument)."""

from __future__ import annotations

from worker.definitions.schema import RetryPolicy


def backoff_delay(policy: RetryPolicy, attempt: int, rand: float) -> float:
    """Delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed.

    `rand` is uniform in [0, 1); jitter spreads the delay by +/- `policy.jitter` of itself.
    """
    base = policy.initial_interval * (policy.backoff ** max(0, attempt - 1))
    base = min(base, policy.max_interval)
    spread = base * policy.jitter
    return max(0.0, base - spread + 2 * spread * rand)


def next_retry_at(policy: RetryPolicy, attempt: int, now: float, rand: float, *, retryable: bool,
                  retry_after: float | None = None) -> float | None:
    """When to run the next attempt, or None when the failure is final."""
    if not retryable or attempt >= policy.max_attempts:
        return None
    delay = backoff_delay(policy, attempt, rand)
    if retry_after is not None:
        delay = max(delay, retry_after)  # the callee said when; never sooner
    return now + delay
