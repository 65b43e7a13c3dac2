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

from ._common import SHARED_OWNER, JsonFilter, Opaque

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


DELETE_SESSION_MESSAGES = (
    f"DELETE FROM conversation_messages WHERE session_id = %(session_id)s {core_ops.q.owner()}"
)


def clear_messages(core: Any, session_id: str) -> Op[int]:
    """Delete every message of the session (the session itself stays)."""
    params = {"session_id": check_id("session_id", session_id)}
    owner = yield from core_ops.require_session(core, params["session_id"])
    removed = yield core_ops.owned(core, Query(DELETE_SESSION_MESSAGES, params, fetch="rowcount"), owner)
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
# Every statement names the owner: ``{owner}`` is ``user_id = %(user_id)s`` for an adapter scoped to a
# user and ``TRUE`` for an unscoped one (every owner; its writes are owned by SHARED_OWNER).

INSERT_COLLECTION = """
INSERT INTO ltst_collections (user_id, collection) VALUES (%(owner)s, %(collection)s)
ON CONFLICT (user_id, collection) DO NOTHING
"""
_SELECT_COLLECTION = """
SELECT collection, dimension, embedding_model FROM ltst_collections
WHERE user_id = %(owner)s AND collection = %(collection)s
"""
SELECT_COLLECTION = _SELECT_COLLECTION
LOCK_COLLECTION = _SELECT_COLLECTION + " FOR UPDATE"
SELECT_COLLECTION_DIMENSIONS = """
SELECT DISTINCT dimension FROM ltst_collections WHERE {owner} AND collection = %(collection)s AND dimension IS NOT NULL
"""
SET_COLLECTION_DIMENSION = """
UPDATE ltst_collections SET dimension = %(dimension)s, embedding_model = %(model)s
WHERE user_id = %(owner)s AND collection = %(collection)s
"""
UPSERT_DOCUMENT = """
INSERT INTO ltst_documents (user_id, collection, document_id, content, metadata, embedding, updated_at)
VALUES (%(owner)s, %(collection)s, %(document_id)s, %(content)s, %(metadata)s::jsonb, %(embedding)s, now())
ON CONFLICT (user_id, collection, document_id) DO UPDATE SET
    content = EXCLUDED.content, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding,
    updated_at = EXCLUDED.updated_at
"""
DELETE_DOCUMENTS = """
DELETE FROM ltst_documents WHERE {owner} AND collection = %(collection)s AND document_id = ANY(%(ids)s::text[])
"""
DELETE_DOCUMENTS_WHERE = """
DELETE FROM ltst_documents WHERE {owner} AND collection = %(collection)s AND {where}
"""
SELECT_DOCUMENTS = """
SELECT document_id, content, metadata FROM ltst_documents
WHERE {owner} AND collection = %(collection)s AND document_id = ANY(%(ids)s::text[])
ORDER BY user_id
"""
DELETE_COLLECTION = "DELETE FROM ltst_collections WHERE {owner} AND collection = %(collection)s"
#: Distance operators of pgvector, by ``distance_strategy``; relevance in [0, 1] is computed from them.
DISTANCES = {"cosine": "<=>", "euclidean": "<->", "max_inner_product": "<#>"}
_SEARCH = """
SELECT document_id, content, metadata, embedding {operator} %(query)s AS distance{extra}
FROM ltst_documents
WHERE {owner} AND collection = %(collection)s AND vector_dims(embedding) = %(dims)s AND {where}
ORDER BY distance, document_id
LIMIT %(k)s
"""


def _owner_sql(user_id: str | None) -> str:
    return "TRUE" if user_id is None else "user_id = %(user_id)s"


def _owner(user_id: str | None) -> str:
    """The owner of rows written for ``user_id`` (an unscoped adapter writes shared rows)."""
    return SHARED_OWNER if user_id is None else user_id


