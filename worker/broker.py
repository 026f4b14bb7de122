"""kombu's Redis transport, with a channel that survives closing on a lost connection.

The crash it mends (celery 5.7.0, kombu 5.7.0, the newest releases): when Redis
restarts, the worker's consumer sees the connection lost and first *collects*
the connection (``Connection.collect``: close the channel, then detach the
transport, whose ``client`` becomes None), then *closes* it. The channel's
``close`` starts by draining its pending BRPOP; on the dead socket that read
raises ConnectionError, which ``close`` does not catch (only ``Empty``), so the
channel is left open while its transport is detached. The second close then
restores the unacknowledged messages through a new pool built from the
transport's ``client``: ``AttributeError: 'NoneType' object has no attribute
'hostname'``, uncaught, and the worker's main process dies ("Unrecoverable
error").

Here a BRPOP that cannot be drained counts as drained (its socket is gone, so
is its reply), and the close goes on: the first close restores what it can
and marks the channel closed, the second is a no-op. Messages it could not
restore stay in Redis's ``unacked`` hash, where recovery hands them back
(:mod:`worker.orphans`) or kombu's visibility timeout does.

Used for ``redis://`` brokers (``broker_transport`` in celeryconfig); kombu
applies its ``rediss://`` defaults only to its own transport name, so TLS URLs
keep kombu's class.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "worker.broker:Transport"


class Channel(kombu_redis.Channel):
    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()  # type: ignore[no-untyped-call]
            except (Empty, *self.connection_errors):
                pass  # the socket is gone, and its pending reply with it
        super().close()  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(url: str) -> Any:
    """The ``broker_transport`` setting for ``url`` (None: kombu's from the URL)."""
    return TRANSPORT if url.startswith("redis://") else None
