"""Redis databases claimed per test session, so parallel runs never share queues.

Each layer that runs workers claims a database of its own on the same server
(an expiring lock key, and no other client connected to it): test sessions of
several engineers, and the layers of one session, then never take or purge
each other's messages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOCK_KEY = "bulkops:tests:lock"
LOCK_TTL_S = 1800  # refreshed by every test that uses the database


def db_url(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def _others_connected(client: Any, db: int) -> bool:
    """Whether another client (a leftover worker, a benchmark) is on database ``db``."""
    import redis

    try:
        me = int(client.client_id())
        return any(int(c.get("db", -1)) == db and int(c["id"]) != me for c in client.client_list())
    except redis.RedisError:  # CLIENT LIST not allowed here: rely on the lock alone
        return False


@contextlib.contextmanager
def claimed_db(base_url: str, dbs: Iterable[int] = range(15, 0, -1)) -> Iterator[str | None]:
    """Yield the URL of a database claimed for this session (None if all are taken)."""
    import redis

    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    claimed = None
    for db in dbs:
        url = db_url(base_url, db)
        with contextlib.closing(redis.Redis.from_url(url)) as client:
            if not _others_connected(client, db) and client.set(
                LOCK_KEY, token, nx=True, ex=LOCK_TTL_S
            ):
                claimed = url
                break
    try:
        yield claimed
    finally:
        if claimed is not None:
            with contextlib.closing(redis.Redis.from_url(claimed)) as client:
                if client.get(LOCK_KEY) == token.encode():
                    client.delete(LOCK_KEY)


def refresh(url: str) -> None:
    """Keep a claim alive during a long session."""
    import redis

    with contextlib.closing(redis.Redis.from_url(url)) as client:
        client.expire(LOCK_KEY, LOCK_TTL_S)
