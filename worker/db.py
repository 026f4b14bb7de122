"""Engine, session scopes, savepoints, COPY, and driver-error translation.

The engine is never built at import time: a worker builds one per process
after the fork (``worker_process_init``), a producer on first use. Driver
errors (psycopg2 / SQLAlchemy) are translated into :mod:`worker.errors` here
and only here, keeping the cause.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg2
import sqlalchemy.exc as sa_exc
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from worker.config import Settings, get_settings
from worker.errors import (
    BulkopsError,
    CheckViolation,
    ConcurrencyConflict,
    DatabaseUnavailable,
    DataError,
    ForeignKeyViolation,
    SchemaError,
    StatementTimeout,
    UndefinedObject,
    UnencodableValue,
    UniqueViolation,
)

_engine: Engine | None = None
_engine_lock = threading.Lock()

# SQLSTATE classes -> our error tree.
_CONFLICT_CODES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_UNAVAILABLE_PREFIXES = ("08", "57P")  # connection exceptions, admin shutdown / crash
_SCHEMA_CODES = {"42P01", "42703"}  # undefined table / column
_TIMEOUT_CODES = {"57014"}  # query_canceled: statement_timeout
_UNDEFINED_OBJECT = "42704"  # e.g. a large object that does not exist


def build_engine(settings: Settings | None = None, **overrides: Any) -> Engine:
    """A pooled engine with the pool settings of ``settings`` (default: those in use)."""
    s = settings or get_settings()
    options: dict[str, Any] = {
        "pool_size": s.db_pool_size,
        "max_overflow": s.db_max_overflow,
        "pool_timeout": s.db_pool_timeout,
        "pool_recycle": s.db_pool_recycle,
        "pool_pre_ping": s.db_pool_pre_ping,
        "connect_args": {"application_name": "bulkops", "connect_timeout": 10},
    }
    options.update(overrides)
    return create_engine(s.sqlalchemy_url, **options)


def get_engine() -> Engine:
    """This process's engine, built on first use."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = build_engine()
    return _engine


def init_engine() -> Engine:
    """Drop any engine inherited across a fork and build a fresh one."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = build_engine()
    return _engine


def dispose_engine() -> None:
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None


@contextlib.contextmanager
def installed(engine: Engine) -> Iterator[Engine]:
    """``get_engine()`` returns ``engine`` inside the block, the previous one after.

    Whatever engine is in use when the block ends (``engine``, or one rebuilt
    after :func:`dispose_engine`) is disposed. See ``worker.app.using``.
    """
    global _engine
    with _engine_lock:
        previous, _engine = _engine, engine
    try:
        yield engine
    finally:
        with _engine_lock:
            current, _engine = _engine, previous
        if current is not None:
            current.dispose()


def translate(exc: BaseException) -> BulkopsError:
    """Map a driver error to the project's error tree (the cause is kept by callers)."""
    if isinstance(exc, BulkopsError):
        return exc
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "pgcode", None) or ""
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if code in _CONFLICT_CODES:
        return ConcurrencyConflict(message)
    if code in _TIMEOUT_CODES:
        return StatementTimeout(message)
    if code.startswith(_UNAVAILABLE_PREFIXES):
        return DatabaseUnavailable(message)
    if code in _SCHEMA_CODES:
        return SchemaError(f"{message} (run `bulkops migrate`)")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(message)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return DatabaseUnavailable(message)
    # Raw psycopg2 errors (e.g. from copy_expert) are not wrapped by SQLAlchemy: a
    # connection lost mid-COPY has no SQLSTATE and must stay retryable.
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return DatabaseUnavailable(message)
    if isinstance(exc, UnicodeError):
        return UnencodableValue(f"a value cannot be stored as text: {exc}")
    return refusal(orig, code, message)


# SQLSTATE -> the typed refusal; anything else refused is a plain DataError.
_REFUSALS: dict[str, type[DataError]] = {
    "23505": UniqueViolation,
    "23514": CheckViolation,
    "23503": ForeignKeyViolation,
}
_COPY_LINE = re.compile(r"\bCOPY [\w.\"]+, line (\d+)")


