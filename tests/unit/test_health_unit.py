"""Unit tests for the Redis health checks (fakeredis, and a closed port; no services)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.health import Check, HealthReport, check_queues, check_redis
from worker.queues import QUEUES


@pytest.fixture
def fake() -> Iterator[fakeredis.FakeRedis]:
    # Its own server, so no state is shared with another test.
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


@pytest.fixture
def closed_port_client() -> Iterator[redis.Redis]:
    """A client for a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=2,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )
    yield client
    client.close()


def test_queue_depths_are_reported(fake: fakeredis.FakeRedis) -> None:
    # Given three messages waiting on imports and one on maintenance
    fake.rpush("imports", "m1", "m2", "m3")
    fake.rpush("maintenance", "h1")
    # When the queues are checked
    check = check_queues(fake)
    # Then each queue's depth is reported, empty ones as 0
    assert check.name == "queues"
    assert check.ok is True
    assert check.data == {"depth": {"imports": 3, "updates": 0, "maintenance": 1}}
    assert check.detail == "imports=3, updates=0, maintenance=1"


def test_every_queue_is_checked(fake: fakeredis.FakeRedis) -> None:
    assert set(check_queues(fake).data["depth"]) == set(QUEUES)


def test_redis_ping_ok(fake: fakeredis.FakeRedis) -> None:
    check = check_redis(fake)
    assert (check.name, check.ok) == ("redis", True)
    assert check.detail.startswith("ping ")
    assert check.data["latency_ms"] >= 0


def test_unreachable_redis_is_a_failed_check_with_a_reason(
    closed_port_client: redis.Redis,
) -> None:
    # When nothing listens on the port, the check reports instead of raising
    check = check_redis(closed_port_client)
    assert (check.name, check.ok) == ("redis", False)
    assert check.detail.startswith("ConnectionError: ")
    assert str(closed_port_client.connection_pool.connection_kwargs["port"]) in check.detail


def test_unreachable_redis_fails_the_queue_check_too(closed_port_client: redis.Redis) -> None:
    check = check_queues(closed_port_client)
    assert (check.name, check.ok) == ("queues", False)
    assert check.detail.startswith("ConnectionError: ")


def test_wrong_type_key_is_reported_not_raised(fake: fakeredis.FakeRedis) -> None:
    # Given something else stored a string under a queue name
    fake.set("updates", "not a list")
    check = check_queues(fake)
    assert check.ok is False
    assert "WRONGTYPE" in check.detail


def test_report_serialises_to_json() -> None:
    report = HealthReport(False, [Check("a", True, "fine"), Check("b", False, "broken", {"x": 1})])
    assert json.loads(json.dumps(report.to_dict())) == {
        "healthy": False,
        "checks": [
            {"name": "a", "ok": True, "detail": "fine", "data": {}},
            {"name": "b", "ok": False, "detail": "broken", "data": {"x": 1}},
        ],
    }
