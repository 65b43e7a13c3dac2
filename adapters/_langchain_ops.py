"""SQL and operations of the LangChain adapter (chat history and vector store). No framework import.

Operations are generators of :class:`~ltst_memory._ops.Query`, run in one transaction by a store's
executor (see :mod:`ltst_memory._ops`). Vectors are computed by the caller (LangChain embeddings of
any dimension) and handed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ltst_memory import _ops as core_ops
from ltst_memory._ops import Op, Query
from ltst_memory.errors import (
    AccessDeniedError,
    EmbeddingDimensionError,
    SessionExistsError,
    ValidationError,
)
from ltst_memory.models import ConversationSession, check_id, check_json, check_limit, check_text

from ._common import JsonFilter

# --------------------------------------------------------------------------- chat history


def ensure_session(core: Any, session_id: str, user_id: str | None, default_user: str) -> Op[str]:
    """Create the session when absent; return its owner. A different ``user_id`` is refused."""
    session = yield from core_ops.get_session(core, session_id)
    if session is None:
        try:
            session = yield from core_ops.create_session(
                core, ConversationSession(session_id=session_id, user_id=user_id or default_user)
            )
        except SessionExistsError:  # created concurrently between our read and our insert
            session = yield from core_ops.get_session(core, session_id)
    if user_id is not None and session.user_id != user_id:
        raise AccessDeniedError(f"session {session_id!r} belongs to another user")
    return session.user_id


DELETE_SESSION_MESSAGES = "DELETE FROM conversation_messages WHERE session_id = %(session_id)s"


def clear_messages(core: Any, session_id: str) -> Op[int]:
    """Delete every message of the session (the session itself stays)."""
    params = {"session_id": check_id("session_id", session_id)}
    yield from core_ops._require_session(params["session_id"])
    removed = yield Query(DELETE_SESSION_MESSAGES, params, fetch="rowcount")
    return int(removed)


def all_messages(core: Any, session_id: str, page: int = 10_000) -> Op[list[Any]]:
    """Every message of the session, oldest first (read page by page in one transaction)."""
    out: list[Any] = []
    while True:
        batch = yield from core_ops.get_messages(core, session_id, limit=page, offset=len(out))
        out.extend(batch)
        if len(batch) < page:
            return out


# --------------------------------------------------------------------------- vector store

INSERT_COLLECTION = """
INSERT INTO ltst_collections (collection) VALUES (%(collection)s) ON CONFLICT (collection) DO NOTHING
"""
SELECT_COLLECTION = """
SELECT collection, dimension, embedding_model FROM ltst_collections WHERE collection = %(collection)s
"""
LOCK_COLLECTION = SELECT_COLLECTION + " FOR UPDATE"
SET_COLLECTION_DIMENSION = """
UPDATE ltst_collections SET dimension = %(dimension)s, embedding_model = %(model)s WHERE collection = %(collection)s
"""
UPSERT_DOCUMENT = """
INSERT INTO ltst_documents (collection, document_id, content, metadata, embedding)
VALUES (%(collection)s, %(document_id)s, %(content)s, %(metadata)s::jsonb, %(embedding)s)
ON CONFLICT (collection, document_id) DO UPDATE SET
    content = EXCLUDED.content, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, updated_at = now()
