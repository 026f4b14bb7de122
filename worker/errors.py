"""The one error tree of bulkops.

Tasks take their retry policy from the branch: a :class:`RetryableError` is
retried with backoff, a :class:`PermanentError` fails the job at once. Each
class's docstring says when it is raised and is its default message.
"""

from __future__ import annotations


class BulkopsError(Exception):
    """A bulkops operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- retryable -----------------------------------------------------------------


class RetryableError(BulkopsError):
    """A transient failure; the same work may succeed if tried again."""


class DatabaseUnavailable(RetryableError):
    """PostgreSQL could not be reached or dropped the connection."""


class BrokerUnavailable(RetryableError):
    """Redis (the Celery broker) could not be reached."""


class ConcurrencyConflict(RetryableError):
    """A serialization failure, deadlock or lock timeout; retry the batch."""


class StatementTimeout(RetryableError):
    """A statement ran past the chunk's statement_timeout (set under the soft time limit)."""


# --- permanent -----------------------------------------------------------------


class PermanentError(BulkopsError):
    """A failure that trying again will not fix."""


class ConfigError(PermanentError):
    """The configuration (environment) is missing or malformed."""


class UsageError(PermanentError):
    """A request was malformed: unknown option value, bad argument."""


class JobNotFound(PermanentError):
    """No job has that id."""


class ImportPathError(PermanentError):
    """An import path is missing, unreadable or outside BULKOPS_IMPORT_ROOT."""


class InputFormatError(PermanentError):
    """An input file cannot be imported at all (e.g. a required column is missing)."""


class DataError(PermanentError):
    """The database refused a value (type, constraint or key violation).

    Raised by :func:`worker.db.translate` with what PostgreSQL said beside the
    message: the SQLSTATE, the constraint's name, and the 1-based line of COPY
    data the error names (``COPY todos, line 7``), when it names one.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        copy_line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.copy_line = copy_line


class UniqueViolation(DataError):
    """A row's key already exists (SQLSTATE 23505)."""


class CheckViolation(DataError):
    """A row breaks a CHECK constraint (SQLSTATE 23514)."""


class ForeignKeyViolation(DataError):
    """A row points at a parent row that does not exist (SQLSTATE 23503)."""


class UndefinedObject(PermanentError):
    """A database object named by its id does not exist (e.g. a removed large object)."""


class UnencodableValue(DataError):
    """A value cannot be sent to PostgreSQL as text (e.g. a lone surrogate)."""


class SchemaError(PermanentError):
    """The database schema is not at the migration head."""

