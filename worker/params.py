"""Job parameters: frozen dataclasses stored as a job's JSON ``params``, converted once.

A kind's parameters (``ImportParams``, ``UpdateParams``, ``SeedParams``, an
upload's ``UploadRef``) derive from :class:`JobParams`: ``to_params`` and
``from_params`` go through one pydantic ``TypeAdapter`` per class, so a field
added to the dataclass is stored and read back with nothing else written.
Tuples become JSON lists and back, a missing key takes the field's default, keys
the class does not know (the ``chunks``, ``upload``… the ledger adds beside)
are ignored, and ``__post_init__`` checks run as on construction.

When a kind's params change shape, its class declares ``kind=`` and overrides
:meth:`JobParams.upgrade`: ``from_params`` reads a job stored by an earlier
release through it, and the ledger compares a key's earlier job with a new
request in today's shape (:func:`current_shape`), so a schedule's slot or a
retried submit spanning an upgrade is still the same request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, cast

from pydantic import TypeAdapter, ValidationError

from worker.errors import UsageError

_ADAPTERS: dict[type, TypeAdapter[Any]] = {}
_BY_KIND: dict[str, type[JobParams]] = {}  # job kind -> its params class, where it upgrades


def _adapter(cls: type) -> TypeAdapter[Any]:
    """The class's adapter, built once (building one compiles its validator)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


class JobParams:
    """Mixin for a frozen dataclass of a job's parameters (JSON in ``jobs.params``)."""

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            _BY_KIND[str(kind)] = cls

    @classmethod
    def upgrade(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Params an earlier release stored, in today's shape (default: as they are)."""
        return params

    def to_params(self) -> dict[str, Any]:
        """The fields as JSON values (a tuple as a list)."""
        return dict(_adapter(type(self)).dump_python(self, mode="json"))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """Read back what :meth:`to_params` stored; a malformed value is a UsageError."""
        if not isinstance(params, Mapping):
            raise UsageError(f"{cls.__name__}: parameters must be a JSON object, not {params!r}")
        try:
            return cast(Self, _adapter(cls).validate_python(cls.upgrade(dict(params))))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            raise UsageError(f"{cls.__name__}: malformed parameters: {problems}") from None


def current_shape(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A job's stored params in today's shape: its class's :meth:`JobParams.upgrade`, if any."""
    cls = _BY_KIND.get(str(kind))
    return cls.upgrade(dict(params)) if cls is not None else dict(params)