def refusal(orig: BaseException, code: str, message: str) -> DataError:
    """The typed DataError for a refused statement, with the constraint and COPY line."""
    diag = getattr(orig, "diag", None)
    found = _COPY_LINE.search(getattr(diag, "context", None) or "")
    return _REFUSALS.get(code, DataError)(
        message,
        sqlstate=code or None,
        constraint=getattr(diag, "constraint_name", None),
        copy_line=int(found.group(1)) if found else None,
    )


def is_driver_error(exc: BaseException) -> bool:
    import psycopg2

    return isinstance(exc, sa_exc.SQLAlchemyError | psycopg2.Error)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver errors raised inside the block as :mod:`worker.errors`."""
    try:
        yield
    except BulkopsError:
        raise
    except Exception as exc:
        if is_driver_error(exc):
            raise translate(exc) from exc
        raise


@contextlib.contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session on the pooled engine: commit on success, roll back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            with translated():
                yield session
                session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                session.rollback()
            raise


_savepoint_ids = itertools.count(1)


@contextlib.contextmanager
def savepoint(session: Session, *, keep: bool = True) -> Iterator[None]:
    """A SAVEPOINT: errors inside roll back to it and propagate, translated.

    With ``keep=False`` the block is a trial: rolled back even when it succeeds.
    The enclosing transaction stays usable either way. Savepoints are ours,
    not SQLAlchemy's ``begin_nested``, because ``ROLLBACK TO`` leaves the
    savepoint in place: everything after it would run nested inside, and each
    level that writes takes one of PostgreSQL's 64 cached subtransaction ids.
    So a rolled-back savepoint is released at once.
    """
    name = f"bulkops_sp_{next(_savepoint_ids)}"
    session.execute(text(f"SAVEPOINT {name}"))
    try:
        with translated():
            yield
    except BaseException:
        with contextlib.suppress(Exception):  # a dead connection: the error above says why
            _undo(session, name)
        raise
    if keep:
        with translated():
            session.execute(text(f"RELEASE SAVEPOINT {name}"))
    else:
        _undo(session, name)


def _undo(session: Session, name: str) -> None:
    with translated():
        session.execute(text(f"ROLLBACK TO SAVEPOINT {name}"))
        session.execute(text(f"RELEASE SAVEPOINT {name}"))


def pg_copy_text(value: Any) -> str:
    """One value in PostgreSQL COPY text format."""
    if value is None:
        return r"\N"
    s = value if isinstance(value, str) else str(value)
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def array_literal(values: Iterable[Any]) -> str:
    """The values' text as one PostgreSQL array literal, to bind as a single string and cast
    in the query (:func:`array_param`, any element type).

    Binding a list makes psycopg2 quote it element by element: for a chunk's
    20k keys that took as long as the query that used them (180 -> 88 ms).
    Every element is quoted, so ``NULL`` and ``""`` stay text; there is no NULL element.
    """
    texts = [v if type(v) is str else str(v) for v in values]
    if not texts:
        return "{}"
    body = "\x00".join(texts)  # NUL: in no value (PostgreSQL text cannot hold one)
    if body.count("\x00") != len(texts) - 1:
        raise ValueError("a NUL character in an array element")
    if "\\" in body or '"' in body:
        body = body.replace("\\", "\\\\").replace('"', '\\"')
    return '{"' + body.replace("\x00", '","') + '"}'


def array_param(name: str, sql_type: str) -> str:
    """SQL for the bound :func:`array_literal` ``:name`` as a ``sql_type`` array. The
    parameter is cast as text first: asyncpg (the async client) types a parameter by
    its context and would want a list for ``CAST(:name AS text[])``."""
    return f"CAST(CAST(:{name} AS text) AS {sql_type}[])"


@functools.lru_cache(maxsize=16)
def _line_format(width: int) -> str:
    return "\t".join(["%s"] * width)


def _copy_line(row: Sequence[Any]) -> str:
    """One row in COPY text format: formatted at once, escaped only when needed.

    ``%s`` is ``str()`` of each value; a NULL (None) or a value with a tab, a
    line break or a backslash takes the value-by-value way.
    """
    if type(row) is tuple and None not in row:
        line = _line_format(len(row)) % row
    else:
        line = "\t".join([r"\N" if v is None else v if type(v) is str else str(v) for v in row])
    if "\\" in line or "\n" in line or "\r" in line or line.count("\t") != len(row) - 1:
        line = "\t".join(map(pg_copy_text, row))
    return line


def copy_rows(
    session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY rows into ``table`` on the session's connection; returns the row count.

    ``table`` and ``columns`` are identifiers from our own code, never input;
    values travel as COPY data, never as SQL text. A value that cannot be
    encoded raises :class:`UnencodableValue` naming its row (``copy_line``), as
    PostgreSQL names the line of a value it refuses.
    """
    lines = [_copy_line(row) for row in rows]
    if not lines:
        return 0
    lines.append("")
    text_data = "\n".join(lines)
    try:
        data = text_data.encode("utf-8")
    except UnicodeEncodeError as exc:
        row = text_data.count("\n", 0, exc.start) + 1
        raise UnencodableValue(
            f"row {row}: a value is not valid Unicode ({exc.reason}) and cannot be stored",
            copy_line=row,
        ) from None
    _copy_bytes(session, table, columns, data)
    return len(lines) - 1


