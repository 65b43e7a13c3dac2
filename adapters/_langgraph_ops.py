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

from ._common import SHARED_OWNER, JsonFilter, Opaque

#: Separator (and terminator) of namespace labels in ``ns_path``; labels may not contain it.
SEP = "\x1f"

#: Longest TTL in minutes (about 1,900 years): ``now() + ttl`` stays within PostgreSQL's timestamps.
MAX_TTL_MINUTES = 1e9
#: Score of an item for a query vector, by the index config's ``distance_type`` (as LangGraph's
#: PostgresStore scores them: higher is closer).
SCORES = {
    "cosine": "1 - (v.embedding <=> %(query)s)",
    "l2": "-(v.embedding <-> %(query)s)",
    "inner_product": "-(v.embedding <#> %(query)s)",
}

# Every statement names the owner: {owner} is "i.user_id = %(user_id)s" for an adapter scoped to a
# user and "TRUE" for an unscoped one; rows it writes are owned by %(owner)s.
_ITEM_COLUMNS = "i.namespace, i.key, i.value, i.created_at, i.updated_at"
_LIVE = "(i.expires_at IS NULL OR i.expires_at > now())"

SELECT_ITEM = f"""
SELECT {_ITEM_COLUMNS}, i.user_id, i.ttl_minutes FROM ltst_store_items AS i
WHERE {{owner}} AND i.ns_path = %(ns_path)s AND i.key = %(key)s AND {{live}}
ORDER BY i.user_id = %(shared)s DESC, i.updated_at DESC
LIMIT 1
"""
# (to_timestamp of epoch seconds, not timestamptz + interval: Citus refuses a STABLE operator over a
# column in an UPDATE, and a whole number of minutes is the same instant either way)
REFRESH_TTL = """
UPDATE ltst_store_items SET expires_at = to_timestamp(extract(epoch FROM now())::float8 + ttl_minutes * 60.0)
WHERE user_id = %(owner)s AND ns_path = %(ns_path)s AND key = ANY(%(keys)s::text[]) AND ttl_minutes IS NOT NULL
"""
_SEARCH = f"""
SELECT {_ITEM_COLUMNS}, i.user_id, i.ns_path, i.ttl_minutes, {{score}} AS score
FROM ltst_store_items AS i {{join}}
WHERE {{owner}} AND i.ns_path LIKE %(pattern)s AND {{live}} AND {{where}}
ORDER BY {{order}}i.updated_at DESC, i.ns_path, i.key, i.user_id
LIMIT %(limit)s OFFSET %(offset)s
"""
_VECTOR_JOIN = """
LEFT JOIN LATERAL (
    SELECT max({score}) AS score FROM ltst_store_vectors AS v
    WHERE v.user_id = i.user_id AND v.ns_path = i.ns_path AND v.key = i.key AND vector_dims(v.embedding) = %(dims)s
) AS s ON true
"""
SELECT_NAMESPACES = """
SELECT DISTINCT i.namespace FROM ltst_store_items AS i WHERE {owner} AND i.ns_path LIKE %(pattern)s AND {live}
"""
UPSERT_ITEM = """
INSERT INTO ltst_store_items AS i (user_id, ns_path, key, namespace, value, expires_at, ttl_minutes, created_at,
                                    updated_at)
VALUES (%(owner)s, %(ns_path)s, %(key)s, %(namespace)s, %(value)s::jsonb,
        now() + %(ttl)s * interval '1 minute', %(ttl)s, now(), now())
ON CONFLICT (user_id, ns_path, key) DO UPDATE SET
    value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at,
    ttl_minutes = EXCLUDED.ttl_minutes,
    -- an expired item that was not swept yet is a new item (no function here: on Citus, DO UPDATE SET
    -- may only call IMMUTABLE ones, so "now" is the row's proposed updated_at)
    created_at = CASE WHEN i.expires_at IS NOT NULL AND i.expires_at <= EXCLUDED.updated_at
                      THEN EXCLUDED.created_at ELSE i.created_at END
"""
DELETE_ITEM = "DELETE FROM ltst_store_items AS i WHERE {owner} AND i.ns_path = %(ns_path)s AND i.key = %(key)s"
DELETE_VECTORS = "DELETE FROM ltst_store_vectors WHERE user_id = %(owner)s AND ns_path = %(ns_path)s AND key = %(key)s"
INSERT_VECTOR = """
INSERT INTO ltst_store_vectors (user_id, ns_path, key, field_name, embedding)
VALUES (%(owner)s, %(ns_path)s, %(key)s, %(field_name)s, %(embedding)s)
ON CONFLICT (user_id, ns_path, key, field_name) DO UPDATE SET embedding = EXCLUDED.embedding
"""
SWEEP = "DELETE FROM ltst_store_items AS i WHERE {owner} AND i.expires_at IS NOT NULL AND i.expires_at <= now()"


