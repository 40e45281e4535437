"""A finding of `agentrt doctor` (`Check`) and the small helpers every check uses."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]

TIMEOUT = 5.0  # per check: connect + queries


@dataclass(slots=True)
class Check:
    """The verdict on one dependency."""

    name: str
    status: Status
    summary: str
    details: list[str] = field(default_factory=list)
    """Further findings, each a full sentence an operator can act on."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Machine-readable figures (versions, counts) for `--json`."""

    def worst(self, status: Status, line: str) -> None:
        """Record a finding and lower the status if it is worse than the current one."""
        self.details.append(line)
        if _RANK[status] > _RANK[self.status]:
            self.status = status


_RANK: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}


def redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))



def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
