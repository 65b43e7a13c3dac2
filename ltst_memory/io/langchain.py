"""Import LangChain messages: message dumps and langchain-postgres tables.

* A *message dump* is what ``langchain_core.messages.messages_to_dict`` writes: a JSON list of
  ``{"type": "human"|"ai"|"system"|"tool"|"function"|"chat", "data": {...}}`` (or one per line, or
  ``{session_id: [...]}`` for several sessions). The message's other fields (``additional_kwargs``,
  ``tool_calls``, ``id``, ``name``, ...) are kept under ``metadata["langchain"]``.
* ``PostgresChatMessageHistory`` of langchain-postgres keeps ``(id, session_id uuid, message jsonb,
  created_at)`` rows in a table you named; every ``session_id`` becomes a session, timestamps kept.
* ``PGVector`` (``langchain_pg_collection`` + ``langchain_pg_embedding``) and ``PGVectorStore`` (one
  table per store: ``langchain_id, content, embedding, langchain_metadata``) documents go to the
  LangChain vector store of ltst-memory (``ltst_collections``/``ltst_documents``) with their ids,
  metadata and the very same embedding vectors, so nothing is re-embedded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .._queries import to_vector
from ..errors import ValidationError
from ..models import ConversationMessage, ConversationSession
from ._common import ImportResult, MessageRecord, Progress, SessionRecord, parse_time, run_records, stable_uuid

__all__ = ["import_langchain_messages", "import_langchain_postgres", "import_langchain_vectorstore"]

_ROLES = {"human": "human", "ai": "ai", "system": "system", "tool": "tool", "function": "tool"}
_CHAT_ROLES = {"user": "human", "assistant": "ai", "system": "system", "tool": "tool"}


def langchain_message(obj: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """``(role, content, extra fields)`` of one ``messages_to_dict`` entry."""
    if not isinstance(obj, dict) or "type" not in obj or not isinstance(obj.get("data"), dict):
        raise ValidationError(f"{where}: expected a LangChain message dict {{'type': ..., 'data': {{...}}}}")
    kind, data = str(obj["type"]).lower().removesuffix("messagechunk").removesuffix("message"), obj["data"]
    role = _ROLES.get(kind) or (_CHAT_ROLES.get(str(data.get("role", "")).lower()) if kind == "chat" else None)
    if role is None:
        raise ValidationError(f"{where}: unsupported LangChain message type {obj['type']!r}")
    content = data.get("content")
    if isinstance(content, list):  # content blocks
        content = "\n".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content if b)
    if not isinstance(content, str):
        raise ValidationError(f"{where}: message content must be text")
    extra = {k: v for k, v in data.items() if k != "content" and v not in (None, {}, [], "")}
    extra["type"] = obj["type"]
    return role, content, extra


def _record(session_id: str, user_id: str, items: list[tuple[Any, Any]], source: str) -> SessionRecord:
    """``items`` are ``(message dict, created_at or None)`` in order."""
    record = SessionRecord(ConversationSession(session_id, user_id, metadata={"source": source}))
    occurrences: dict[tuple[str, str], int] = {}
    for position, (obj, created) in enumerate(items):
        role, content, extra = langchain_message(obj, f"{session_id} message #{position}")
        if extra.get("id"):
            message_uuid = stable_uuid("langchain", session_id, "id", extra["id"])
        else:
            occurrences[(role, content)] = occurrences.get((role, content), 0) + 1
            message_uuid = stable_uuid("langchain", session_id, role, content, occurrences[(role, content)])
        record.messages.append(
            MessageRecord(
                ConversationMessage(
                    session_id=session_id,
                    role=role,
                    content=content,
                    metadata={"source": source, "langchain": extra},
                    timestamp=parse_time(created),
                    message_uuid=message_uuid,
                )
            )
        )
    return record


def import_langchain_messages(
    store: Any, path: str | Path, user_id: str, *, session_id: str | None = None, progress: Progress | None = None
) -> ImportResult:
    """Import a LangChain message dump (``messages_to_dict`` output as JSON or JSONL) for ``user_id``."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not UTF-8 text; a LangChain dump is UTF-8 JSON or JSONL") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{path} is neither JSON nor JSONL: {exc}") from None
    default = session_id or f"langchain-{stable_uuid('langchain-file', user_id, Path(path).stem)[:13]}"
    if isinstance(data, dict) and "type" not in data:
        groups = {str(k): v for k, v in data.items()}
    else:
        groups = {default: data if isinstance(data, list) else [data]}
    records = []
    for sid, messages in groups.items():
        if not isinstance(messages, list):
            raise ValidationError(f"session {sid!r}: expected a list of messages")
        records.append(_record(sid, user_id, [(m, None) for m in messages], "langchain"))
    return run_records(store, records, progress=progress)


