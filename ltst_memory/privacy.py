"""Privacy operations: erasing a user (``delete_user``) and an anonymised export for analytics."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import datetime
from typing import Any

from ._kernel import EVERY_SESSION, MORE, Commit, Core, Op, Query, operation
from ._ops import is_distributed
from ._tables import OWNED_TABLES
from .errors import AccessDeniedError, ValidationError
from .models import check_datetime, check_id
from .scoped import set_scope_user

__all__ = ["ANALYTICS_SALT_VARIABLE", "ErasureResult", "delete_user", "export_analytics"]

logger = logging.getLogger(__name__)

ANALYTICS_SALT_VARIABLE = "LTST_ANALYTICS_SALT"

#: The user the RLS policies let this transaction reach (a role pinned to a user reaches that user only).
POLICY_USER = "SELECT ltst_policy_user() AS user_id"
DELETE_USER = "SELECT kind, removed FROM ltst_delete_user(%(user_id)s)"
#: Planner statistics hold sampled values (ids, words) of the rows: refreshed on the tables an erase touched.
ANALYZE_TABLES = "SELECT ltst_analyze_owned_tables(%(tables)s::text[])"
#: The user's own vector index (ltst_memory/hnsw.py) names them in its predicate: dropped once their
#: messages are gone, with the btree of their gap (schema/0015_user_index_gap.sql). True when there was one.
DROP_USER_INDEX = "SELECT ltst_drop_user_vector_index(%(user_id)s) AS dropped"

_KINDS = {t.name: t.result_key for t in OWNED_TABLES}


class ErasureResult(dict[str, int]):
    """What :func:`delete_user` removed: ``{kind: rows}`` (``"sessions"``, ``"messages"``, ``"context"``,
    ``"preferences"``, ``"relationships"``, ``"summaries"``, ``"retention_policies"``, ``"term_stats"``,
    ``"user_stats"``, ``"lexical_postings"``, ``"lexical_indexes"``, ``"term_pending"``, and the adapter
    tables' kinds once they carry an owner), plus ``complete``: whether every table of the library that
    can hold the user's rows was reached, and ``not_reached``: the tables holding rows that could not be
    attributed to a user (an adapter table without its owner column). ``analyzed``: the tables whose
    planner statistics were refreshed. ``dropped_index``: whether the user had a vector index of their
    own (``ltst vector-index``), now dropped."""

    complete: bool
    not_reached: tuple[str, ...]
    analyzed: tuple[str, ...]
    dropped_index: bool

    def __init__(
        self,
        counts: dict[str, int],
        not_reached: tuple[str, ...],
        analyzed: tuple[str, ...],
        dropped_index: bool = False,
    ) -> None:
        super().__init__(counts)
        self.not_reached = not_reached
        self.complete = not not_reached
        self.analyzed = analyzed
        self.dropped_index = dropped_index

    def __repr__(self) -> str:
        return f"ErasureResult({dict(self)!r}, complete={self.complete}, not_reached={self.not_reached!r})"


_EXPORT = """
SELECT m.message_uuid, m.session_id, m.user_id, s.session_type, m.role, m.message_type, m.message_index,
       m."timestamp", length(m.content) AS characters, ltst_token_estimate(m.content) AS tokens_estimate,
       m.embedding IS NOT NULL AS embedded{content}
FROM conversation_messages AS m
JOIN conversation_sessions AS s ON s.session_id = m.session_id AND s.user_id = m.user_id
WHERE m."timestamp" >= coalesce(%(since)s, '-infinity'::timestamptz)
  AND m."timestamp" < coalesce(%(until)s, 'infinity'::timestamptz)
ORDER BY m."timestamp", m.message_id
LIMIT %(limit)s
"""
EXPORT_ROWS = _EXPORT.format(content="")
EXPORT_ROWS_WITH_CONTENT = _EXPORT.format(content=", m.content")


@operation(group=MORE, invalidates=EVERY_SESSION)
def delete_user(core: Core, user_id: str) -> Op[ErasureResult]:
    """Erase every row of ``user_id`` from the library's tables (``ltst_memory/_tables.py``: sessions,
    messages, context, preferences, relationships, summaries, retention policies, retrieval statistics,
    adapter rows that carry an owner) in one transaction, then refresh the planner statistics of the
    tables of user data when it removed anything (``ANALYZE``), so sampled values of the user do not stay in
    ``pg_stats``, and drop the user's own vector index if ``ltst vector-index`` built one (its
    definition names the user; dropping it locks the messages table for an instant). Tables the
    library does not own are never touched.

    Returns an :class:`ErasureResult`: the rows removed per kind (all zero for an unknown user) and
    whether the erase is ``complete``. Works the same on the tables' owner and on a role under Row
    Level Security (the transaction acts as ``user_id``). Sessions cached by other processes'
    stores are not seen by them before their cache entries expire (the cache is off by default).
    """
    params = {"user_id": check_id("user_id", user_id)}
    # the erasure acts as that user: under Row Level Security the caller then reaches exactly their rows
    yield set_scope_user(params["user_id"], (yield from is_distributed(core)))
    reach = yield Query(POLICY_USER, fetch="one")
    if reach["user_id"] != params["user_id"]:
        raise AccessDeniedError(
            f"this connection's database role is pinned to another user; it cannot erase {user_id!r}"
        )
    rows = yield Query(DELETE_USER, params)
    counts = {_KINDS.get(r["kind"], r["kind"]): int(r["removed"]) for r in rows if r["removed"] is not None}
    not_reached = tuple(r["kind"] for r in rows if r["removed"] is None)
    # triggers also remove rows (the retrieval statistics), so every table of user data is refreshed
    touched = [r["kind"] for r in rows if r["removed"] is not None] if any(r["removed"] for r in rows) else []
    if touched:
        if (yield from is_distributed(core)):
            # Citus: the erasure's function modified the shards' placements as the tables' owner; the
            # ANALYZE, in the same transaction, would meet them as another user. The erasure commits first.
            yield Commit()
        yield Query(ANALYZE_TABLES, {"tables": touched}, fetch="none")
    # (a cluster has no per-user indexes: hnsw.build_user_index refuses to build them there)
    dropped = False
    if not (yield from is_distributed(core)):
        dropped = bool((yield Query(DROP_USER_INDEX, params, fetch="one"))["dropped"])
        if dropped:
            logger.info("dropped the user's own vector index")
    if not_reached:
        logger.warning("delete_user could not reach rows in %s (no owner column)", ", ".join(not_reached))
    logger.info("deleted user data: %s", ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "nothing")
    return ErasureResult(counts, not_reached, tuple(touched), dropped)


def _pseudonym(key: bytes, kind: str, value: str) -> str:
    return hmac.new(key, f"{kind}:{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


@operation(group=MORE, per_user=False)
def export_analytics(
    core: Core,
    *,
    include_content: bool = False,
    salt: str | bytes | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100_000,
) -> Op[list[dict[str, Any]]]:
    """One anonymised row per message, oldest first: pseudonymous ``user``/``session``/``message`` ids
    (keyed HMAC-SHA256), session type, role, type, index, timestamp, length, token estimate and —
    only with ``include_content=True`` — the content, verbatim (names inside it are NOT scrubbed).

    The key is ``salt``, else ``LTST_ANALYTICS_SALT``, else a random one for this export only (ids
    then match within one export but not across exports). Keep the salt secret: with it, anyone can
    test guesses of user ids. Administrative: not available on user-scoped stores.
    """
    if not isinstance(include_content, bool):
        raise ValidationError("include_content must be a bool")
    if salt is None:
        salt = os.environ.get(ANALYTICS_SALT_VARIABLE) or secrets.token_bytes(32)
    if isinstance(salt, str):
        salt = salt.encode("utf-8", "surrogatepass")
    if not isinstance(salt, bytes) or len(salt) < 16:
        raise ValidationError("salt must be at least 16 bytes (or characters) of secret material")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
        raise ValidationError("limit must be an integer between 1 and 10,000,000")
    params = {"since": check_datetime("since", since), "until": check_datetime("until", until), "limit": limit}
    rows = yield Query(EXPORT_ROWS_WITH_CONTENT if include_content else EXPORT_ROWS, params)
    out = []
    for r in rows:
        item = {
            "user": _pseudonym(salt, "user", r["user_id"]),
            "session": _pseudonym(salt, "session", r["session_id"]),
            "message": _pseudonym(salt, "message", str(r["message_uuid"])),
            "session_type": r["session_type"],
            "role": r["role"],
            "message_type": r["message_type"],
            "message_index": r["message_index"],
            "timestamp": r["timestamp"].isoformat(),
            "characters": int(r["characters"]),
            "tokens_estimate": int(r["tokens_estimate"]),
            "embedded": bool(r["embedded"]),
        }
        if include_content:
            item["content"] = r["content"]
        out.append(item)
    return out
