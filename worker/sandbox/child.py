"""The sandbox process's main: `python -m worker.sandbox.child`, started by the pool.

Before anything of the task is imported it moves the protocol off fds 0/1 (task code that prints, or
a library that writes to fd 1, cannot corrupt it), reads its configuration, and applies its limits.
Then it serves calls on an asyncio loop: each call frame becomes a task (resolve the function, cached;
call it with a small `ctx`; send back the result as JSON). The worker decides how many run at once:
one sync call at a time (it blocks the loop), several async ones. Log records and printed lines go
back to the worker as `log` frames.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from worker.sandbox import limits
from worker.sandbox.protocol import HEADER, MAX_FRAME, encode


class Channel:
    """The protocol pipe pair, on private descriptors; writes are whole frames, under a lock."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self._write_fd = write_fd
        self._lock = threading.Lock()

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = os.read(self.read_fd, size - len(chunks))
            if not chunk:
                break
            chunks += chunk
        return bytes(chunks)

    def read(self) -> dict[str, Any] | None:
        """One frame, read without buffering (the config, before the loop takes the pipe over)."""
        import orjson

        header = self._read_exactly(4)
        if len(header) < 4:
            return None  # the worker closed the pipe: exit
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise SystemExit(f"frame of {size} bytes")
        message: dict[str, Any] = orjson.loads(self._read_exactly(size))
        return message

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(encode(message))

    def send_raw(self, frame: bytes) -> None:
        with self._lock:
            view = memoryview(frame)
            while view:
                written = os.write(self._write_fd, view)
                view = view[written:]


def _move_protocol_off_stdio() -> Channel:
    """The worker's pipes arrive as fds 0/1; keep them on private fds, point 0 at /dev/null, 1 at 2."""
    read_fd, write_fd = os.dup(0), os.dup(1)  # dup'd descriptors are not inheritable
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # fd-level writes (C code, subprocesses) reach the worker's stderr reader
    return Channel(read_fd, write_fd)


def main() -> int:
    started = time.perf_counter()
    channel = _move_protocol_off_stdio()
    config = channel.read()
    if config is None:
        return 0
    try:
        applied = limits.apply(config)
    except (limits.SandboxSetupError, OSError) as exc:
        channel.send({"t": "fatal", "message": f"sandbox setup failed: {exc}"})
        return 70
    sys.path[:0] = [p for p in config["search_path"] if p not in sys.path]
    try:
        from worker.sandbox.task import Runner  # only now: task code is imported from here on

        runner = Runner(channel, config)
    except Exception as exc:  # noqa: BLE001 - e.g. AGENTRT_TASK_MODULES names something that is gone
        hint = ""
        if config.get("user") is not None and isinstance(exc, (ImportError, OSError)):
            hint = (f" (the sandbox runs as uid {os.getuid()}: that user must be able to read the Python "
                    f"installation {sys.base_prefix}, the runtime and the task modules)")
        channel.send({"t": "fatal", "message": f"sandbox setup failed: {type(exc).__name__}: {exc}{hint}"})
        return 70
    channel.send({"t": "ready", "pid": os.getpid(), "startup_ms": (time.perf_counter() - started) * 1000,
                  **applied})
    import asyncio

    status = asyncio.run(runner.serve())
    _remove_home()  # the worker removes it too, unless it died first
    return status


def _remove_home() -> None:
    import shutil

    home = os.environ.get("HOME", "")
    if os.path.basename(home).startswith("agentrt-sandbox-"):
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