def _source(dsn: str) -> psycopg.Connection[Any]:
    from pgvector.psycopg import register_vector

    from .._connection import connect

    conn = connect(dsn)
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        conn.rollback()  # no vector type in the source: fine for chat histories
    return conn


def import_langchain_postgres(
    store: Any,
    source_dsn: str,
    user_id: str,
    *,
    table: str = "message_store",
    session_prefix: str = "",
    progress: Progress | None = None,
) -> ImportResult:
    """Import every session of a langchain-postgres ``PostgresChatMessageHistory`` table.

    Each ``session_id`` of ``table`` becomes the session ``session_prefix + session_id`` of
    ``user_id``; messages keep their order (``id``) and ``created_at``.
    """
    with _source(source_dsn) as conn:
        try:
            rows = conn.execute(
                sql.SQL("SELECT id, session_id::text AS session_id, message, created_at FROM {} ORDER BY id").format(
                    sql.Identifier(*table.split("."))
                )
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            raise ValidationError(f"table {table!r} does not exist in the source database") from None
    groups: dict[str, list[tuple[Any, Any]]] = {}
    for _id, sid, message, created in rows:
        groups.setdefault(sid, []).append((message, created))
    records = [_record(session_prefix + sid, user_id, items, "langchain-postgres") for sid, items in groups.items()]
    return run_records(store, records, progress=progress)


# --------------------------------------------------------------------------- vector stores

UPSERT_COLLECTION = """
INSERT INTO ltst_collections (user_id, collection, dimension, embedding_model, metadata)
VALUES (%(owner)s, %(collection)s, %(dimension)s, %(embedding_model)s, %(metadata)s)
ON CONFLICT (user_id, collection) DO NOTHING
"""
SELECT_COLLECTION = "SELECT dimension FROM ltst_collections WHERE user_id = %(owner)s AND collection = %(collection)s"
INSERT_DOCUMENT = """
INSERT INTO ltst_documents (user_id, collection, document_id, content, metadata, embedding)
VALUES (%(owner)s, %(collection)s, %(document_id)s, %(content)s, %(metadata)s, %(embedding)s)
ON CONFLICT (user_id, collection, document_id) DO NOTHING
"""
COUNT_DOCUMENTS = "SELECT count(*) FROM ltst_documents WHERE user_id = %(owner)s AND collection = %(collection)s"


def _vector_rows_v1(conn: psycopg.Connection[Any], collection: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    try:
        rows = conn.execute(
            "SELECT e.id, e.document, e.cmetadata, e.embedding FROM langchain_pg_embedding AS e "
            "JOIN langchain_pg_collection AS c ON c.uuid = e.collection_id WHERE c.name = %s ORDER BY e.id",
            (collection,),
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        raise ValidationError("no langchain_pg_collection / langchain_pg_embedding tables in the source") from None
    return [(str(i), d or "", m or {}, e) for i, d, m, e in rows]


def _vector_rows_v2(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    from psycopg.rows import dict_row

    try:
        cur = conn.cursor(row_factory=dict_row)
        rows = cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(*table.split(".")))).fetchall()
    except psycopg.errors.UndefinedTable:
        raise ValidationError(f"table {table!r} does not exist in the source database") from None
    out = []
    for row in rows:
        if not {"langchain_id", "content", "embedding"} <= set(row):
            raise ValidationError(f"{table!r} is not a PGVectorStore table (langchain_id, content, embedding)")
        metadata = dict(row.get("langchain_metadata") or {})
        for key, value in row.items():  # extra metadata columns of the table
            if key not in ("langchain_id", "content", "embedding", "langchain_metadata") and value is not None:
                metadata[key] = value if isinstance(value, (str, int, float, bool, list, dict)) else str(value)
        out.append((str(row["langchain_id"]), row["content"], metadata, row["embedding"]))
    return sorted(out, key=lambda r: r[0])


def import_langchain_vectorstore(
    store: Any,
    source_dsn: str,
    *,
    collection: str | None = None,
    table: str | None = None,
    target_collection: str | None = None,
    embedding_model: str | None = None,
    user_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Copy a langchain-postgres vector store into the ltst-memory LangChain vector store tables.

    Give ``collection`` for ``PGVector`` (the ``langchain_pg_*`` tables) or ``table`` for a
    ``PGVectorStore`` table. Documents keep their ids, text, metadata and embedding vectors (open
    the ltst vector store with the same embedding model); existing ids are left alone, so the
    import can be repeated. ``target_collection`` defaults to the source collection/table name.
    The documents belong to ``user_id`` (``LTSTVectorStore(storage, user_id=...)`` sees them); without
    it they are shared rows (owner ``' '``, seen by ``LTSTVectorStore(..., unscoped=True)`` only).
    """
    from ..models import check_id

    owner = " " if user_id is None else check_id("user_id", user_id)
    if (collection is None) == (table is None):
        raise ValidationError("give exactly one of collection= (PGVector) or table= (PGVectorStore)")
    with _source(source_dsn) as conn:
        rows = _vector_rows_v1(conn, collection) if collection is not None else _vector_rows_v2(conn, str(table))
    rows = [(i, d, m, np.asarray(to_vector(e), dtype=np.float32)) for i, d, m, e in rows]
    name = target_collection or collection or str(table)
    result = ImportResult(sessions_seen=1, messages_seen=len(rows))
    if not rows:
        return result
    dimension = len(rows[0][3])
    pool = store.pool
    with pool.connection() as conn, conn.transaction():
        if conn.execute("SELECT to_regclass('ltst_documents') IS NULL").fetchone()[0]:
            raise ValidationError("this database has no ltst_documents table; run `ltst migrate` first")
        found = conn.execute(SELECT_COLLECTION, {"owner": owner, "collection": name}).fetchone()
        if found is not None and found[0] not in (None, dimension):
            raise ValidationError(f"collection {name!r} holds {found[0]}-dimensional vectors, the source {dimension}")
        cur = conn.execute(
            UPSERT_COLLECTION,
            {
                "owner": owner,
                "collection": name,
                "dimension": dimension,
                "embedding_model": embedding_model,
                "metadata": Jsonb({"source": "langchain-postgres"}),
            },
        )
        result.sessions_created = cur.rowcount
        with conn.cursor() as cur:
            before = conn.execute(COUNT_DOCUMENTS, {"owner": owner, "collection": name}).fetchone()[0]
            cur.executemany(
                INSERT_DOCUMENT,
                [
                    {
                        "owner": owner,
                        "collection": name,
                        "document_id": i,
                        "content": d,
                        "metadata": Jsonb(m),
                        "embedding": e,
                    }
                    for i, d, m, e in rows
                ],
            )
            after = conn.execute(COUNT_DOCUMENTS, {"owner": owner, "collection": name}).fetchone()[0]
        result.other_rows_added = int(after - before)
    if progress is not None:
        progress(len(rows))
    if result.other_rows_added == 0 and rows:
        result.skipped = len(rows)
    return result