def _copy(session: Session, table: str, columns: Sequence[str], data: Any, size: int) -> None:
    dbapi_conn = session.connection().connection.driver_connection
    assert dbapi_conn is not None
    with translated(), dbapi_conn.cursor() as cur:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        cur.copy_expert(sql, data, size=size)


def _copy_bytes(session: Session, table: str, columns: Sequence[str], data: bytes) -> None:
    # One read of the whole buffer, not psycopg2's default of 8 KiB at a time.
    _copy(session, table, columns, io.BytesIO(data), max(len(data), 8192))


def copy_stream(session: Session, table: str, columns: Sequence[str], parts: Iterable[str]) -> None:
    """One COPY of COPY-text ``parts`` as they are made; an exception in making them
    propagates as it was raised (the rows sent before it stay in the transaction).

    PostgreSQL stores each part while the next is made, on the other core:
    the client waits for the server only once, at the end.
    """
    stream = _Parts(iter(parts))
    _copy(session, table, columns, stream, 1 << 16)
    if stream.error is not None:
        raise stream.error


class _Parts:
    """Text parts as the file psycopg2's ``copy_expert`` reads (each read: the next part).

    psycopg2 words an exception raised in ``read`` as a failed COPY, so it is
    kept for :func:`copy_stream` to raise, and the COPY ends there.
    """

    def __init__(self, parts: Iterator[str]) -> None:
        self._parts = parts
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            for part in self._parts:
                if part:  # an empty read would end the COPY
                    return part.encode("utf-8")
        except BaseException as exc:  # noqa: BLE001 - raised again by copy_stream
            self.error = exc
        return b""


def open_large_object(dbapi_conn: Any, oid: int, mode: str = "rb") -> Any:
    """psycopg2's ``lobject`` on a raw connection; :class:`UndefinedObject` if it is gone."""
    with translated():
        try:
            return dbapi_conn.lobject(oid, mode)
        except psycopg2.Error as exc:
            # psycopg2 raises it as an OperationalError with no SQLSTATE: not a lost
            # connection (retrying will not bring it back), so its text is all there is.
            if exc.pgcode == _UNDEFINED_OBJECT or "does not exist" in str(exc):
                raise UndefinedObject(f"large object {oid} does not exist") from None
            raise


def ping(engine: Engine | None = None) -> None:
    """One round trip to PostgreSQL; raises DatabaseUnavailable."""
    with translated(), (engine or get_engine()).connect() as conn:
        conn.execute(text("SELECT 1"))
