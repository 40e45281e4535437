"""Python functions used by the demo workflows (`uses: python`, `function: demo_tasks:<name>`).

The worker puts the workflows directory on sys.path, so modules kept beside the YAML files can be
called. Functions get the step's `args` as keyword arguments and return JSON values.
"""

from __future__ import annotations

import hashlib
import random


def shout(text: str) -> str:
    return text.upper()


def assess_refund(ticket_id: str, amount: float) -> dict[str, object]:
    return {"ticket_id": ticket_id, "amount": amount, "needs_approval": amount > 100,
            "risk": "high" if amount > 500 else "low"}


def issue_refund(ticket_id: str, amount: float, ctx: object = None) -> dict[str, object]:
    # A real implementation would call the payments API with ctx.idempotency_key.
    key = getattr(ctx, "idempotency_key", ticket_id)
    reference = "rf_" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return {"refunded": amount, "reference": reference}


def score(doc: str, index: int) -> int:
    if random.random() < 0.2:  # a flaky dependency: the retry policy takes care of it
        raise RuntimeError(f"scoring service hiccup on {doc}")
    return len(doc) * (index + 1)
