"""What every `agentrt` command module shares: exit codes, JSON arguments, `with_client`.

Subsystem command modules (worker/secrets/cli.py, worker/oversight/cli.py, ...) import this, never
`worker.cli.main`, so the entry point can import them without a cycle.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from worker.config import Settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_DENIED = 0, 1, 2, 3, 4, 5, 6


def json_arg(text: str) -> Any:
    """argparse `type=` for a JSON value."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


Handler = Callable[[argparse.Namespace, Settings], int]


def with_client(fn: Callable[[Any, argparse.Namespace], Awaitable[int]]) -> Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        async def go() -> int:
            from worker.client import RuntimeClient

            client = await RuntimeClient.connect(settings)
            try:
                return await fn(client, args)
            finally:
                await client.close()

        return asyncio.run(go())

    return handler
