"""Notifications: webhooks to the operator's targets when a human is needed or something broke.

config.py       notify.yaml: targets, routes, lead time and retry bounds; hot reload; routing; the load-time
                check that no workflow credential points at the notification secrets
notices.py      pure: a commit (or a due task) -> outbox rows with stable ids
outbox.py       the Postgres outbox: insert in the causing transaction, claim, delivered, failed, list
payloads.py     pure: JSON and Slack bodies, headers, the HMAC-SHA256 signature (and `verify` for receivers)
credentials.py  the targets' signing secrets and URLs from Vault (the worker's own token)
dispatcher.py   `Notifier`: what the worker runs (commit hook, delivery loop, the task.expiring scan)
cli.py          `agentrt notifications [--pending | --failed] [--json]`
"""
