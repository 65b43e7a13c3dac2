"""SQL and the batch operation of the LangGraph store adapter. No framework import.

A batch is a list of plain instructions prepared by :class:`~ltst_memory.adapters.langgraph.LTSTStore`
(vectors already computed), run in one transaction: reads first, then writes (the last write to a
key wins), as LangGraph's ``InMemoryStore`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ltst_memory._ops import Op, Query
from ltst_memory.errors import ValidationError
from ltst_memory.models import check_json, check_text

from ._common import JsonFilter

#: Separator (and terminator) of namespace labels in ``ns_path``; labels may not contain it.
SEP = "\x1f"

_ITEM_COLUMNS = "i.namespace, i.key, i.value, i.created_at, i.updated_at"
_LIVE = "(i.expires_at IS NULL OR i.expires_at > now())"

SELECT_ITEM = f"""
SELECT {_ITEM_COLUMNS}, i.ttl_minutes FROM ltst_store_items AS i
WHERE i.ns_path = %(ns_path)s AND i.key = %(key)s AND {_LIVE}
"""
REFRESH_TTL = """
UPDATE ltst_store_items SET expires_at = now() + ttl_minutes * interval '1 minute'
WHERE ns_path = %(ns_path)s AND key = ANY(%(keys)s::text[]) AND ttl_minutes IS NOT NULL
"""
_SEARCH = f"""
SELECT {_ITEM_COLUMNS}, i.ns_path, i.ttl_minutes, {{score}} AS score
FROM ltst_store_items AS i {{join}}
WHERE i.ns_path LIKE %(pattern)s AND {_LIVE} AND {{where}}
ORDER BY {{order}}i.updated_at DESC, i.ns_path, i.key
LIMIT %(limit)s OFFSET %(offset)s
"""
_VECTOR_JOIN = """
LEFT JOIN LATERAL (
    SELECT max(1 - (v.embedding <=> %(query)s)) AS score FROM ltst_store_vectors AS v
    WHERE v.ns_path = i.ns_path AND v.key = i.key AND vector_dims(v.embedding) = %(dims)s
) AS s ON true
"""
SELECT_NAMESPACES = f"""
SELECT DISTINCT i.namespace FROM ltst_store_items AS i WHERE i.ns_path LIKE %(pattern)s AND {_LIVE}
"""
UPSERT_ITEM = """
INSERT INTO ltst_store_items AS i (ns_path, key, namespace, value, expires_at, ttl_minutes)
VALUES (%(ns_path)s, %(key)s, %(namespace)s, %(value)s::jsonb,
        now() + %(ttl)s * interval '1 minute', %(ttl)s)
ON CONFLICT (ns_path, key) DO UPDATE SET
    value = EXCLUDED.value, updated_at = now(), expires_at = EXCLUDED.expires_at, ttl_minutes = EXCLUDED.ttl_minutes,
    -- an expired item that was not swept yet is a new item
    created_at = CASE WHEN i.expires_at IS NOT NULL AND i.expires_at <= now() THEN now() ELSE i.created_at END
