"""LangGraph adapter: a ``BaseStore`` (long-term memory for LangGraph agents) on ltst-memory's database.

Install with ``pip install -e ".[langgraph]"`` (from a checkout). Items live in ``ltst_store_items``; with an
``index`` config, the configured fields of each item are embedded into ``ltst_store_vectors`` and
``search(query=...)`` ranks by cosine similarity (the best field of an item counts), exactly within the
namespace prefix and filter. Sync and async: see :mod:`ltst_memory.adapters._common`.
"""

from __future__ import annotations

import asyncio
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
        InvalidNamespaceError,
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

    try:
        from langgraph.store.base import validate_op_namespace
    except ImportError:  # langgraph before validate_op_namespace: check the labels the same way
        from langgraph.store.base import _validate_namespace_labels

        def validate_op_namespace(op: Any) -> None:
            for path in _op_namespaces(op):
                _validate_namespace_labels(tuple(path))
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LangGraph adapter needs langgraph: pip install -e ".[langgraph]"') from exc

import numpy as np

from ltst_memory.errors import ConfigurationError, ValidationError
from ltst_memory.models import check_text

from . import _langgraph_ops as lg
from ._common import JsonFilter, Opaque, open_runner
from ._embeddings import EmbedderEmbeddings

__all__ = ["InvalidNamespace", "LTSTStore"]

logger = logging.getLogger(__name__)


class InvalidNamespace(ValidationError, InvalidNamespaceError):
    """A namespace LangGraph refuses (an empty label, a label with ``.``, a label that is not a string):
    both an ltst-memory :class:`~ltst_memory.ValidationError` and LangGraph's ``InvalidNamespaceError``."""


def _op_namespaces(op: Any) -> list[Any]:
    if isinstance(op, (GetOp, PutOp)):
        return [op.namespace]
    if isinstance(op, SearchOp):
        return [op.namespace_prefix]
    if isinstance(op, ListNamespacesOp):
        return [c.path for c in op.match_conditions or ()]
    return []


#: Keys of LangGraph's ``IndexConfig`` this store supports (``distance_type`` as PostgresStore has it).
INDEX_KEYS = frozenset({"dims", "embed", "fields", "distance_type"})
#: Keys of LangGraph's ``TTLConfig`` this store supports.
TTL_KEYS = frozenset({"refresh_on_read", "omit_expired", "default_ttl", "sweep_interval_minutes"})
#: Most bytes of owner + namespace + key (they form one index entry; PostgreSQL's limit is 2,704).
MAX_KEY_BYTES = 2_400


