"""Small builders shared by several test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ltst_memory import ConversationMessage


def speaker_turns(session_id: str, turns: list[tuple[str, str]], start: datetime) -> list[ConversationMessage]:
    """Alternating human/ai messages with the speaker's name in metadata, one minute apart."""
    return [
        ConversationMessage(
            session_id=session_id,
            role="human" if i % 2 == 0 else "ai",
            content=text,
            metadata={"speaker": speaker},
            timestamp=start + timedelta(minutes=i),
        )
        for i, (speaker, text) in enumerate(turns)
    ]


_databases = itertools.count()


def _new_name() -> str:
    return f"ltst_test_{os.getpid()}_{next(_databases)}"


def _create(conn: psycopg.Connection, name: str, template: str | None) -> None:
    # WAL_LOG copies the template's blocks through the WAL: no checkpoint, unlike FILE_COPY (about a
    # third of the time for our small template)
    create = "CREATE DATABASE {} TEMPLATE {} STRATEGY WAL_LOG" if template else "CREATE DATABASE {}"
    identifiers = [sql.Identifier(name)] + ([sql.Identifier(template)] if template else [])
    conn.execute(sql.SQL(create).format(*identifiers))


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(admin_dsn: str, template: str | None = None) -> Iterator[str]:
    """Create a brand-new database (a copy of ``template``, or empty), yield its DSN, drop it after."""
    name = _new_name()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        _create(conn, name, template)
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            _drop(conn, name)


class DatabaseSupply:
    """Brand-new copies of ``template``, made ahead of time by a background thread, which also drops
    them once used: a test waits for neither (the server works on them while the test's own Python
    runs). Every database is used by one test only, then dropped."""

    def __init__(self, admin_dsn: str, template: str, ahead: int = 4) -> None:
        self._admin_dsn = admin_dsn
        self._template = template
        self._ahead = ahead
        self._ready: deque[str] = deque()
        self._used: deque[str] = deque()
        self._error: BaseException | None = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="ltst-test-databases", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The name of a database nobody has used."""
        with self._changed:
            self._changed.wait_for(lambda: self._ready or self._error is not None)
            if self._error is not None:
                raise RuntimeError(f"the test database supply failed: {self._error!r}") from self._error
            name = self._ready.popleft()
            self._changed.notify_all()
            return name

    def give_back(self, name: str) -> None:
        """``name`` is used: drop it (soon, in the background)."""
        with self._changed:
            self._used.append(name)
            self._changed.notify_all()

    def dsn(self, name: str) -> str:
        return make_conninfo(self._admin_dsn, dbname=name)

    def close(self) -> None:
        """Drop every database left (ready or used) and stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()

    def _next_job(self) -> tuple[str, str] | None:
        with self._changed:
            while True:
                if self._used:
                    return "drop", self._used.popleft()
                if self._closing:
                    return ("drop", self._ready.popleft()) if self._ready else None
                if len(self._ready) < self._ahead and self._error is None:
                    return "create", _new_name()
                self._changed.wait()

    def _work(self) -> None:
        conn: psycopg.Connection | None = None
        try:
            while (job := self._next_job()) is not None:
                action, name = job
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._admin_dsn, autocommit=True)
                if action == "drop":
                    _drop(conn, name)
                    continue
                _create(conn, name, self._template)
                with self._changed:
                    self._ready.append(name)
                    self._changed.notify_all()
        except BaseException as exc:  # a test that needs a database says why it has none
            with self._changed:
                self._error = exc
                self._changed.notify_all()
        finally:
            if conn is not None:
                conn.close()


#: The BM25 statistics as readers see them (schema/0018_append_one.sql): the counted ones plus the
#: messages still pending in ltst_term_pending; per (user_id, term): documents, in order (TERM_STATS_KEPT),
#: per user: documents and total length (USER_STATS_KEPT). What a recount of the stored messages gives.
TERM_STATS_KEPT = """
SELECT user_id, term, sum(doc_count)::bigint FROM (
    SELECT user_id, term, doc_count FROM ltst_term_stats
    UNION ALL
    SELECT p.user_id, t.term, 1 FROM ltst_term_pending AS p
    JOIN conversation_messages AS m ON m.message_id = p.message_id AND m.user_id = p.user_id
    CROSS JOIN LATERAL unnest(tsvector_to_array(m.search_tsv)) AS t(term)
) AS s GROUP BY 1, 2 ORDER BY 1, 2
"""
USER_STATS_KEPT = """
SELECT user_id, sum(n)::bigint, sum(len)::bigint FROM (
    SELECT user_id, doc_count AS n, total_length AS len FROM ltst_user_stats
    UNION ALL
    SELECT p.user_id, 1, length(m.search_tsv) FROM ltst_term_pending AS p
    JOIN conversation_messages AS m ON m.message_id = p.message_id AND m.user_id = p.user_id
) AS s GROUP BY 1 ORDER BY 1
"""


_roles = itertools.count()

#: The ordinary read/write grants of an application role (docs/security.md).
APP_ROLE_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}",
)


def as_role(dsn: str, role: str) -> str:
    """``dsn`` logging in as ``role`` (no password: the test server trusts local connections)."""
    params = conninfo_to_dict(dsn)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo("", **params)


@contextmanager
def login_role(dsn: str, prefix: str, grants: tuple[str, ...] = APP_ROLE_GRANTS) -> Iterator[str]:
    """A new LOGIN role on ``dsn``'s database that owns no table, with ``grants`` (``{}`` is the
    role); yields a DSN that logs in as it, and drops the role (and what it owns) afterwards."""
    role = f"{prefix}_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for statement in grants:
            conn.execute(sql.SQL(statement).format(sql.Identifier(role)))
    try:
        yield as_role(dsn, role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                (role,),
            )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
