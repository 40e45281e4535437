"""Installing the peers of `bench/peers.py` where they cannot disturb the project's own dependencies.

Each Python peer gets its own venv under the cache dir (`~/.cache/agentrt-bench/peers/<name>/`, or
`$AGENTRT_BENCH_CACHE/peers/<name>/`), installed from the pinned requirements file beside this module on
first use; a marker file holds the requirements it was installed from, so a changed pin reinstalls and
an unchanged one costs nothing. restate-server comes from its npm package (the package ships the server's
binary for the platform), installed with the machine's npm into the same cache dir, scripts off (the
package's only script is an install-analytics ping). Anything that fails raises `PeerUnavailable` with
the reason, which the driver reports as "skipped", never as a figure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RESTATE_SERVER_VERSION = "1.7.12"
"""The `@restatedev/restate-server` npm package's version (the server's own version is the same)."""

REQUIREMENTS = {"dbos": HERE / "requirements-dbos.txt", "restate": HERE / "requirements-restate.txt"}
"""Pinned `pip freeze` of each peer venv: DBOS Transact; the Restate Python SDK and hypercorn."""


class PeerUnavailable(Exception):
    """A peer that cannot be installed or started; the message is the reason shown as "skipped"."""


def cache_dir() -> Path:
    base = os.environ.get("AGENTRT_BENCH_CACHE") or str(Path.home() / ".cache" / "agentrt-bench")
    return Path(base) / "peers"


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{' '.join(cmd[:3])}...: {exc}") from exc
    if res.returncode != 0:
        raise PeerUnavailable(f"{' '.join(cmd[:3])}... exited {res.returncode}: {_tail(res.stderr or res.stdout)}")


def base_python() -> str:
    """The interpreter the peer venvs are made from: the one running the driver, outside its venv."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(name: str) -> Path:
    """The python of peer `name`'s venv, created and installed from its pinned requirements if needed."""
    reqs = REQUIREMENTS[name]
    wanted = hashlib.sha256(reqs.read_bytes()).hexdigest()
    venv = cache_dir() / name
    python = venv / "bin" / "python"
    marker = venv / ".agentrt-installed"
    if python.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return python
    print(f"installing {name} into {venv} (first use; pinned in {reqs.relative_to(HERE.parent.parent)})",
          flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        _run([base_python(), "-m", "venv", str(venv)])
    _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(reqs)])
    marker.write_text(wanted + "\n")
    return python


def ensure_restate_server() -> Path:
    """The restate-server binary from the pinned npm package, installed with the machine's npm if needed."""
    prefix = cache_dir() / "restate-server"
    binary = prefix / "node_modules" / "@restatedev" / "restate-server-linux-x64" / "bin" / "restate-server"
    marker = prefix / ".agentrt-installed"
    if binary.exists() and marker.exists() and marker.read_text().strip() == RESTATE_SERVER_VERSION:
        return binary
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise PeerUnavailable(f"restate-server: this driver knows the linux-x64 binary only, not "
                              f"{sys.platform}/{os.uname().machine}")
    npm = shutil.which("npm")
    if npm is None:
        raise PeerUnavailable("restate-server: npm is not installed (Node 20+ with npm is needed)")
    print(f"installing @restatedev/restate-server@{RESTATE_SERVER_VERSION} into {prefix} (first use)", flush=True)
    prefix.mkdir(parents=True, exist_ok=True)
    _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--ignore-scripts",
          f"@restatedev/restate-server@{RESTATE_SERVER_VERSION}"], cwd=prefix)
    if not binary.exists():
        raise PeerUnavailable(f"restate-server: npm installed the package but {binary} is missing")
    marker.write_text(RESTATE_SERVER_VERSION + "\n")
    return binary
