"""Which LTSTError a psycopg error becomes, decided by its SQLSTATE.

psycopg raises ``OperationalError`` both for a lost connection and for a statement the server
refused because a value exceeds one of its limits (SQLSTATE class 54: a tsvector over 1 MB, an
index row over 2,704 bytes, a JSON document nested too deep). Only the first means the server is
unavailable; the second is bad input, and retrying it can never succeed. So:

==================================================  ==============================================
SQLSTATE                                            error
==================================================  ==============================================
class 08 (connection exception), 57P01-57P03         :class:`~ltst_memory.errors.DatabaseUnavailableError`
(admin shutdown, crash shutdown, cannot connect      (retry it: the server may come back)
now), 53300 (too many connections), an
``OperationalError`` without a SQLSTATE (psycopg's
own connection-level failures)
class 22 (data exception), class 54 (program limit   :class:`~ltst_memory.errors.ValidationError`
exceeded), class 23 (integrity constraint            naming the field when the server says which
violation)                                           (retrying the same input fails again)
42501 (insufficient privilege: the role lacks a     :class:`~ltst_memory.errors.AccessDeniedError`
grant on one of the library's tables, or a row       (grant the role the library's tables:
policy refused the row)                              docs/security.md)
any other ``OperationalError`` (a cancelled or       :class:`~ltst_memory.errors.DatabaseError`
timed-out statement, a lock or serialization
conflict, a full disk)
==================================================  ==============================================

Every error keeps the server's SQLSTATE in ``sqlstate`` and the psycopg error as ``__cause__``.
Other psycopg errors (``ProgrammingError`` but 42501, ``InternalError``...) are not wrapped: they are bugs or
a schema that is not installed, and their own type says more than a wrapper would.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from ._connection import unavailable
from .errors import AccessDeniedError, DatabaseError, LTSTError, ValidationError

__all__ = ["CLASSIFIED", "classify", "is_connection_failure"]

#: The psycopg error classes :func:`classify` turns into an LTSTError (catch these, then classify).
CLASSIFIED: tuple[type[psycopg.Error], ...] = (
    psycopg.OperationalError,
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.InsufficientPrivilege,
)

_CONNECTION_CODES = frozenset({"57P01", "57P02", "57P03", "53300"})

#: Index or table name (as PostgreSQL reports it) -> the fields of the input that fill it.
_FIELDS_OF = {
    "ltst_term_stats": "user_id together with one word of content or metadata['speaker']",
    "ltst_term_stats_pkey": "user_id together with one word of content or metadata['speaker']",
    "conversation_context": "session_id, context_type and context_key",
    "session_relationships": "source_session_id, target_session_id and relationship_type",
    "conversation_sessions": "session_id / user_id / session_type / status",
    "conversation_messages": "message fields (message_type, metadata)",
    "user_preferences": "user_id, preference_key and preference_type",
}


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot be reached (so a retry may succeed later)."""
    if not isinstance(exc, psycopg.Error):
        return False
    code = exc.sqlstate
    if code is None:
        return isinstance(exc, psycopg.OperationalError)
    return code.startswith("08") or code in _CONNECTION_CODES


def classify(exc: psycopg.Error, conninfo: str, *, replica: bool = False) -> LTSTError:
    """The LTSTError to raise for ``exc`` (raised by a statement on ``conninfo``, or while connecting).

    The caller raises it ``from exc``. The message never contains a password (connection failures go
    through :func:`ltst_memory._connection.unavailable`).
    """
    code = exc.sqlstate
    if is_connection_failure(exc):
        error: LTSTError = unavailable(conninfo, exc, replica=replica)
    elif code is not None and code[:2] in ("22", "23", "54"):
        error = ValidationError(_input_message(exc))
    elif code == "42501":
        error = AccessDeniedError(
            f"the database role may not do this: {_first_line(exc)}; grant it the library's tables "
            "(docs/security.md); nothing was written (the transaction was rolled back)"
        )
    else:
        error = DatabaseError(
            f"PostgreSQL refused the statement ({code or type(exc).__name__}): {_first_line(exc)}; nothing was "
            "written (the transaction was rolled back)"
        )
    error.sqlstate = code  # type: ignore[attr-defined]
    return error


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _input_message(exc: psycopg.Error) -> str:
    """A ValidationError message: what PostgreSQL refused, the field(s) concerned, that nothing was written."""
    diag: Any = exc.diag
    primary = diag.message_primary or _first_line(exc)
    fields = None
    if diag.column_name:
        fields = diag.column_name
    else:
        index = re.search(r'for index "([^"]+)"', primary)
        for name in (index.group(1) if index else None, diag.constraint_name, diag.table_name):
            name = re.sub(r"_\d+$", "", name) if name and name not in _FIELDS_OF else name  # a shard: name_<shard id>
            if name and name in _FIELDS_OF:
                fields = _FIELDS_OF[name]
                break
        if fields is None and "tsvector" in primary:
            fields = "content and metadata['speaker'] (their words are indexed together, at most 1 MB)"
    where = f" (field: {fields})" if fields else ""
    return f"a value is not acceptable to PostgreSQL{where}: {primary} [SQLSTATE {exc.sqlstate}]; nothing was written"
