"""What the sync and async stores share: settings resolution, turning an instruction's cursor into
its result, the executors' rule, and which operations may run on a read replica."""

from __future__ import annotations

import inspect
import logging
import math
from contextvars import ContextVar, Token
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ._connection import check_vector_extension, connect
from ._kernel import REGISTRY, Call, Core, Embed, Op, Operation, Query, declaration
from .cache import SessionCache
from .config import Settings
from .embeddings import Embedder, default_embedder
from .errors import ConfigurationError, StoreClosedError
from .migrate import ensure_embedding_model, migrate

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def resolve_settings(
    dsn: str | None,
    data_dir: str | Path | None,
    settings: Settings | None,
    overrides: dict[str, Any],
) -> Settings:
    """Explicit arguments > ``settings`` > environment > defaults."""
    for name, value in (("dsn", dsn), ("read_dsn", overrides.get("read_dsn"))):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    if settings is None:
        return Settings.from_env(dsn=dsn, data_dir=data_dir, **overrides)
    given = {k: v for k, v in {"dsn": dsn, "data_dir": data_dir, **overrides}.items() if v is not None}
    from dataclasses import replace

    return replace(settings, **given) if given else settings


def make_core(settings: Settings, embedder: Embedder | None) -> Core:
    if embedder is None:
        embedder = default_embedder(settings.embedding_model)
    for attribute in ("embed", "dimension", "model_name"):
        if not hasattr(embedder, attribute):
            raise ConfigurationError(f"embedder {embedder!r} has no {attribute!r}; see ltst_memory.Embedder")
    return Core(settings=settings, embedder=embedder, cache=SessionCache())


def describe(query: Query) -> str:
    first = query.sql.strip().splitlines()[0] if query.sql.strip() else ""
    return first[:80] + (f" x{len(query.many)}" if query.many is not None else "")


def result_of(cursor: Any, query: Query) -> Any:
    """The value an operation receives for ``query`` once ``cursor`` has run it (non-``many`` case)."""
    if query.fetch == "all":
        return cursor.fetchall()
    if query.fetch == "one":
        return cursor.fetchone()
    if query.fetch == "rowcount":
        return cursor.rowcount
    return None


def results_or_first_error(outcomes: list[Any]) -> list[Any]:
    """``outcomes`` (results, or the exceptions of the operations that failed) if none failed; else
    raise the first exception (a :class:`~ltst_memory._kernel.Parallel`'s result)."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


def check_open(closed: bool) -> None:
    if closed:
        raise StoreClosedError("this store is closed; open a new ConversationStorage")


# --------------------------------------------------------------------------- read replica


def read_only_operations() -> frozenset[str]:
    """The operations declared ``read_only`` (``module.function``): a store opened with ``read_dsn`` /
    ``read_pool`` runs them on the replica, everything else on the primary (ltst_memory/_kernel.py)."""
    return frozenset(f"{d.function.__module__}.{d.function.__qualname__}" for d in REGISTRY.values() if d.read_only)


def __getattr__(name: str) -> Any:
    if name == "READ_ONLY_OPERATIONS":  # derived when asked: operation modules declare as they are imported
        return read_only_operations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_by_code: dict[Any, Operation] = {}


def is_read_only(op: Any) -> bool:
    """Whether ``op`` (an operation function, or a generator it returned) is declared ``read_only``."""
    if inspect.isgenerator(op):
        if len(_by_code) != len(REGISTRY):
            _by_code.clear()
            _by_code.update((d.function.__code__, d) for d in REGISTRY.values())
        declared = _by_code.get(op.gi_code)
    else:
        declared = declaration(op)
    return declared is not None and declared.read_only


def needs_transaction(readonly: bool, query: Query) -> bool:
    """Whether ``query`` runs in the operation's transaction (opened now if it is not yet): the queries of
    an operation that writes, but for a lone ``atomic`` statement, and those of a read-only operation
    from its first ``local`` query (transaction-local settings) on. Other statements run on their own,
    which spares the BEGIN and COMMIT round trips and changes nothing at READ COMMITTED, where each
    statement of a transaction takes a new snapshot anyway."""
    return query.local or not (readonly or query.atomic or query.alone)


def check_outside_transaction(op: Op[Any], instruction: Embed | Call, wrote: bool) -> None:
    """The executors' rule (ltst_memory/_ops.py): no embedding and no callback of the user's inside an
    operation's transaction once it may have written (``wrote``). A connection held outside any
    transaction is given back to the pool first; a transaction that only read (the transaction-local
    settings of a read-only or scoped operation) is kept."""
    if wrote and not (isinstance(instruction, Embed) and instruction.in_transaction):
        raise RuntimeError(
            f"operation {getattr(op, '__name__', op)} yields {type(instruction).__name__} inside its transaction; "
            "embed or call back before its first write (mark the reads before it Query(alone=True))"
        )


#: How far (seconds) the server replays behind its primary: 0 when it has replayed all the WAL it
#: received (or is not a standby), else the age of the last transaction it replayed; NULL (unknown)
#: when it has WAL to replay and has replayed no transaction since it started. A standby that lost
#: its primary has nothing left to replay: 0.
REPLICA_LAG = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0.0
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
       END AS lag
"""