"""
DELETE_DOCUMENTS = """
DELETE FROM ltst_documents WHERE collection = %(collection)s AND document_id = ANY(%(ids)s::text[])
"""
SELECT_DOCUMENTS = """
SELECT document_id, content, metadata FROM ltst_documents
WHERE collection = %(collection)s AND document_id = ANY(%(ids)s::text[])
"""
DELETE_COLLECTION = "DELETE FROM ltst_collections WHERE collection = %(collection)s"
_SEARCH = """
SELECT document_id, content, metadata, embedding <=> %(query)s AS distance{extra}
FROM ltst_documents
WHERE collection = %(collection)s AND {where}
ORDER BY distance, document_id
LIMIT %(k)s
"""


def _check_vectors(vectors: Sequence[Sequence[float]], what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] == 0:
        raise EmbeddingDimensionError(f"{what}: expected one non-empty vector per text, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValidationError(f"{what} contain NaN or infinite values")
    return array


def _collection_dimension(collection: str, dimension: int | None, model: str) -> Op[int | None]:
    """Lock the collection row (creating it when ``dimension`` is given); check or record its dimension."""
    if dimension is not None:
        yield Query(INSERT_COLLECTION, {"collection": collection}, fetch="none")
    sql = SELECT_COLLECTION if dimension is None else LOCK_COLLECTION
    row = yield Query(sql, {"collection": collection}, fetch="one")
    if row is None:
        return None
    stored = row["dimension"]
    if dimension is not None and stored is None:
        yield Query(
            SET_COLLECTION_DIMENSION, {"collection": collection, "dimension": dimension, "model": model}, fetch="none"
        )
        return dimension
    if dimension is not None and stored != dimension:
        raise EmbeddingDimensionError(
            f"collection {collection!r} holds {stored}-dimensional vectors ({row['embedding_model']}); "
            f"got {dimension}-dimensional ones. Use another collection_name for another embedding model."
        )
    return int(stored) if stored is not None else None


def upsert_documents(
    core: Any,
    collection: str,
    ids: Sequence[str],
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]],
    vectors: Sequence[Sequence[float]],
    model: str,
) -> Op[list[str]]:
    """Insert or replace documents by id, in one transaction."""
    collection = check_id("collection_name", collection)
    if not (len(ids) == len(texts) == len(metadatas) == len(vectors)):
        raise ValidationError("ids, texts, metadatas and vectors must have the same length")
    if not ids:
        return []
    array = _check_vectors(vectors, "document embeddings")
    rows = [
        {
            "collection": collection,
            "document_id": check_id("document id", doc_id),
            "content": check_text("page_content", text, allow_empty=True),
            "metadata": check_json("metadata", dict(meta)),
            "embedding": array[i],
        }
        for i, (doc_id, text, meta) in enumerate(zip(ids, texts, metadatas, strict=True))
    ]
    yield from _collection_dimension(collection, int(array.shape[1]), model)
    yield Query(UPSERT_DOCUMENT, many=rows, fetch="none")
    return list(ids)


def delete_documents(core: Any, collection: str, ids: Sequence[str]) -> Op[int]:
    """Delete the documents with these ids (missing ids are ignored); return how many were removed."""
    ids = [check_id("document id", i) for i in ids]
    removed = yield Query(DELETE_DOCUMENTS, {"collection": collection, "ids": ids}, fetch="rowcount")
    return int(removed)


def get_documents(core: Any, collection: str, ids: Sequence[str]) -> Op[list[dict[str, Any]]]:
    """Rows of the documents with these ids, in the order of ``ids`` (missing ids skipped)."""
    ids = [check_id("document id", i) for i in ids]
    rows = yield Query(SELECT_DOCUMENTS, {"collection": collection, "ids": ids})
    by_id = {r["document_id"]: r for r in rows}
    return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]


def search_documents(
    core: Any,
    collection: str,
    vector: Sequence[float],
    k: int,
    filter: Mapping[str, Any] | None = None,
    *,
    with_vectors: bool = False,
) -> Op[list[dict[str, Any]]]:
    """The ``k`` nearest documents by cosine distance (exact: never fewer than exist), best first."""
    k = check_limit("k", k, minimum=0, maximum=10_000)
    query = _check_vectors([vector], "query embedding")[0]
    compiler = JsonFilter("metadata")
    where = compiler.compile(filter)
    if k == 0:
        return []
    dimension = yield from _collection_dimension(collection, None, "")
    if dimension is None:
        return []
    if dimension != query.shape[0]:
        raise EmbeddingDimensionError(
            f"collection {collection!r} holds {dimension}-dimensional vectors; the query has {query.shape[0]}"
        )
    sql = _SEARCH.format(extra=", embedding" if with_vectors else "", where=where)
    rows = yield Query(sql, {"collection": collection, "query": query, "k": k, **compiler.params})
    return list(rows)


def delete_collection(core: Any, collection: str) -> Op[int]:
    """Drop the collection and its documents; return 1 if it existed."""
    removed = yield Query(DELETE_COLLECTION, {"collection": collection}, fetch="rowcount")
    return int(removed)
