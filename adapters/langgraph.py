"""LangGraph adapter: a ``BaseStore`` (long-term memory for LangGraph agents) on ltst-memory's database.

Install with ``pip install "ltst-memory[langgraph]"``. Items live in ``ltst_store_items``; with an
``index`` config, the configured fields of each item are embedded into ``ltst_store_vectors`` and
``search(query=...)`` ranks by cosine similarity (the best field of an item counts), exactly within the
namespace prefix and filter. Sync and async: see :mod:`ltst_memory.adapters._common`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from collections.abc import Iterable
from typing import Any

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
    )
    from langgraph.store.base.embed import ensure_embeddings, get_text_at_path, tokenize_path
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LangGraph adapter needs langgraph: pip install "ltst-memory[langgraph]"') from exc

import numpy as np

from ltst_memory.errors import ValidationError

from . import _langgraph_ops as lg
from ._common import Runner
from ._embeddings import EmbedderEmbeddings

__all__ = ["LTSTStore"]

logger = logging.getLogger(__name__)


class LTSTStore(BaseStore):
    """A LangGraph ``BaseStore`` in ltst-memory's PostgreSQL database.

    ``index`` is LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``); ``embed`` and ``dims``
    may be left out to use the store's own embedder. ``ttl`` is a ``TTLConfig`` (minutes): expired
    items are never returned (whatever ``omit_expired`` says) and are deleted by :meth:`sweep_ttl` or
    the background sweeper (:meth:`start_ttl_sweeper`). Each ``batch``/``abatch`` is one transaction;
    its reads see the state before its writes, as with ``InMemoryStore``.
    """

    supports_ttl = True

    def __init__(
        self,
        storage: Any,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        async_storage: Any = None,
    ) -> None:
        self._runner = Runner(storage, async_storage)
        self.ttl_config = ttl
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None
        if index is not None:
            config = dict(index)
            embed = config.get("embed")
            self.embeddings = EmbedderEmbeddings(self._runner.embedder) if embed is None else ensure_embeddings(embed)
            if "dims" not in config:
                config["dims"] = int(getattr(self.embeddings, "dimension", 0) or len(self.embeddings.embed_query("x")))
            config["__fields"] = [(p, "$" if p == "$" else tokenize_path(p)) for p in (config.get("fields") or ["$"])]
            self.index_config = config
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()

    # ------------------------------------------------------------------ batch

    def _plan(self, ops: list[Op]) -> tuple[list[lg.Instruction], list[tuple[int, str, str]], list[str]]:
        """Instructions for ``ops``, the texts to embed per put (op index, field, text) and the queries."""
        plan: list[lg.Instruction] = []
        texts: list[tuple[int, str, str]] = []
        queries: list[str] = []
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                plan.append(lg.Get(tuple(op.namespace), str(op.key), bool(op.refresh_ttl)))
            elif isinstance(op, SearchOp):
                query = op.query if (op.query and self.embeddings is not None) else None
                if query is not None and query not in queries:
                    queries.append(query)
                dims = int(self.index_config["dims"]) if self.index_config else 0
                plan.append(
                    lg.Search(
                        tuple(op.namespace_prefix), op.filter, op.limit, op.offset, query, dims, bool(op.refresh_ttl)
                    )
                )
            elif isinstance(op, ListNamespacesOp):
                plan.append(lg.ListNamespaces(_pushdown_prefix(op.match_conditions)))
            elif isinstance(op, PutOp):
                ttl = op.ttl
                if ttl is not None and (not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0):
                    raise ValidationError(f"ttl must be a positive number of minutes or None, got {ttl!r}")
                plan.append(lg.Put(tuple(op.namespace), str(op.key), op.value, ttl))
                if op.value is not None and op.index is not False and self.index_config is not None:
                    fields = (
                        self.index_config["__fields"]
                        if op.index is None
                        else [(p, "$" if p == "$" else tokenize_path(p)) for p in op.index]
                    )
                    for path, tokens in fields:
                        found = get_text_at_path(op.value, tokens)
                        if len(found) == 1:
                            texts.append((i, path, found[0]))
                        else:
                            texts.extend((i, f"{path}.{j}", t) for j, t in enumerate(found))
            else:
                raise ValidationError(f"unknown operation {type(op).__name__}")
        return plan, texts, queries

    def _finish_plan(
        self,
        plan: list[lg.Instruction],
        texts: list[tuple[int, str, str]],
        vectors: list[list[float]],
        queries: list[str],
        query_vectors: list[list[float]],
    ) -> None:
        for (i, field_name, _), vector in zip(texts, vectors, strict=True):
            plan[i].vectors.append((field_name, _array(vector)))  # type: ignore[union-attr]
        by_query = dict(zip(queries, query_vectors, strict=True))
        for ins in plan:
            if isinstance(ins, lg.Search) and ins.query is not None:
                ins.query = _array(by_query[ins.query])  # type: ignore[index]

    def _results(self, ops: list[Op], raw: list[Any]) -> list[Result]:
        out: list[Result] = []
        for op, value in zip(ops, raw, strict=True):
            if isinstance(op, GetOp):
                out.append(None if value is None else Item(**_item_fields(value)))
            elif isinstance(op, SearchOp):
                out.append([SearchItem(**_item_fields(r), score=r["score"]) for r in value])
            elif isinstance(op, ListNamespacesOp):
                out.append(_list_namespaces(op, value))
            else:
                out.append(None)
        return out

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in one transaction (embedding first, outside it)."""
        ops = list(ops)
        plan, texts, queries = self._plan(ops)
        if self.embeddings is not None:
            vectors = self.embeddings.embed_documents([t for _, _, t in texts]) if texts else []
            query_vectors = [self.embeddings.embed_query(q) for q in queries]
            self._finish_plan(plan, texts, vectors, queries, query_vectors)
        return self._results(ops, self._runner.run(lg.run_batch, plan))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`: on the async store when given one, with the embeddings' async methods."""
        ops = list(ops)
        plan, texts, queries = self._plan(ops)
        if self.embeddings is not None:
            vectors = await self.embeddings.aembed_documents([t for _, _, t in texts]) if texts else []
            query_vectors = [await self.embeddings.aembed_query(q) for q in queries]
            self._finish_plan(plan, texts, vectors, queries, query_vectors)
        return self._results(ops, await self._runner.arun(lg.run_batch, plan))

    # ------------------------------------------------------------------ TTL

    def sweep_ttl(self) -> int:
        """Delete expired items now; return how many were deleted."""
        return self._runner.run(lg.sweep)

    async def asweep_ttl(self) -> int:
        return await self._runner.arun(lg.sweep)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the TTL config's, else 5) in a
        daemon thread; the returned future completes when :meth:`stop_ttl_sweeper` stops it."""
        interval = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            future.set_result(None)
            return future
        self._sweeper_stop.clear()

        def loop() -> None:
            try:
                while not self._sweeper_stop.wait(float(interval) * 60):
                    try:
                        removed = self.sweep_ttl()
                        if removed:
                            logger.info("TTL sweep deleted %d expired store items", removed)
                    except Exception:  # keep sweeping after a transient failure
                        logger.exception("TTL sweep failed")
            finally:
                future.set_result(None)

        self._sweeper = threading.Thread(target=loop, name="ltst-store-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper; return ``True`` if it stopped within ``timeout`` seconds."""
        if self._sweeper is None:
            return True
        self._sweeper_stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped


def _array(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ValidationError("the embeddings returned a vector that is not a finite 1-d list of floats")
    return array


def _item_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": tuple(row["namespace"]),
        "key": row["key"],
        "value": row["value"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _pushdown_prefix(conditions: tuple[MatchCondition, ...] | None) -> tuple[str, ...]:
    """The literal labels a namespace must start with (from the first prefix condition), for SQL."""
    for condition in conditions or ():
        if condition.match_type == "prefix":
            labels: list[str] = []
            for label in condition.path:
                if label == "*":
                    break
                labels.append(label)
            return tuple(labels)
    return ()


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValidationError(f"unsupported match type {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


def _list_namespaces(op: ListNamespacesOp, namespaces: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    found = [ns for ns in namespaces if all(_matches(c, ns) for c in op.match_conditions or ())]
    if op.max_depth is not None:
        found = list({ns[: op.max_depth] for ns in found})
    return sorted(found)[op.offset : op.offset + op.limit]