"""
DELETE_ITEM = "DELETE FROM ltst_store_items WHERE ns_path = %(ns_path)s AND key = %(key)s"
DELETE_VECTORS = "DELETE FROM ltst_store_vectors WHERE ns_path = %(ns_path)s AND key = %(key)s"
INSERT_VECTOR = """
INSERT INTO ltst_store_vectors (ns_path, key, field_name, embedding)
VALUES (%(ns_path)s, %(key)s, %(field_name)s, %(embedding)s)
ON CONFLICT (ns_path, key, field_name) DO UPDATE SET embedding = EXCLUDED.embedding
"""
SWEEP = "DELETE FROM ltst_store_items WHERE expires_at IS NOT NULL AND expires_at <= now()"


def ns_path(namespace: Sequence[str]) -> str:
    """The ``ns_path`` key of a namespace tuple."""
    if isinstance(namespace, str) or not isinstance(namespace, Sequence):
        raise ValidationError(f"a namespace is a tuple of strings, got {namespace!r}")
    for label in namespace:
        check_text("namespace label", label, max_chars=1_000)
        if SEP in label:
            raise ValidationError("namespace labels cannot contain the U+001F character")
    return "".join(label + SEP for label in namespace)


def like_prefix(path: str) -> str:
    """A LIKE pattern matching every ``ns_path`` that starts with ``path``."""
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class Get:
    namespace: tuple[str, ...]
    key: str
    refresh: bool


@dataclass
class Search:
    prefix: tuple[str, ...]
    filter: Mapping[str, Any] | None
    limit: int
    offset: int
    query: np.ndarray | None
    dims: int
    refresh: bool


@dataclass
class ListNamespaces:
    prefix: tuple[str, ...]  # labels before the first wildcard of a prefix condition (pushed down)


@dataclass
class Put:
    namespace: tuple[str, ...]
    key: str
    value: Mapping[str, Any] | None
    ttl: float | None
    vectors: list[tuple[str, np.ndarray]] = field(default_factory=list)


Instruction = Get | Search | ListNamespaces | Put


def run_batch(core: Any, instructions: Sequence[Instruction]) -> Op[list[Any]]:
    """Run the instructions in one transaction; reads see the state before this batch's writes."""
    results: list[Any] = [None] * len(instructions)
    for i, ins in enumerate(instructions):
        if isinstance(ins, Get):
            results[i] = yield from _get(ins)
        elif isinstance(ins, Search):
            results[i] = yield from _search(ins)
        elif isinstance(ins, ListNamespaces):
            rows = yield Query(SELECT_NAMESPACES, {"pattern": like_prefix(ns_path(ins.prefix))})
            results[i] = [tuple(r["namespace"]) for r in rows]
    puts: dict[tuple[str, str], Put] = {}
    for ins in instructions:
        if isinstance(ins, Put):
            puts[(ns_path(ins.namespace), ins.key)] = ins
    for (path, key), put in puts.items():
        yield from _put(path, key, put)
    return results


def _get(ins: Get) -> Op[dict[str, Any] | None]:
    params = {"ns_path": ns_path(ins.namespace), "key": ins.key}
    row = yield Query(SELECT_ITEM, params, fetch="one")
    if row is not None and ins.refresh and row["ttl_minutes"] is not None:
        yield Query(REFRESH_TTL, {"ns_path": params["ns_path"], "keys": [ins.key]}, fetch="none")
    return row


def _search(ins: Search) -> Op[list[dict[str, Any]]]:
    if ins.limit <= 0:
        return []
    compiler = JsonFilter("i.value", nested=True)
    params: dict[str, Any] = {
        "pattern": like_prefix(ns_path(ins.prefix)),
        "limit": ins.limit,
        "offset": max(ins.offset, 0),
    }
    where = compiler.compile(ins.filter)
    params.update(compiler.params)
    if ins.query is not None:
        sql = _SEARCH.format(score="s.score", join=_VECTOR_JOIN, where=where, order="s.score DESC NULLS LAST, ")
        params.update({"query": ins.query, "dims": ins.dims})
    else:
        sql = _SEARCH.format(score="NULL::float8", join="", where=where, order="")
    rows = yield Query(sql, params)
    if ins.refresh and rows:
        by_path: dict[str, list[str]] = {}
        for r in rows:
            if r["ttl_minutes"] is not None:
                by_path.setdefault(r["ns_path"], []).append(r["key"])
        for path, keys in by_path.items():
            yield Query(REFRESH_TTL, {"ns_path": path, "keys": keys}, fetch="none")
    return list(rows)


def _put(path: str, key: str, put: Put) -> Op[None]:
    check_text("key", key, allow_empty=True)
    params: dict[str, Any] = {"ns_path": path, "key": key}
    if put.value is None:
        yield Query(DELETE_ITEM, params, fetch="none")
        return
    params.update(
        namespace=list(put.namespace),
        value=check_json("value", dict(put.value)),
        ttl=None if put.ttl is None else float(put.ttl),
    )
    yield Query(UPSERT_ITEM, params, fetch="none")
    yield Query(DELETE_VECTORS, {"ns_path": path, "key": key}, fetch="none")
    if put.vectors:
        rows = [{"ns_path": path, "key": key, "field_name": f, "embedding": v} for f, v in put.vectors]
        yield Query(INSERT_VECTOR, many=rows, fetch="none")


def sweep(core: Any) -> Op[int]:
    """Delete expired items (and their vectors); return how many."""
    removed = yield Query(SWEEP, fetch="rowcount")
    return int(removed)
