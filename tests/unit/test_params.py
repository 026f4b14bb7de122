"""Job parameters stored as JSON and read back (worker.params), no services."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from worker.errors import UsageError
from worker.params import JobParams
from worker.seeding import SeedParams
from worker.uploads import UploadRef


@dataclass(frozen=True)
class Example(JobParams):
    name: str
    statuses: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise UsageError("--name is empty")


def test_fields_round_trip_through_json_values() -> None:
    p = Example("a", ("x", "y"), (("k", "v"),), {"users": 3}, 7)
    stored = p.to_params()
    assert stored == {
        "name": "a",
        "statuses": ["x", "y"],
        "where": [["k", "v"]],
        "counts": {"users": 3},
        "limit": 7,
    }
    assert Example.from_params(stored) == p


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored() -> None:
    assert Example.from_params({"name": "a", "chunks": [1, 2]}) == Example("a")


def test_checks_run_and_malformed_values_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--name is empty"):
        Example.from_params({"name": ""})
    with pytest.raises(UsageError, match="Example: malformed parameters: limit: "):
        Example.from_params({"name": "a", "limit": "many"})
    with pytest.raises(UsageError, match="Example: parameters must be a JSON object"):
        Example.from_params(["a"])  # type: ignore[arg-type]


def test_the_kinds_use_it() -> None:
    seed = SeedParams("todos", 12, {"users": 4}, 5)
    assert SeedParams.from_params(seed.to_params()) == seed
    ref = UploadRef(oid=5, name="t.csv", size=10, sha256="ab")
    assert UploadRef.from_params(ref.to_params()) == ref
    with pytest.raises(UsageError, match="not a reference to a stored upload"):
        UploadRef.from_params({**ref.to_params(), "store": "s3"})