class LTSTStore(BaseStore):
    """A LangGraph ``BaseStore`` in ltst-memory's PostgreSQL database.

    Scoped to one user: give a store opened with ``storage.for_user(user_id)`` or ``user_id=``; every
    item it reads, searches, lists, writes or sweeps is that user's (two users' namespaces are apart,
    also on a database role under Row Level Security). Without a user, construction raises
    :class:`~ltst_memory.ValidationError`; ``LTSTStore.unscoped(storage)`` (or ``unscoped=True``) asks
    for the administrative view: every user's items, and writes owned by no user (shared rows).

    ``index`` is LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``, and ``distance_type``
    ``"cosine"`` (default), ``"l2"`` or ``"inner_product"`` scored as PostgresStore scores them);
    ``embed`` and ``dims`` may be left out to use the store's own embedder. ``ttl`` is a ``TTLConfig``
    (minutes): expired items are left out of reads unless ``omit_expired=False`` (then they are read
    until swept), and are deleted by :meth:`sweep_ttl` or the background sweeper
    (:meth:`start_ttl_sweeper`). Options this store does not support raise
    :class:`~ltst_memory.ValidationError` at construction. Each ``batch``/``abatch`` is one
    transaction; its reads see the state before its writes, as with ``InMemoryStore``.

    On a store given only an ``AsyncConversationStorage``, :meth:`sweep_ttl`, :meth:`start_ttl_sweeper`
    and :meth:`stop_ttl_sweeper` are awaitable, as on LangGraph's ``AsyncPostgresStore``.
    """

    supports_ttl = True

    def __init__(
        self,
        storage: Any,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        user_id: str | None = None,
        unscoped: bool = False,
        async_storage: Any = None,
    ) -> None:
        self._runner = open_runner(storage, async_storage, user_id=user_id, unscoped=unscoped, what="LTSTStore")
        self.ttl_config = _check_ttl_config(ttl)
        self._distance = "cosine"
        self.index_config: dict[str, Any] | None = None
        self.embeddings: Any = None
        if index is not None:
            if not isinstance(index, dict):
                raise ValidationError(f"index must be a dict (an IndexConfig), got {type(index).__name__}")
            unknown = set(index) - INDEX_KEYS
            if unknown:
                raise ValidationError(f"LTSTStore does not support index option(s) {sorted(unknown)}")
            config = dict(index)
            distance = config.get("distance_type", "cosine")
            if distance not in lg.SCORES:
                raise ValidationError(f"unknown distance_type {distance!r}; use one of {sorted(lg.SCORES)}")
            self._distance = distance
            embed = config.get("embed")
            self.embeddings = EmbedderEmbeddings(self._runner.embedder) if embed is None else ensure_embeddings(embed)
            if "dims" not in config:
                config["dims"] = int(getattr(self.embeddings, "dimension", 0) or len(self.embeddings.embed_query("x")))
            config["__fields"] = [(p, "$" if p == "$" else tokenize_path(p)) for p in (config.get("fields") or ["$"])]
            self.index_config = config
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()
        self._sweeper_task: asyncio.Task[None] | None = None

    def _settings(self) -> lg.Settings:
        """How this batch reads (``ttl_config`` is read at each batch, so changing it takes effect)."""
        omit = (self.ttl_config or {}).get("omit_expired", True)
        if not isinstance(omit, bool):
            raise ValidationError(f"ttl['omit_expired'] must be True or False, got {omit!r}")
        return lg.Settings(omit_expired=omit, distance=self._distance)

    @classmethod
    def unscoped(cls, storage: Any, **kwargs: Any) -> LTSTStore:
        """A store over every user's items (the administrative view); see the class docstring."""
        return cls(storage, unscoped=True, **kwargs)

    @property
    def user_id(self) -> str | None:
        """The user whose items this store reads and writes (``None`` when unscoped)."""
        return self._runner.user_id

    # ------------------------------------------------------------------ batch

    def _check_key(self, namespace: tuple[str, ...], key: Any) -> str:
        if not isinstance(key, str):
            raise ValidationError(f"a key is a string, got {type(key).__name__}")
        check_text("key", key, allow_empty=True)
        size = len(lg.ns_path(namespace).encode()) + len(key.encode()) + len((self.user_id or " ").encode())
        if size > MAX_KEY_BYTES:
            raise ValidationError(
                f"namespace and key take {size} bytes in UTF-8; together they may take at most {MAX_KEY_BYTES}"
            )
        return key

    def _plan(self, ops: list[Op]) -> tuple[list[lg.Instruction], list[tuple[int, str, str]], list[str]]:
        """Instructions for ``ops``, the texts to embed per put (op index, field, text) and the queries."""
        plan: list[lg.Instruction] = []
        texts: list[tuple[int, str, str]] = []
        queries: list[str] = []
        for op in ops:  # the whole batch is checked before anything runs
            try:
                validate_op_namespace(op)
            except InvalidNamespaceError as exc:
                raise InvalidNamespace(str(exc)) from None
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                namespace = _namespace(op.namespace)
                plan.append(lg.Get(namespace, self._check_key(namespace, op.key), bool(op.refresh_ttl)))
            elif isinstance(op, SearchOp):
                query = op.query if (op.query and self.embeddings is not None) else None
                if query is not None:
                    check_text("query", query)
                    if query not in queries:
                        queries.append(query)
                dims = int(self.index_config["dims"]) if self.index_config else 0
                JsonFilter("i.value", nested=True).compile(op.filter)  # refused before any query of the batch
                limit = _count("limit", op.limit, maximum=10_000)
                offset = _count("offset", op.offset)
                plan.append(
                    lg.Search(
                        _namespace(op.namespace_prefix), op.filter, limit, offset, query, dims, bool(op.refresh_ttl)
                    )
                )
            elif isinstance(op, ListNamespacesOp):
                _count("limit", op.limit)
                _count("offset", op.offset)
                if op.max_depth is not None:
                    _count("max_depth", op.max_depth)
                plan.append(lg.ListNamespaces(_pushdown_prefix(op.match_conditions)))
            elif isinstance(op, PutOp):
                ttl = op.ttl
                if ttl is not None and (
                    isinstance(ttl, bool)
                    or not isinstance(ttl, (int, float))
                    or not math.isfinite(ttl)
                    or not 0 < ttl <= lg.MAX_TTL_MINUTES
                ):
                    raise ValidationError(
                        f"ttl must be a number of minutes in (0, {lg.MAX_TTL_MINUTES:g}] or None, got {ttl!r}"
                    )
                namespace = _namespace(op.namespace)
                plan.append(lg.Put(namespace, self._check_key(namespace, op.key), op.value, ttl))
                if op.value is not None and not isinstance(op.value, dict):
                    raise ValidationError(f"a value is a dict, got {type(op.value).__name__}")
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
        raw = self._runner.run(lg.run_batch, self.user_id, Opaque(plan), self._settings())
        return self._results(ops, raw)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`: on the async store when given one, with the embeddings' async methods."""
        ops = list(ops)
        plan, texts, queries = self._plan(ops)
        if self.embeddings is not None:
            vectors = await self.embeddings.aembed_documents([t for _, _, t in texts]) if texts else []
            query_vectors = [await self.embeddings.aembed_query(q) for q in queries]
            self._finish_plan(plan, texts, vectors, queries, query_vectors)
        raw = await self._runner.arun(lg.run_batch, self.user_id, Opaque(plan), self._settings())
        return self._results(ops, raw)

    # ------------------------------------------------------------------ TTL

    @property
    def _async_only(self) -> bool:
        return self._runner.sync is None

    def sweep_ttl(self) -> Any:
        """Delete expired items (of this store's user) now; return how many were deleted. Awaitable
        (a coroutine) on a store given only an async storage."""
        if self._async_only:
            return self.asweep_ttl()
        return self._runner.run(lg.sweep, self.user_id)

    async def asweep_ttl(self) -> int:
        """Async :meth:`sweep_ttl`."""
        return int(await self._runner.arun(lg.sweep, self.user_id))

    def _interval(self, sweep_interval_minutes: Any) -> float:
        interval = sweep_interval_minutes
        if interval is None:
            interval = (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval):
            raise ValidationError(f"sweep_interval_minutes must be a positive number, got {interval!r}")
        if interval <= 0:
            raise ValidationError(f"sweep_interval_minutes must be a positive number, got {interval!r}")
        return float(interval)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> Any:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the TTL config's, else 5).

        With a sync storage: in a daemon thread; returns a ``concurrent.futures.Future`` that completes
        when :meth:`stop_ttl_sweeper` stops it. With only an async storage: an asyncio task on the
        running loop, and the call is awaitable (it returns the task), as on ``AsyncPostgresStore``;
        called outside a running event loop it raises :class:`~ltst_memory.ConfigurationError` at once.
        """
        interval = self._interval(sweep_interval_minutes)
        if self._async_only:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ConfigurationError(
                    "this LTSTStore has only an async storage: start its TTL sweeper with "
                    "'await store.start_ttl_sweeper()' inside a running event loop"
                ) from None
            if self._sweeper_task is None or self._sweeper_task.done():
                self._sweeper_task = loop.create_task(self._sweep_forever(interval), name="ltst-store-ttl-sweeper")
            return _Ready(self._sweeper_task)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            future.set_result(None)
            return future
        self._sweeper_stop.clear()

        def loop_() -> None:
            try:
                while not self._sweeper_stop.wait(interval * 60):
                    try:
                        removed = self._runner.run(lg.sweep, self.user_id)
                        if removed:
                            logger.info("TTL sweep deleted %d expired store items", removed)
                    except Exception:  # keep sweeping after a transient failure
                        logger.exception("TTL sweep failed")
            finally:
                future.set_result(None)

        self._sweeper = threading.Thread(target=loop_, name="ltst-store-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return future

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval * 60)
            try:
                removed = await self.asweep_ttl()
                if removed:
                    logger.info("TTL sweep deleted %d expired store items", removed)
            except Exception:  # keep sweeping after a transient failure
                logger.exception("TTL sweep failed")

    def stop_ttl_sweeper(self, timeout: float | None = None) -> Any:
        """Stop the sweeper; return ``True`` if it stopped within ``timeout`` seconds (awaitable on a
        store given only an async storage)."""
        if self._async_only:
            return self._astop_task(timeout)
        if self._sweeper is None:
            return True
        self._sweeper_stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped

    async def _astop_task(self, timeout: float | None) -> bool:
        task, self._sweeper_task = self._sweeper_task, None
        if task is None or task.done():
            return True
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self._sweeper_task = task
        return bool(done)


class _Ready:
    """An awaitable that is already done (``await`` returns ``value``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        if False:  # pragma: no cover - makes this a generator
            yield
        return self.value


def _check_ttl_config(ttl: Any) -> TTLConfig | None:
    if ttl is None:
        return None
    if not isinstance(ttl, dict):
        raise ValidationError(f"ttl must be a dict (a TTLConfig), got {type(ttl).__name__}")
    unknown = set(ttl) - TTL_KEYS
    if unknown:
        raise ValidationError(f"LTSTStore does not support ttl option(s) {sorted(unknown)}")
    for name in ("refresh_on_read", "omit_expired"):
        if name in ttl and not isinstance(ttl[name], bool):
            raise ValidationError(f"ttl[{name!r}] must be True or False, got {ttl[name]!r}")
    default = ttl.get("default_ttl")
    if default is not None and (
        isinstance(default, bool)
        or not isinstance(default, (int, float))
        or not math.isfinite(default)
        or not 0 < default <= lg.MAX_TTL_MINUTES
    ):
        raise ValidationError(f"default_ttl must be a number of minutes in (0, {lg.MAX_TTL_MINUTES:g}] or None")
    interval = ttl.get("sweep_interval_minutes")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0):
        raise ValidationError(f"sweep_interval_minutes must be a positive number, got {interval!r}")
    return ttl  # type: ignore[return-value]


def _count(name: str, value: Any, *, maximum: int | None = None) -> int:
    """A non-negative integer argument (``limit``, ``offset``, ``max_depth``), else ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValidationError(f"{name} must not be negative, got {value}")
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name} may be at most {maximum}, got {value}")
    return value


def _namespace(namespace: Any) -> tuple[str, ...]:
    if isinstance(namespace, str) or not isinstance(namespace, (tuple, list)):
        raise ValidationError(f"a namespace is a tuple of strings, got {namespace!r}")
    lg.ns_path(namespace)  # checks every label
    return tuple(namespace)


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
