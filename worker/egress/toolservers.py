"""The environment a stdio MCP server starts with: a scrubbed one, never the worker's.

Every stdio server, the operator's (`tools.yaml`) as well as a workflow's (with the operator's opt-in),
gets only the variables a program needs to run (PATH, HOME, the locale, the time zone, the temporary
directory...) plus the `env:` its declaration gives. The worker's identity and configuration (VAULT_*,
BAO_*, AGENTRT_*, cloud keys, anything else) are not inherited. The mcp SDK adds its own short default
list (HOME, LOGNAME, PATH, SHELL, TERM, USER) to what it is given; both lists hold no secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
             "TZ", "TMPDIR")


def stdio_environment(declared: Mapping[str, str], source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scrubbed inherited variables, then the declaration's own `env:` (which wins)."""
    source = os.environ if source is None else source  # "()…": a shell function, never passed on
    env = {name: source[name] for name in INHERITED if name in source and not source[name].startswith("()")}
    return {**env, **declared}
