"""Moved to `worker.egress.netguard` (the address guard is one part of the egress policy)."""

from worker.egress.netguard import AllowList, check_url, classify_ip, parse_ip_literal

__all__ = ["AllowList", "check_url", "classify_ip", "parse_ip_literal"]
