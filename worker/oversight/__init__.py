"""Human oversight: authorization policy, the audit trail, replay plans, bulk operations."""
