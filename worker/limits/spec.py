"""The `limits.yaml` format (validated with pydantic: unknown keys are errors) and the bucket parameters
each limit turns into.

```yaml
limits:
  openai-gpt4o: {requests: 500/min, tokens: 30000/min, match: {provider: openai, model: gpt-4o}}
  helpdesk-api: {requests: 20/s, concurrency: 10}
```

A rate is `N/s`, `N/min`, `N/h` or `N/day` (N a positive number). `burst:` is how many requests may leave at
once (default: 95 % of one window, at least 1). Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

LIMIT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
"""Names of limits: letters, digits and `_ . : -`, at most 100 (no braces: they hash-tag Redis keys)."""

LIMIT_KINDS: frozenset[str] = frozenset({"llm", "agent", "tool", "http", "python"})
"""Step kinds that may opt in to a limit (`limit:` / `limits:`)."""

MATCHED_KINDS: frozenset[str] = frozenset({"llm", "agent"})
"""Step kinds whose calls `match:` applies to (every LLM request, each agent turn)."""

FILL = 0.95
"""A bucket holds this share of one window by default: a request that leaves as the provider refills its own
bucket (network jitter, clock phase) then never finds the provider's bucket empty."""

UNITS: dict[str, float] = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
                           "hour": 3600.0, "day": 86400.0}
_RATE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*/\s*([A-Za-z]+)\s*$")
MAX_AMOUNT = 1e12


@dataclass(frozen=True, slots=True)
class Rate:
    """`amount` per `period` seconds, as written (`text`)."""

    amount: float
    period: float
    text: str

    @property
    def per_second(self) -> float:
        return self.amount / self.period

    @property
    def unit(self) -> str:
        return {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}[self.period]


def parse_rate(value: Any) -> Rate:
    """`500/min` -> Rate(500, 60); a readable ValueError for anything else (`500/fortnight`, `-5/s`, `0/s`)."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a rate: write a positive number per s, min, h or day, e.g. 500/min")
    match = _RATE.match(value)
    if match is None:
        if value.strip().startswith("-"):
            raise ValueError(f"{value!r}: a rate cannot be negative")
        raise ValueError(f"{value!r} is not a rate: write a positive number per s, min, h or day, e.g. 500/min")
    amount, unit = float(match.group(1).replace("_", "")), match.group(2).lower()
    if unit not in UNITS:
        raise ValueError(f"{value!r}: unknown unit {match.group(2)!r} (use s, min, h or day)")
    if amount <= 0:
        raise ValueError(f"{value!r}: a rate must be more than 0 (remove the limit to stop limiting)")
    if amount > MAX_AMOUNT:
        raise ValueError(f"{value!r}: at most {MAX_AMOUNT:.0e} per period")
    period = UNITS[unit]
    shown = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}[period]
    return Rate(amount, period, f"{match.group(1)}/{shown}")


RateField = Annotated[Rate, BeforeValidator(parse_rate)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class MatchSpec(_Model):
    """Which LLM calls a limit applies to without the step naming it; `*` and `?` are wildcards."""

    provider: str | None = Field(None, min_length=1, max_length=100)  # openai | anthropic | ollama
    model: str | None = Field(None, min_length=1, max_length=200)
    host: str | None = Field(None, min_length=1, max_length=255)  # the host the request goes to

    @model_validator(mode="after")
    def _something(self) -> MatchSpec:
        if self.provider is None and self.model is None and self.host is None:
            raise ValueError("match needs at least one of provider, model, host")
        return self

    def applies(self, provider: str, model: str, host: str) -> bool:
        return all(pattern is None or fnmatch.fnmatchcase(value, pattern)
                   for pattern, value in ((self.provider, provider), (self.model, model),
                                          (self.host and self.host.lower(), host.lower())))


class LimitSpec(_Model):
    """One named limit: any of a request rate, a token rate and a concurrency cap."""

    requests: RateField | None = None
    tokens: RateField | None = None
    concurrency: int | None = Field(None, ge=1, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=1_000_000_000)  # requests that may leave at once
    match: MatchSpec | None = None
    description: str = ""

    @model_validator(mode="after")
    def _something(self) -> LimitSpec:
        if self.requests is None and self.tokens is None and self.concurrency is None:
            raise ValueError("a limit needs at least one of requests, tokens, concurrency")
        if self.burst is not None and self.requests is None:
            raise ValueError("burst applies to requests: give the limit a requests rate")
        return self


class LimitsFileSpec(_Model):
    """`limits.yaml` beside the workflows: the operator's named limits."""

    limits: dict[str, LimitSpec] = Field(default_factory=dict)

    @field_validator("limits")
    @classmethod
    def _names(cls, value: dict[str, LimitSpec]) -> dict[str, LimitSpec]:
        for name in value:
            if not re.match(LIMIT_NAME, name):
                raise ValueError(f"limit name {name!r}: 1-100 letters, digits and _ . : -, starting with a letter "
                                 "or digit")
        return value


@dataclass(frozen=True, slots=True)
class Buckets:
    """What the limiter enforces for one limit (the Lua scripts' and the local fallback's parameters)."""

    name: str
    interval: float
    """Seconds between requests at the limit's rate (0: no request rate)."""
    tolerance: float
    """How far ahead of its slot a request may go: (burst - 1) * interval."""
    token_rate: float
    """Tokens per second (0: no token rate)."""
    token_capacity: float
    concurrency: int
    """Calls in flight at once (0: no cap)."""
    period: float
    """The window `agentrt limits` counts use in."""

    @property
    def burst(self) -> int:
        return 0 if self.interval <= 0 else round(self.tolerance / self.interval) + 1

    def share(self, fraction: float) -> Buckets:
        """This limit cut to `fraction` of its rates, bursts and concurrency (one worker's fallback share)."""
        if fraction >= 1.0:
            return self
        burst = max(1, math.floor(self.burst * fraction)) if self.interval > 0 else 0
        interval = self.interval / fraction
        return Buckets(self.name, interval, (burst - 1) * interval if burst else 0.0, self.token_rate * fraction,
                       max(1.0, math.floor(self.token_capacity * fraction)) if self.token_rate else 0.0,
                       max(1, math.floor(self.concurrency * fraction)) if self.concurrency else 0, self.period)


def buckets(name: str, spec: LimitSpec) -> Buckets:
    interval = tolerance = token_rate = capacity = 0.0
    if spec.requests is not None:
        interval = spec.requests.period / spec.requests.amount
        burst = spec.burst if spec.burst is not None else max(1, math.floor(spec.requests.amount * FILL))
        tolerance = (burst - 1) * interval
    if spec.tokens is not None:
        token_rate = spec.tokens.per_second
        capacity = max(1.0, math.floor(spec.tokens.amount * FILL))
    rate = spec.requests or spec.tokens
    period = rate.period if rate is not None else 60.0
    return Buckets(name, interval, tolerance, token_rate, capacity, spec.concurrency or 0, period)
