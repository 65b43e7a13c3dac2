"""The tables ltst-memory owns, and the column that names each row's user: the one list that Row Level
Security, erasure (``delete_user``) and retention act on. A table not listed here is never touched.

The migrations keep the same list in the database table ``ltst_owned_tables`` (filled by
``schema/0009_owned_tables.sql`` through ``ltst_own_table(...)``), because the SQL functions
``ltst_delete_user`` and ``ltst_enable_rls_on_owned_tables`` read it; ``tests/test_boundaries.py``
checks that the database's list equals :data:`OWNED_TABLES`.

A later migration that adds a table (or an owner column to a listed one) calls, in SQL::

    SELECT ltst_own_table('my_table', 'user_id', NULL, 75);   -- table, user column, session columns, erase order
    SELECT ltst_enable_rls_on_owned_tables();                 -- policies on every listed table that has its column

and adds the same :class:`OwnedTable` here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ADAPTER_TABLES", "CORE_TABLES", "OWNED_TABLES", "OwnedTable", "owned_table_names"]


@dataclass(frozen=True)
class OwnedTable:
    """One table of the library.

    ``user_column`` names the row's user (``None``: the table has no owner column). A table whose
    ``user_column`` does not exist (yet) in the database is not under the user policy and cannot be
    erased by user: ``delete_user`` then reports it as not reached when it holds rows.
    ``session_columns`` are the columns naming a session: rows of a table without its user column are
    erased through them (the user's sessions) and its RLS policy follows the session's owner.
    ``erase_order``: ``delete_user`` empties tables in this order (sessions last).
    ``kind``: the name of the table's count in ``delete_user``'s result.
    """

    name: str
    user_column: str | None
    session_columns: tuple[str, ...] = ()
    erase_order: int = 50
    kind: str = ""

    @property
    def result_key(self) -> str:
        return self.kind or self.name


#: Tables of the core store.
CORE_TABLES: tuple[OwnedTable, ...] = (
    OwnedTable("conversation_messages", "user_id", ("session_id",), 10, "messages"),
    OwnedTable("conversation_context", "user_id", ("session_id",), 20, "context"),
    OwnedTable("user_preferences", "user_id", (), 30, "preferences"),
    OwnedTable("ltst_retention_policies", "user_id", (), 40, "retention_policies"),
    OwnedTable("ltst_term_stats", "user_id", (), 50, "term_stats"),
    OwnedTable("ltst_user_stats", "user_id", (), 51, "user_stats"),
    # the term indexes of large users (schema/0016_lexical_index.sql; ltst_memory/lexical_index.py)
    OwnedTable("ltst_lexical_postings", "user_id", (), 52, "lexical_postings"),
    OwnedTable("ltst_lexical_indexes", "user_id", (), 53, "lexical_indexes"),
    # messages of store_message whose words are not in ltst_term_stats yet (schema/0018_append_one.sql)
    OwnedTable("ltst_term_pending", "user_id", (), 54, "term_pending"),
    # keyed by session (a user_id column exists only on databases converted for Citus)
    OwnedTable("session_relationships", "user_id", ("source_session_id", "target_session_id"), 80, "relationships"),
    OwnedTable("session_summary", "user_id", ("session_id",), 81, "summaries"),
    OwnedTable("conversation_sessions", "user_id", ("session_id",), 100, "sessions"),
    # no user data
    OwnedTable("ltst_metadata", None, (), 200),
    OwnedTable("ltst_migrations", None, (), 201),
    OwnedTable("ltst_owned_tables", None, (), 202),
    OwnedTable("ltst_pinned_roles", None, (), 203),
)

#: Tables of the framework adapters (schema/0003_adapters.sql). Their owner column ``user_id`` is added
#: by migration 0010 (adapters); until then they are not under RLS and ``delete_user`` reports them as
#: not reached when they hold rows.
ADAPTER_TABLES: tuple[OwnedTable, ...] = (
    OwnedTable("ltst_store_vectors", "user_id", (), 60, "store_vectors"),
    OwnedTable("ltst_store_items", "user_id", (), 61, "store_items"),
    OwnedTable("ltst_documents", "user_id", (), 62, "documents"),
    OwnedTable("ltst_collections", "user_id", (), 63, "collections"),
)

#: Every table the library owns, in erase order.
OWNED_TABLES: tuple[OwnedTable, ...] = tuple(sorted(CORE_TABLES + ADAPTER_TABLES, key=lambda t: t.erase_order))


def owned_table_names() -> frozenset[str]:
    """The names of :data:`OWNED_TABLES`."""
    return frozenset(t.name for t in OWNED_TABLES)
