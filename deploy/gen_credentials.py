"""Compose job `credentials`: generate the Postgres and Redis passwords once, into a volume.

Idempotent: files that exist are kept (the servers' data directories already use them). Files are
world-readable because the Postgres (uid 70) and Redis (uid 999) containers read them too; access is
controlled by which containers mount the volume (read-only everywhere except here). Nothing is ever
written to the compose file, an env file or `docker inspect`.

    python gen_credentials.py --dir /run/agentrt/credentials
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path


def write_once(path: Path, value: str) -> str:
    """Create `path` holding `value` unless it exists; return the file's content."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/run/agentrt/credentials"))
    p.add_argument("--postgres-host", default="postgres")
    p.add_argument("--postgres-user", default="agentrt")
    p.add_argument("--postgres-db", default="agentrt")
    p.add_argument("--redis-host", default="redis")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    pg = write_once(args.dir / "postgres_password", secrets.token_urlsafe(32))
    rd = write_once(args.dir / "redis_password", secrets.token_urlsafe(32))
    write_once(args.dir / "database_url",
               f"postgresql://{args.postgres_user}:{pg}@{args.postgres_host}:5432/{args.postgres_db}")
    write_once(args.dir / "redis_url", f"redis://:{rd}@{args.redis_host}:6379/0")
    sys.stderr.write(f"credentials ready in {args.dir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
