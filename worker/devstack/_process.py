"""The part every embedded server shares: spawn, wait until it answers, stop, kill, restart."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

logger = logging.getLogger(__name__)

_POLL = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; a race with another process is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 25, since: int = 0) -> str:
    """The last `lines` lines of a log file written after byte offset `since` ("" when unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, then wait until none is left running."""
    import psutil  # only needed for crash simulation; part of the dev extra

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    # Grandchildren are reparented to a PID 1 that may never reap them: a zombie is as dead as a
    # gone process for our purpose (it holds no ports, locks or shared memory any more).
    deadline = time.monotonic() + 10.0
    for proc in procs:
        while time.monotonic() < deadline:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)


class ChildServer:
    """A server binary run as a child process, in its own session, logging to a file.

    Subclasses say how to prepare the data, which argv to run and how to tell that it answers.
    """

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, port: int | None, log_path: Path) -> None:
        self.port: int = port if port is not None else free_port()
        """The TCP port on 127.0.0.1; kept across restarts."""
        self.log_path: Path = log_path
        """Where the server's stdout and stderr go (appended across restarts)."""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def _binary(self) -> Path:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Runs before each start (create config files, initialise data)."""

    def _popen_kwargs(self) -> Mapping[str, object]:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def is_running(self) -> bool:
        """Whether the child process started by this object is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; a no-op when it already runs.

        Raises:
            RuntimeError: the binary exited or did not answer within `timeout`; the message names
                the binary, the log file and the log's last lines.
        """
        if self.is_running():
            return
        self._proc = None
        self._prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            offset = log.tell()
            started = time.monotonic()
            try:
                self._proc = subprocess.Popen(  # type: ignore[call-overload]
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C on the terminal must not bypass ServiceGroup's order
                    **self._popen_kwargs(),
                )
            except OSError as exc:
                raise self._failure(f"could not be executed: {exc}", offset) from exc
        deadline = started + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._failure(f"exited with code {code} while starting", offset)
            if self._ready():
                logger.info("%s up on port %d in %.2fs", self.name, self.port, time.monotonic() - started)
                return
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"did not answer within {timeout:.0f}s", offset)
            time.sleep(_POLL)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the server to shut down cleanly and wait; kill it if it does not within `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) ignored shutdown for %.0fs; killing it", self.name, proc.pid, timeout
                )
                self.kill()
                return
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would; waits until they are gone."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _kill_tree(proc.pid)
        proc.wait()
        self._proc = None

    def restart(self, downtime: float = 0.0) -> None:
        """Stop (a no-op after kill), stay down for `downtime` seconds, start again on the same port."""
        self.stop()
        if downtime > 0:
            time.sleep(downtime)
        self.start()

    def _failure(self, reason: str, offset: int) -> RuntimeError:
        tail = log_tail(self.log_path, since=offset) or "(log is empty)"
        return RuntimeError(
            f"{self.name} ({self._binary()}) {reason} on 127.0.0.1:{self.port}. "
            f"Log: {self.log_path}; last lines:\n{tail}"
        )

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state}>"


def package_dir(module: str, package: str) -> Path:
    """Folder of an installed dev-only package, found without importing it; fails with an install hint."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{package} is not installed; the embedded dev stack needs the dev extra: pip install -e '.[dev]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def environ_without(*names: str) -> dict[str, str]:
    """os.environ minus `names`, for children that must not pick up a caller's settings."""
    return {k: v for k, v in os.environ.items() if k not in names}
