"""Python function of the `vault-demo` workflow: proves a credential arrived without revealing it."""

from __future__ import annotations

import hashlib
from typing import Any


def report_credentials(api_key: str, endpoint: str, ctx: Any = None) -> dict[str, object]:
    # A real step would call `endpoint` with `api_key`. Never return or log the value itself: the
    # runtime redacts it anyway, but a fingerprint is all anyone needs to tell keys apart.
    secrets = getattr(ctx, "secrets", {}) or {}
    return {
        "endpoint": endpoint,
        "credentials": sorted(secrets),
        "keys": {name: sorted(values) for name, values in secrets.items()},
        "api_key_fingerprint": hashlib.sha256(api_key.encode()).hexdigest()[:8],
    }