def _check_vectors(vectors: Sequence[Sequence[float]], what: str) -> np.ndarray:
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"{what} must be lists of numbers") from None
    if array.ndim != 2 or array.shape[1] == 0:
        raise EmbeddingDimensionError(f"{what}: expected one non-empty vector per text, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValidationError(f"{what} contain NaN or infinite values")
    return array


def check_collection(collection: object) -> str:
    """A collection name: a non-blank string of at most 255 characters PostgreSQL can store."""
    return check_id("collection_name", collection)


def _collection_dimension(owner: str, collection: str, dimension: int, model: str) -> Op[int]:
    """Lock the owner's collection row (creating it); check or record its dimension."""
    params = {"owner": owner, "collection": collection}
    yield Query(INSERT_COLLECTION, params, fetch="none")
    row = yield Query(LOCK_COLLECTION, params, fetch="one")
    stored = row["dimension"]
    if stored is None:
        yield Query(SET_COLLECTION_DIMENSION, {**params, "dimension": dimension, "model": model}, fetch="none")
        return dimension
    if stored != dimension:
        raise EmbeddingDimensionError(
            f"collection {collection!r} holds {stored}-dimensional vectors ({row['embedding_model']}); "
            f"got {dimension}-dimensional ones. Use another collection_name for another embedding model."
        )
    return int(stored)


def upsert_documents(
    core: Any,
    user_id: str | None,
    collection: str,
    ids: Sequence[str],
    texts: Sequence[str],
    payload: Opaque,
    vectors: Sequence[Sequence[float]],
    model: str,
) -> Op[list[str]]:
    """Insert or replace documents by id (``payload.value``: their metadata dicts), in one transaction."""
    collection = check_collection(collection)
    metadatas: Sequence[Mapping[str, Any]] = payload.value
    if not (len(ids) == len(texts) == len(metadatas) == len(vectors)):
        raise ValidationError("ids, texts, metadatas and vectors must have the same length")
    if not ids:
        return []
    array = _check_vectors(vectors, "document embeddings")
    owner = _owner(user_id)
    rows = [
        {
            "owner": owner,
            "collection": collection,
            "document_id": check_id("document id", doc_id),
            "content": check_text("page_content", text, allow_empty=True),
            "metadata": check_json("metadata", dict(meta)),
            "embedding": array[i],
        }
        for i, (doc_id, text, meta) in enumerate(zip(ids, texts, metadatas, strict=True))
    ]
    yield from _collection_dimension(owner, collection, int(array.shape[1]), model)
    yield Query(UPSERT_DOCUMENT, many=rows, fetch="none")
    return list(ids)


def delete_documents(core: Any, user_id: str | None, collection: str, ids: Sequence[str]) -> Op[int]:
    """Delete the documents with these ids (missing ids are ignored); return how many were removed."""
    ids = [check_id("document id", i) for i in ids]
    params = {"user_id": user_id, "collection": check_collection(collection), "ids": ids}
    removed = yield Query(DELETE_DOCUMENTS.format(owner=_owner_sql(user_id)), params, fetch="rowcount")
    return int(removed)


def delete_documents_where(core: Any, user_id: str | None, collection: str, filter: Opaque) -> Op[int]:
    """Delete the documents whose metadata matches ``filter.value`` (a non-empty filter dict)."""
    compiler = JsonFilter("metadata", dotted=True)
    if not filter.value:
        raise ValidationError("delete(filter=...) takes a non-empty filter; delete_collection() deletes everything")
    where = compiler.compile(filter.value)
    params = {"user_id": user_id, "collection": check_collection(collection), **compiler.params}
    sql = DELETE_DOCUMENTS_WHERE.format(owner=_owner_sql(user_id), where=where)
    removed = yield Query(sql, params, fetch="rowcount")
    return int(removed)


def get_documents(core: Any, user_id: str | None, collection: str, ids: Sequence[str]) -> Op[Opaque]:
    """Rows of the documents with these ids, in the order of ``ids`` (missing ids skipped)."""
    ids = [check_id("document id", i) for i in ids]
    params = {"user_id": user_id, "collection": check_collection(collection), "ids": ids}
    rows = yield Query(SELECT_DOCUMENTS.format(owner=_owner_sql(user_id)), params)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_id.setdefault(r["document_id"], []).append(r)
    return Opaque([r for i in dict.fromkeys(ids) for r in by_id.get(i, [])])


def search_documents(
    core: Any,
    user_id: str | None,
    collection: str,
    vector: Sequence[float],
    k: int,
    filter: Opaque,
    *,
    distance: str = "cosine",
    with_vectors: bool = False,
) -> Op[Opaque]:
    """The ``k`` nearest documents by ``distance`` (exact: never fewer than exist), best first."""
    collection = check_collection(collection)
    k = check_limit("k", k, minimum=0, maximum=10_000)
    query = _check_vectors([vector], "query embedding")[0]
    compiler = JsonFilter("metadata", dotted=True)
    where = compiler.compile(filter.value)
    if distance not in DISTANCES:
        raise ValidationError(f"unknown distance_strategy {distance!r}; use one of {sorted(DISTANCES)}")
    if k == 0:
        return Opaque([])
    params = {"user_id": user_id, "collection": collection}
    dims = yield Query(SELECT_COLLECTION_DIMENSIONS.format(owner=_owner_sql(user_id)), params)
    if not dims:
        return Opaque([])
    if all(r["dimension"] != query.shape[0] for r in dims):
        stored = ", ".join(str(r["dimension"]) for r in dims)
        raise EmbeddingDimensionError(
            f"collection {collection!r} holds {stored}-dimensional vectors; the query has {query.shape[0]}"
        )
    sql = _SEARCH.format(
        operator=DISTANCES[distance], extra=", embedding" if with_vectors else "", where=where,
        owner=_owner_sql(user_id),
    )  # fmt: skip
    rows = yield Query(sql, {**params, "query": query, "dims": int(query.shape[0]), "k": k, **compiler.params})
    return Opaque(list(rows))


def delete_collection(core: Any, user_id: str | None, collection: str) -> Op[int]:
    """Drop the collection and its documents; return how many collection rows existed (0 or 1 when scoped)."""
    params = {"user_id": user_id, "collection": check_collection(collection)}
    removed = yield Query(DELETE_COLLECTION.format(owner=_owner_sql(user_id)), params, fetch="rowcount")
    return int(removed)
