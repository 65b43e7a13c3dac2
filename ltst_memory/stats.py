"""Observability: operation timings, index usage, table sizes, storage growth and cache hit rates.

Everything here is local. :func:`track_operation` times every store call (the executors wrap each
operation in it) and keeps the figures in memory on the store; ``storage.stats()`` adds what
PostgreSQL knows (row counts, sizes, index scans, buffer cache hits, growth per day). When the
``opentelemetry-api`` package is installed each call also becomes a span (``ltst.<operation>``) of
whatever tracer provider the application configured, and when ``prometheus-client`` is installed
a histogram ``ltst_operation_seconds{operation=...}`` is updated in its default registry. Nothing
is ever sent anywhere by ltst-memory itself: no telemetry, no exporter is configured here. Set
``LTST_INSTRUMENTATION=0`` to skip OpenTelemetry and Prometheus even when they are installed.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any

from ._kernel import MAINTENANCE, Core, Op, Query, operation
from .models import check_limit

__all__ = [
    "OperationMetrics",
    "metrics_of",
    "stats",
    "track_operation",
]

logger = logging.getLogger(__name__)

#: How many recent durations per operation are kept for percentiles.
WINDOW = 1024


class OperationMetrics:
    """Thread-safe timings of store operations, kept in memory (a window of recent calls per name)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._counts: dict[str, list[float]] = {}  # name -> [calls, errors, total_s, max_s]
        self._recent: dict[str, deque[float]] = {}
        self.started = time.time()

    def record(self, name: str, seconds: float, *, error: bool = False) -> None:
        """Add one call of ``name`` that took ``seconds`` (``error`` if it raised)."""
        with self._lock:
            entry = self._counts.get(name)
            if entry is None:  # (not setdefault: no list and no deque made per call)
                entry = self._counts[name] = [0, 0, 0.0, 0.0]
                self._recent[name] = deque(maxlen=self._window)
            entry[0] += 1
            if error:
                entry[1] += 1
            entry[2] += seconds
            if seconds > entry[3]:
                entry[3] = seconds
            self._recent[name].append(seconds)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """``{operation: {calls, errors, total_ms, mean_ms, p50_ms, p95_ms, max_ms}}``, sorted by name."""
        with self._lock:
            items = [(name, list(entry), sorted(self._recent[name])) for name, entry in self._counts.items()]
        out: dict[str, dict[str, float | int]] = {}
        for name, (calls, errors, total, worst), recent in sorted(items):
            out[name] = {
                "calls": int(calls),
                "errors": int(errors),
                "total_ms": round(total * 1000, 3),
                "mean_ms": round(total * 1000 / calls, 3) if calls else 0.0,
                "p50_ms": round(_percentile(recent, 0.50) * 1000, 3),
                "p95_ms": round(_percentile(recent, 0.95) * 1000, 3),
                "max_ms": round(worst * 1000, 3),
            }
        return out

    def reset(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._counts.clear()
            self._recent.clear()
            self.started = time.time()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


_METRICS_ATTRIBUTE = "_ltst_operation_metrics"
_create_lock = threading.Lock()


def metrics_of(core: Core) -> OperationMetrics:
    """The :class:`OperationMetrics` of a store's core (created on first use)."""
    metrics = core.__dict__.get(_METRICS_ATTRIBUTE)
    if metrics is None:
        with _create_lock:
            metrics = core.__dict__.setdefault(_METRICS_ATTRIBUTE, OperationMetrics())
    return metrics  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- optional instrumentation

_instruments: dict[str, Any] = {}


def _instrumentation() -> tuple[Any, Any]:
    """``(tracer, histogram)`` or ``None`` for each, looked up once per process (the tracer is ``None``
    while OpenTelemetry has no tracer provider, asked per call)."""
    if "ready" not in _instruments:
        with _create_lock:
            if "ready" not in _instruments:
                tracer = histogram = unconfigured = None
                if os.environ.get("LTST_INSTRUMENTATION", "1").strip().lower() not in ("0", "false", "no", "off"):
                    with contextlib.suppress(ImportError):
                        from opentelemetry import trace

                        tracer = trace.get_tracer("ltst_memory")
                        if type(tracer) is trace.ProxyTracer:  # no tracer provider set yet: asked per call
                            named = _PROVIDER_VARIABLE in os.environ or not hasattr(trace, "_TRACER_PROVIDER")
                            unconfigured = functools.partial(_no_provider if named else _none_set, trace)
                    with contextlib.suppress(ImportError):
                        histogram = _prometheus_histogram()
                _instruments.update(tracer=tracer, histogram=histogram, unconfigured=unconfigured, ready=True)
    unconfigured = _instruments["unconfigured"]
    if unconfigured is not None and unconfigured():
        return None, _instruments["histogram"]
    return _instruments["tracer"], _instruments["histogram"]


#: The histogram's name in Prometheus, and its buckets (prometheus_client's default ones), in seconds.
PROMETHEUS_HISTOGRAM = "ltst_operation_seconds"
PROMETHEUS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class OperationHistogram:
    """The Prometheus histogram ``ltst_operation_seconds{operation=...}`` of every store of the process.

    A call counts in its bucket under one lock (``observe``); Prometheus reads the counts when it scrapes
    (a custom collector of ``prometheus_client``'s registry, its documented way to expose figures kept
    elsewhere). prometheus_client's own ``Histogram`` costs a store call ~25 us in place (its label lookup
    and one lock per counter touched), a tenth of a read of one row."""

    def __init__(self, buckets: tuple[float, ...] = PROMETHEUS_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._bounds = buckets
        self._series: dict[str, list[float]] = {}  # operation -> [count per bucket..., count above, sum]

    def observe(self, name: str, seconds: float) -> None:
        """Count one call of ``name`` that took ``seconds``."""
        index = bisect.bisect_left(self._bounds, seconds)  # the first bucket whose bound (le) holds it
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = [0.0] * (len(self._bounds) + 2)
            series[index] += 1
            series[-1] += seconds

    def labels(self, *, operation: str) -> Any:
        """``histogram.labels(operation=...).observe(seconds)``, as with prometheus_client's."""
        return _Observer(self, operation)

    def describe(self) -> list[Any]:
        from prometheus_client.core import HistogramMetricFamily

        return [
            HistogramMetricFamily(
                PROMETHEUS_HISTOGRAM, "Duration of ltst-memory store operations", labels=["operation"]
            )
        ]

    def collect(self) -> list[Any]:
        """The histogram's samples, for Prometheus (cumulative buckets, as its exposition format wants)."""
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(
            PROMETHEUS_HISTOGRAM, "Duration of ltst-memory store operations", labels=["operation"]
        )
        with self._lock:
            series = {name: list(values) for name, values in self._series.items()}
        for name, values in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self._bounds, math.inf), values[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            family.add_metric([name], buckets, values[-1])
        return [family]


class _Observer:
    """One operation's series of an :class:`OperationHistogram`."""

    def __init__(self, histogram: OperationHistogram, name: str) -> None:
        self.histogram, self.name = histogram, name

    def observe(self, seconds: float) -> None:
        self.histogram.observe(self.name, seconds)


def _prometheus_histogram() -> Any:
    """The process's :class:`OperationHistogram`, registered in prometheus_client's default registry
    (``ImportError`` without prometheus_client). Registered before (a module loaded twice): that one."""
    import prometheus_client

    histogram = OperationHistogram()
    try:
        prometheus_client.REGISTRY.register(histogram)
    except ValueError:  # already registered (e.g. module reloaded): the same histogram
        return prometheus_client.REGISTRY._names_to_collectors.get(PROMETHEUS_HISTOGRAM)
    return histogram


def _no_provider(trace: Any) -> bool:
    """Whether OpenTelemetry has no tracer provider (none set, none named by the environment): its
    spans would record nothing, and opening one costs ~10 us of a 0.3 ms read."""
    return type(trace.get_tracer_provider()) is trace.ProxyTracerProvider


#: The environment variable that names OpenTelemetry's tracer provider (read by ``get_tracer_provider``).
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"


def _none_set(trace: Any) -> bool:
    """:func:`_no_provider` when the environment named no provider as the store first timed a call:
    whether ``trace.set_tracer_provider`` was not called (the global it sets, once a process, read
    without ``get_tracer_provider``'s look at ``os.environ``, a third of a microsecond a call)."""
    return trace._TRACER_PROVIDER is None


def track_operation(core: Core, op: object) -> contextlib.AbstractContextManager[None]:
    """Time one store call (an operation generator ``op``) and record it under the operation's name.

    Used by the sync and async executors around each call (``with track_operation(core, op):``); also
    opens an OpenTelemetry span and feeds a Prometheus histogram when those packages are installed.
    """
    name = str(getattr(op, "__name__", None) or type(op).__name__)
    tracer, histogram = _instrumentation()
    return _Tracked(metrics_of(core), name, tracer, histogram)


class _Tracked:
    """The context manager of :func:`track_operation` (a class: a store call pays ~1 us for it, not the
    ~4 us of a generator-based one)."""

    __slots__ = ("histogram", "metrics", "name", "span", "started", "tracer")

    def __init__(self, metrics: OperationMetrics, name: str, tracer: Any, histogram: Any) -> None:
        self.metrics = metrics
        self.name = name
        self.tracer = tracer
        self.histogram = histogram
        self.span: Any = None
        self.started = 0.0

    def __enter__(self) -> None:
        if self.tracer is not None:
            span = self.tracer.start_as_current_span(f"ltst.{self.name}", attributes={"ltst.operation": self.name})
            span.__enter__()
            self.span = span
        self.started = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.span is not None:
                self.span.__exit__(exc_type, exc, tb)
        finally:
            elapsed = time.perf_counter() - self.started
            self.metrics.record(self.name, elapsed, error=exc_type is not None)
            histogram = self.histogram
            if histogram is not None:
                if histogram.__class__ is OperationHistogram:
                    histogram.observe(self.name, elapsed)
                else:  # prometheus_client's (registered by another copy of this module)
                    histogram.labels(operation=self.name).observe(elapsed)


# --------------------------------------------------------------------------- SQL

TABLE_STATS = """
SELECT c.relname AS table_name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       coalesce(s.n_live_tup, 0) AS live_rows_estimate,
       coalesce(s.seq_scan, 0) AS seq_scans,
       coalesce(s.idx_scan, 0) AS index_scans,
       s.last_autovacuum, s.last_autoanalyze
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
ORDER BY pg_total_relation_size(c.oid) DESC, c.relname
"""

INDEX_STATS = """
SELECT s.relname AS table_name, s.indexrelname AS index_name,
       s.idx_scan AS scans, s.idx_tup_read AS tuples_read, s.idx_tup_fetch AS tuples_fetched,
       pg_relation_size(s.indexrelid) AS bytes, am.amname AS method
FROM pg_stat_user_indexes AS s
JOIN pg_class AS i ON i.oid = s.indexrelid
JOIN pg_am AS am ON am.oid = i.relam
WHERE s.schemaname = current_schema()
ORDER BY s.relname, s.indexrelname
"""

ROW_COUNTS = """
SELECT (SELECT count(*) FROM conversation_sessions) AS sessions,
       (SELECT count(*) FROM conversation_messages) AS messages,
       (SELECT count(*) FROM conversation_messages WHERE embedding IS NULL) AS messages_without_embedding,
       (SELECT count(DISTINCT user_id) FROM conversation_sessions) AS users,
       (SELECT count(*) FROM conversation_context) AS context,
       (SELECT count(*) FROM conversation_context WHERE expires_at IS NOT NULL AND expires_at <= now())
           AS expired_context,
       (SELECT count(*) FROM user_preferences) AS preferences,
       (SELECT count(*) FROM session_relationships) AS relationships
"""

# The days (with their ends) first, then one count per table grouped by day: on a Citus cluster
# (docs/citus.md) a subquery per day over a distributed table is refused, a join with the days is not.
GROWTH = """
WITH days AS MATERIALIZED (
    SELECT day, day + interval '1 day' AS next_day
    FROM generate_series(date_trunc('day', now()) - make_interval(days => %(days)s - 1),
                         date_trunc('day', now()), interval '1 day') AS day
),
messages AS MATERIALIZED (
    SELECT d.day, count(*) AS n FROM days AS d
    JOIN conversation_messages AS m ON m."timestamp" >= d.day AND m."timestamp" < d.next_day
    GROUP BY d.day
),
sessions AS MATERIALIZED (
    SELECT d.day, count(*) AS n FROM days AS d
    JOIN conversation_sessions AS s ON s.created_at >= d.day AND s.created_at < d.next_day
    GROUP BY d.day
)
SELECT d.day::date AS day, coalesce(m.n, 0) AS messages, coalesce(s.n, 0) AS sessions
FROM days AS d LEFT JOIN messages AS m USING (day) LEFT JOIN sessions AS s USING (day)
ORDER BY d.day
"""

DATABASE_STATS = """
SELECT current_database() AS database,
       pg_database_size(current_database()) AS database_bytes,
       current_setting('server_version') AS postgres,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector,
       d.blks_hit, d.blks_read, d.xact_commit, d.xact_rollback
FROM pg_stat_database AS d WHERE d.datname = current_database()
"""

METADATA = "SELECT key, value FROM ltst_metadata ORDER BY key"


def _ratio(hits: float, misses: float) -> float | None:
    total = hits + misses
    return round(hits / total, 4) if total else None


def _cache_stats(*owners: Any) -> dict[str, Any] | None:
    """Hit rates of the in-memory cache of a store (its ``cache_stats()``) or of its core, if any."""
    candidates = []
    for owner in owners:
        candidates.append(getattr(owner, "cache_stats", None))
        for attribute in ("cache", "_cache"):
            cache = getattr(owner, attribute, None)
            if cache is not None:
                candidates += [getattr(cache, "cache_stats", None), getattr(cache, "stats", None)]
    for function in candidates:
        if callable(function):
            try:
                value = function()
            except Exception:  # observability must never break the caller
                logger.warning("cache statistics unavailable", exc_info=True)
                return None
            return dict(value) if isinstance(value, dict) else {"value": value}
    return None


@operation(group=MAINTENANCE, per_user=False)
def stats(core: Core, growth_days: int = 30) -> Op[dict[str, Any]]:
    """Everything worth watching about this store, as a JSON-serialisable dict.

    Keys: ``operations`` (per operation of *this* store object since it opened: calls, errors, mean,
    p50, p95 and max in milliseconds), ``rows`` (exact counts), ``tables`` (bytes on disk, index
    bytes, sequential and index scans), ``indexes`` (scans and size of every index — an index with 0
    scans is unused), ``growth`` (messages by message timestamp and sessions created, per day, for the
    last ``growth_days`` days), ``database`` (size, versions, PostgreSQL buffer cache hit ratio),
    ``embedding`` (model and dimension recorded in the database) and ``cache`` (hit rates of the
    store's in-memory cache, or ``None`` without one). Server counters (scans, buffer hits) are
    PostgreSQL's cumulative statistics and may lag a second behind.
    """
    days = check_limit("growth_days", growth_days, minimum=1, maximum=3650)
    operations = metrics_of(core).snapshot()
    database = yield Query(DATABASE_STATS, fetch="one")
    rows = yield Query(ROW_COUNTS, fetch="one")
    tables = yield Query(TABLE_STATS)
    indexes = yield Query(INDEX_STATS)
    growth = yield Query(GROWTH, {"days": days})
    metadata = yield Query(METADATA)
    meta = {r["key"]: r["value"] for r in metadata}
    db = dict(database or {})
    hits, reads = int(db.pop("blks_hit", 0) or 0), int(db.pop("blks_read", 0) or 0)
    db["buffer_cache_hit_ratio"] = _ratio(hits, reads)
    return {
        "operations": operations,
        "rows": {k: int(v) for k, v in (rows or {}).items()},
        "tables": [_jsonable(r) for r in tables],
        "indexes": [_jsonable(r) for r in indexes],
        "unused_indexes": [r["index_name"] for r in indexes if not r["scans"]],
        "growth": [{"day": r["day"].isoformat(), "messages": r["messages"], "sessions": r["sessions"]} for r in growth],
        "database": _jsonable(db),
        "embedding": {
            "model": meta.get("embedding_model"),
            "dimension": int(meta["embedding_dimension"]) if meta.get("embedding_dimension") else None,
        },
        "cache": _cache_stats(core),
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def format_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
