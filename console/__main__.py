"""`python -m console [--readonly]` (what `agentrt console` runs)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from textual.logging import TextualHandler

from console.formatting import describe_error, redact_url
from worker.client import RuntimeClient
from worker.config import Settings
from worker.errors import ConfigError

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 5
CONNECT_TIMEOUT = 15.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agentrt console", description="AgentRuntime operations console")
    parser.add_argument("--readonly", action="store_true",
                        help="show everything, change nothing (every action, pause and retry too, is refused)")
    return parser.parse_args(argv)


async def _run(settings: Settings, readonly: bool) -> int:
    from console.app import AgentConsole, tune_gc  # the UI is imported only once arguments are valid

    where = redact_url(settings.database_url)
    try:
        client = await asyncio.wait_for(RuntimeClient.connect(settings), CONNECT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the runtime is reported the same way
        return _unavailable(where, exc)
    try:
        await asyncio.wait_for(client.count_runs(), CONNECT_TIMEOUT)  # the schema is there, too
    except Exception as exc:  # noqa: BLE001 - reported like a failure to connect
        await _close_quietly(client)
        return _unavailable(where, exc)
    tune_gc()
    try:
        await AgentConsole(client, readonly=readonly).run_async()
    finally:
        await _close_quietly(client)
    return 0


def _unavailable(where: str, exc: BaseException) -> int:
    # printed before the TUI owns the terminal, so stderr is safe
    print(f"agentrt console: cannot reach the runtime database at {where}: {describe_error(exc, 300)}\n"  # noqa: T201
          "Is Postgres running and AGENTRT_DATABASE_URL right? (`agentrt dev` starts everything locally.)",
          file=sys.stderr)
    return EXIT_UNAVAILABLE


async def _close_quietly(client: RuntimeClient) -> None:
    try:
        await asyncio.wait_for(client.close(), 5)
    except Exception:  # closing a broken connection must not mask the real outcome
        logging.getLogger(__name__).debug("closing the runtime client failed", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, handlers=[TextualHandler()])
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"agentrt console: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    return asyncio.run(_run(settings, args.readonly))


if __name__ == "__main__":
    raise SystemExit(main())
