"""`agentrt`: the one command-line entry point (see README, Command line).

`main` parses and dispatches (worker/cli/main.py); `local` holds the commands that run something here
(worker, migrate, validate, console, dev), `runs` those that go through RuntimeClient, and `support`
what every command module shares, subsystems' own (`worker/*/cli.py`) included.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from worker.cli.main import main as run

    return run(argv)


__all__ = ["main"]