def _owner_sql(user_id: str | None) -> str:
    return "TRUE" if user_id is None else "i.user_id = %(user_id)s"


def _live(omit_expired: bool) -> str:
    return _LIVE if omit_expired else "TRUE"


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


@dataclass
class Settings:
    """How a store reads: whether expired items are left out, and how vectors are scored."""

    omit_expired: bool = True
    distance: str = "cosine"


def run_batch(core: Any, user_id: str | None, batch: Opaque, settings: Settings) -> Op[Opaque]:
    """Run the instructions (``batch.value``) in one transaction for ``user_id`` (``None``: unscoped);
    reads see the state before this batch's writes."""
    instructions: Sequence[Instruction] = batch.value
    results: list[Any] = [None] * len(instructions)
    for i, ins in enumerate(instructions):
        if isinstance(ins, Get):
            results[i] = yield from _get(user_id, ins, settings)
        elif isinstance(ins, Search):
            results[i] = yield from _search(user_id, ins, settings)
        elif isinstance(ins, ListNamespaces):
            sql = SELECT_NAMESPACES.format(owner=_owner_sql(user_id), live=_live(settings.omit_expired))
            rows = yield Query(sql, {"user_id": user_id, "pattern": like_prefix(ns_path(ins.prefix))})
            results[i] = [tuple(r["namespace"]) for r in rows]
    puts: dict[tuple[str, str], Put] = {}
    for ins in instructions:
        if isinstance(ins, Put):
            puts[(ns_path(ins.namespace), ins.key)] = ins
    for (path, key), put in puts.items():
        yield from _put(user_id, path, key, put)
    return Opaque(results)


def _refresh(rows: Sequence[Mapping[str, Any]]) -> Op[None]:
    by_item: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["ttl_minutes"] is not None:
            by_item.setdefault((r["user_id"], r["ns_path"]), []).append(r["key"])
    for (owner, path), keys in by_item.items():
        yield Query(REFRESH_TTL, {"owner": owner, "ns_path": path, "keys": keys}, fetch="none")


def _get(user_id: str | None, ins: Get, settings: Settings) -> Op[dict[str, Any] | None]:
    params = {"user_id": user_id, "ns_path": ns_path(ins.namespace), "key": ins.key, "shared": SHARED_OWNER}
    sql = SELECT_ITEM.format(owner=_owner_sql(user_id), live=_live(settings.omit_expired))
    row = yield Query(sql, params, fetch="one")
    if row is not None and ins.refresh:
        yield from _refresh([{**row, "ns_path": params["ns_path"]}])
    return row


def _search(user_id: str | None, ins: Search, settings: Settings) -> Op[list[dict[str, Any]]]:
    if ins.limit <= 0:
        return []
    compiler = JsonFilter("i.value", nested=True)
    params: dict[str, Any] = {
        "user_id": user_id,
        "pattern": like_prefix(ns_path(ins.prefix)),
        "limit": ins.limit,
        "offset": ins.offset,
    }
    where = compiler.compile(ins.filter)
    params.update(compiler.params)
    common = {"owner": _owner_sql(user_id), "live": _live(settings.omit_expired), "where": where}
    if ins.query is not None:
        join = _VECTOR_JOIN.format(score=SCORES[settings.distance])
        sql = _SEARCH.format(score="s.score", join=join, order="s.score DESC NULLS LAST, ", **common)
        params.update({"query": ins.query, "dims": ins.dims})
    else:
        sql = _SEARCH.format(score="NULL::float8", join="", order="", **common)
    rows = yield Query(sql, params)
    if ins.refresh and rows:
        yield from _refresh(rows)
    return list(rows)


def _put(user_id: str | None, path: str, key: str, put: Put) -> Op[None]:
    owner = SHARED_OWNER if user_id is None else user_id
    params: dict[str, Any] = {"user_id": user_id, "owner": owner, "ns_path": path, "key": key}
    if put.value is None:
        yield Query(DELETE_ITEM.format(owner=_owner_sql(user_id)), params, fetch="none")
        return
    params.update(
        namespace=list(put.namespace),
        value=check_json("value", dict(put.value)),
        ttl=None if put.ttl is None else float(put.ttl),
    )
    yield Query(UPSERT_ITEM, params, fetch="none")
    yield Query(DELETE_VECTORS, params, fetch="none")
    if put.vectors:
        rows = [{"owner": owner, "ns_path": path, "key": key, "field_name": f, "embedding": v} for f, v in put.vectors]
        yield Query(INSERT_VECTOR, many=rows, fetch="none")


def sweep(core: Any, user_id: str | None) -> Op[int]:
    """Delete expired items (and their vectors) of ``user_id`` (``None``: of every owner); return how many."""
    removed = yield Query(SWEEP.format(owner=_owner_sql(user_id)), {"user_id": user_id}, fetch="rowcount")
    return int(removed)
