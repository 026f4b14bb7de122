"""Job parameters: frozen dataclasses stored as a job's JSON ``params``, converted once.

A kind's parameters (``ImportParams``, ``UpdateParams``, ``SeedParams``, an
upload's ``UploadRef``) derive from :class:`JobParams`: ``to_params`` and
``from_params`` go through one pydantic ``TypeAdapter`` per class, so a field
added to the dataclass is stored and read back with nothing else written.
Tuples become JSON lists and back, a missing key takes the field's default, keys
the class does not know (the ``chunks``, ``upload``… the ledger adds beside)
are ignored, and ``__post_init__`` checks run as on construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, cast

from pydantic import TypeAdapter, ValidationError

from worker.errors import UsageError

_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(cls: type) -> TypeAdapter[Any]:
    """The class's adapter, built once (building one compiles its validator)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


class JobParams:
    """Mixin for a frozen dataclass of a job's parameters (JSON in ``jobs.params``)."""

    def to_params(self) -> dict[str, Any]:
        """The fields as JSON values (a tuple as a list)."""
        return dict(_adapter(type(self)).dump_python(self, mode="json"))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Self:
        """Read back what :meth:`to_params` stored; a malformed value is a UsageError."""
        if not isinstance(params, Mapping):
            raise UsageError(f"{cls.__name__}: parameters must be a JSON object, not {params!r}")
        try:
            return cast(Self, _adapter(cls).validate_python(dict(params)))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            raise UsageError(f"{cls.__name__}: malformed parameters: {problems}") from None
