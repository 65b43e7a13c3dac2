"""Small builders shared by several test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

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


@contextmanager
def scratch_database(admin_dsn: str, template: str | None = None) -> Iterator[str]:
    """Create a brand-new database (a copy of ``template``, or empty), yield its DSN, drop it after."""
    name = f"ltst_test_{os.getpid()}_{next(_databases)}"
    create = "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY" if template else "CREATE DATABASE {}"
    identifiers = [sql.Identifier(name)] + ([sql.Identifier(template)] if template else [])
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(create).format(*identifiers))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
