"""The exception tree of ltst-memory.

Every error the library raises on purpose derives from :class:`LTSTError`, so
``except LTSTError`` catches them all. Errors about bad arguments are also
:class:`ValueError` (``ValidationError``) and lookups of missing rows are also
:class:`LookupError`, so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "LTSTError",
    "MigrationError",
    "NotFoundError",
    "SessionExistsError",
    "SessionNotFoundError",
    "StoreClosedError",
    "ValidationError",
]


class LTSTError(Exception):
    """Root of every error raised by ltst-memory."""


class ValidationError(LTSTError, ValueError):
    """An argument or a field of a data class is not acceptable; nothing was written."""


class ConfigurationError(LTSTError):
    """The library is configured in a way that cannot work (bad DSN, missing extra, ...)."""


class NotFoundError(LTSTError, LookupError):
    """A row that the call needs does not exist."""


class SessionNotFoundError(NotFoundError):
    """The session id names no stored session."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} does not exist; create it with create_session() first")
        self.session_id = session_id


class SessionExistsError(LTSTError):
    """``create_session`` was given the id of a session that already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists; pick another id or use get_session() to load it")
        self.session_id = session_id


class EmbeddingError(LTSTError):
    """The embedder failed or returned something unusable."""


class EmbeddingDimensionError(EmbeddingError):
    """The embedder's dimension differs from the one the database was set up with."""


class DatabaseUnavailableError(LTSTError):
    """The database cannot be reached or started (a connection failure: SQLSTATE class 08, an admin
    or crash shutdown, too many connections). Retrying later may succeed. The message never contains
    a password. ``sqlstate`` holds the server's code when there is one."""


class DatabaseError(LTSTError):
    """PostgreSQL refused a statement for a reason that is neither the input nor the connection: a
    cancelled or timed-out statement, a lock or serialization conflict, a full disk. Nothing was
    written. ``sqlstate`` holds the server's code (docs/reliability.md)."""


class MigrationError(LTSTError):
    """A schema migration failed or the database holds a migration that differs from ours."""


class AccessDeniedError(LTSTError, PermissionError):
    """A user-scoped store was asked for another user's data."""


class StoreClosedError(LTSTError):
    """The store was used after ``close()``."""