#: How long (seconds at most) a lag check waits for a connection of the replica pool, and for an
#: unknown lag to become known (a standby that just started, with WAL in flight): past it, the lag
#: counts as infinite.
REPLICA_CHECK_TIMEOUT = 1.0

#: How often (seconds) an unknown lag is asked again within :data:`REPLICA_CHECK_TIMEOUT`.
REPLICA_UNKNOWN_RETRY = 0.05


class ReplicaHealth:
    """Whether a store's read replica takes its reads now: reachable, and no more than
    ``settings.read_max_lag`` seconds behind. Checked at most every ``read_check_interval`` seconds (ten
    times less often while unusable); a change is logged, as a warning when reads move to the primary."""

    def __init__(self, settings: Settings) -> None:
        self.max_lag = settings.read_max_lag
        self.interval = settings.read_check_interval
        self.usable = True
        self.checked_at: float | None = None
        self.lag: float | None = None

    def due(self, now: float) -> bool:
        """Whether the replica is to be checked again before a read at ``now`` (``time.monotonic()``)."""
        if self.checked_at is None:
            return True
        return now - self.checked_at >= (self.interval if self.usable else 10 * self.interval)

    def record(self, now: float, lag: float | None, error: BaseException | None) -> bool:
        """Note the outcome of a check (the ``lag``, or the ``error`` that stopped it); return whether
        the replica takes reads."""
        usable = error is None and lag is not None and lag <= self.max_lag
        if not usable and (self.usable or self.checked_at is None):
            if error is not None:
                why = f"cannot be reached ({type(error).__name__}: {error})"
            elif lag is None or math.isinf(lag):
                why = f"has WAL to replay and replayed no transaction within {REPLICA_CHECK_TIMEOUT:g} s of the check"
            else:
                why = f"replays {lag:.1f} s behind the primary (read_max_lag {self.max_lag:g} s)"
            logger.warning("read replica %s: reads go to the primary", why)
        elif usable and not self.usable:
            logger.warning("read replica usable again (%.1f s behind): reads go to it", lag or 0.0)
        self.usable, self.checked_at, self.lag = usable, now, lag
        return usable


#: ids of the stores whose operations run on the primary in the current thread / asyncio task.
_on_primary: ContextVar[frozenset[int]] = ContextVar("ltst_on_primary", default=frozenset())


def on_replica(store: Any, op: Op[Any], readonly: bool | None) -> bool:
    """Whether ``store`` runs ``op`` on its read replica: it has one, the operation only reads
    (``readonly``; ``None``: look ``op`` up), and no ``with store.primary:`` block is active."""
    if store._read_pool is None:
        return False
    if readonly is None:
        readonly = is_read_only(op)
    return readonly and id(store) not in _on_primary.get()


class OnPrimary:
    """``with store.primary:`` — within the block (this thread or asyncio task), every operation of
    ``store`` runs on the primary, so reads see the writes just committed. Re-entrant; a no-op for a
    store without a read replica."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._tokens: list[Token[frozenset[int]]] = []

    def __enter__(self) -> Any:
        self._tokens.append(_on_primary.set(_on_primary.get() | {id(self._store)}))
        return self._store

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _on_primary.reset(self._tokens.pop())


def primary_reads(self: Any) -> OnPrimary:
    """A context manager: inside ``with store.primary:`` this store reads from the primary, not
    the read replica (read-your-writes in the current thread or asyncio task). See docs/scaling.md."""
    return OnPrimary(self)


def check_replica(dsn: str, timeout: float) -> None:
    """Connect once to the read replica ``dsn`` (failing fast, before a pool would retry for ``timeout``
    seconds) and check that it has the schema. Never migrates: migrations run on the primary only."""
    with connect(dsn, replica=True, connect_timeout=max(1, int(timeout))) as conn:
        check_vector_extension(conn)


def prepare_database(conninfo: str, settings: Settings, embedder: Embedder) -> None:
    """Before a store opens its pool on the primary: migrate (unless ``auto_migrate`` is off), check
    pgvector and that the database was set up for ``embedder``'s model."""
    with connect(conninfo, connect_timeout=int(settings.pool_timeout)) as conn:
        if settings.auto_migrate:
            migrate(conn)
        check_vector_extension(conn)
        ensure_embedding_model(conn, embedder.model_name, embedder.dimension)


def pool_sizes(settings: Settings) -> dict[str, Any]:
    """The size and timeout arguments of every pool a store opens (primary and replica, sync and async)."""
    return {"min_size": settings.pool_min_size, "max_size": settings.pool_max_size, "timeout": settings.pool_timeout}
