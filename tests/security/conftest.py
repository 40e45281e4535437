"""Fixtures of the hostile-input suite: the canary (tests/security/harness.py)."""

from tests.security.harness import canary

__all__ = ["canary"]
