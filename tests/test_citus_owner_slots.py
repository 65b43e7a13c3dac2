"""Every statement of the library that names a session by a bound value also says whose session it is:
it has an owner slot (``ltst_memory._queries.owner``), or it names its user already, or it asks every
shard by design (listed below with the reason). On a Citus cluster a slot filled with the owner routes
the statement to one shard; a statement with neither would silently ask every shard.

The statements are found by walking the module constants of the library (strings, and strings inside
dicts), and the SQL its builder functions return for every scope; no database is needed.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator

import ltst_memory.adapters as adapters
import pytest

import ltst_memory
from ltst_memory import _queries as q
from ltst_memory import _recall_queries as rq

#: A session named by a bound value: ``[alias.][source_|target_]session_id = %(..)s``, ``= ANY(%(..)s)``,
#: ``IN (%(..)s, ...)``, or sessions given as an array that is unnested.
NAMES_A_SESSION = re.compile(
    r"(?<![\w.])(?:\w+\.)?(?:source_|target_)?session_id\s*(?:=\s*(?:ANY\s*\(\s*)?|IN\s*\(\s*)%\("
    r"|unnest\(%\(session_ids\)s"
)
#: The statement names its user by a bound value already (the distribution column, routed by Citus).
NAMES_ITS_USER = re.compile(r"(?<![\w.])(?:\w+\.)?user_id\s*=\s*%\(\w+\)s")

#: Statements that name a session and ask every shard on purpose, with the reason.
EVERY_SHARD = {
    "ltst_memory._queries.SESSION_OWNER_ANYWHERE": "checks a remembered owner: the session's owner, wherever it is",
    "ltst_memory._queries.SESSION_ID_TAKEN": "a new session id must be free among every user's sessions",
    "ltst_memory.scoped.SELECT_FOREIGN_SESSIONS": "looks for the session among other users' sessions",
}


def statements() -> Iterator[tuple[str, str]]:
    """``(name, sql)`` of every module-level string (or string in a module-level dict) of the library."""
    packages = [(ltst_memory.__path__, "ltst_memory."), (adapters.__path__, "ltst_memory.adapters.")]
    for info in (i for path, prefix in packages for i in pkgutil.walk_packages(path, prefix)):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an adapter whose framework is not installed
            continue
        for name, value in vars(module).items():
            if isinstance(value, str):
                yield f"{info.name}.{name}", value
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, str):
                        yield f"{info.name}.{name}[{key!r}]", item
    for scope in q.SEARCH_SCOPES:
        yield f"search_messages_sql({scope!r})", q.search_messages_sql(scope)
    for scope in (rq.SCOPE_SESSION, rq.SCOPE_SESSIONS):
        for scan in (False, True):
            for neighbours in (False, True):
                sql = rq.vector_sql(
                    scope=scope, filters="", all_users=False, with_embedding=False, with_neighbors=neighbours, scan=scan
                )
                yield f"vector_sql({scope!r}, scan={scan}, neighbours={neighbours})", sql
                sql = rq.lexical_pool_sql(
                    scope=scope, filters="", all_users=False, with_neighbors=neighbours, scan=scan
                )
                yield f"lexical_pool_sql({scope!r}, scan={scan}, neighbours={neighbours})", sql
            yield (
                f"lexical_sql({scope!r}, scan={scan})",
                rq.lexical_sql(scope=scope, filters="", all_users=False, scan=scan),
            )


def test_every_statement_that_names_a_session_says_whose_it_is() -> None:
    found = [(name, sql) for name, sql in statements() if NAMES_A_SESSION.search(sql)]
    assert len(found) > 30  # the walk sees the library's statements
    lacking = [
        name
        for name, sql in found
        if not q.has_owner(sql) and not NAMES_ITS_USER.search(sql) and name not in EVERY_SHARD
    ]
    assert lacking == [], f"statements that name a session without an owner slot: {lacking}"
    names = {name for name, _ in found}
    assert set(EVERY_SHARD) <= names, "an EVERY_SHARD entry names no statement of the library"


def test_a_filled_slot_names_the_owner_where_it_was_written() -> None:
    assert q.routed(q.SELECT_MESSAGES) == q.SELECT_MESSAGES.replace(
        "session_id = %(session_id)s /*owner*/", "session_id = %(session_id)s AND user_id = %(session_owner)s"
    )
    assert "AND m.user_id = %(session_owner)s" in q.routed(rq.SELECT_MESSAGES_AT)
    routed_related = q.routed(q.SELECT_RELATED_SESSIONS)
    assert "o.session_id = %(session_id)s AND o.user_id = %(session_owner)s" in routed_related
    assert ") AND user_id = %(session_owner)s" in routed_related  # after the parenthesized OR of both ends


@pytest.mark.parametrize(
    "name", ["SELECT_MESSAGES", "COUNT_SESSION_ROWS", "WRITE_SESSION_SUMMARY", "EXACT_SEARCH_IN_SESSION"]
)
def test_every_slot_is_filled(name: str) -> None:
    sql = getattr(q, name, None) or getattr(rq, name)
    assert q.has_owner(sql)
    filled = q.routed(sql)
    assert not q.has_owner(filled) and "/*" not in filled
    assert filled.count("%(session_owner)s") == sql.count("/*owner")
