"""Observability: operation timings on the store, database statistics, optional instrumentation."""

from __future__ import annotations

import json

import pytest

from ltst_memory import AsyncConversationStorage, ConversationMessage, ConversationSession, ConversationStorage
from ltst_memory import stats as stats_module
from ltst_memory.errors import SessionNotFoundError, ValidationError
from ltst_memory.stats import OperationMetrics, format_bytes


def _fill(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s1", "u1"))
    store.store_messages([ConversationMessage("s1", "human", f"message {i}") for i in range(5)])
    store.search_messages("message", session_id="s1", limit=3)
    store.search_messages("message", session_id="s1", limit=3)


def test_stats_reports_operations_rows_sizes_indexes_and_growth(store: ConversationStorage) -> None:
    _fill(store)
    with pytest.raises(SessionNotFoundError):
        store.get_messages("missing")
    report = store.stats()
    json.dumps(report)  # JSON-serialisable as promised

    ops = report["operations"]
    assert ops["search_messages"]["calls"] == 2 and ops["search_messages"]["errors"] == 0
    assert ops["store_messages"]["calls"] == 1
    assert ops["get_messages"] == {**ops["get_messages"], "calls": 1, "errors": 1}
    for figures in ops.values():
        assert 0 <= figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]

    assert report["rows"]["sessions"] == 1 and report["rows"]["messages"] == 5 and report["rows"]["users"] == 1
    tables = {t["table_name"]: t for t in report["tables"]}
    assert tables["conversation_messages"]["total_bytes"] > 0
    indexes = {i["index_name"]: i for i in report["indexes"]}
    assert indexes["idx_messages_user_time"]["method"] == "btree"
    assert set(report["unused_indexes"]) <= set(indexes)
    assert report["growth"][-1]["messages"] == 5 and report["growth"][-1]["sessions"] == 1
    assert len(report["growth"]) == 30
    assert report["embedding"] == {"model": "hashing-bow", "dimension": 384}
    assert report["database"]["database_bytes"] > 0 and report["database"]["pgvector"]
    assert store.stats(growth_days=3)["growth"][-1]["messages"] == 5
    with pytest.raises(ValidationError):
        store.stats(growth_days=0)


def test_metrics_belong_to_one_store(store: ConversationStorage, database_dsn: str, hashing_embedder) -> None:
    _fill(store)
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as other:
        assert "search_messages" not in other.stats()["operations"]


def test_cache_hit_rates_come_from_the_store_cache(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("c1", "u1"))
    if not hasattr(store, "cache_stats"):
        pytest.skip("this build has no session cache")
    before = store.stats()["cache"]
    store.get_session("c1")
    store.get_session("c1")
    after = store.stats()["cache"]
    assert after == store.cache_stats()
    assert after["hits"] + after["misses"] > before["hits"] + before["misses"]
    assert 0.0 <= after["hit_rate"] <= 1.0


def test_a_cache_on_the_core_is_reported_too() -> None:
    class FakeCache:
        def cache_stats(self) -> dict[str, float]:
            return {"hits": 3, "misses": 1, "hit_rate": 0.75}

    class Owner:
        cache = FakeCache()

    assert stats_module._cache_stats(object(), Owner()) == {"hits": 3, "misses": 1, "hit_rate": 0.75}
    assert stats_module._cache_stats(object()) is None


async def test_async_store_records_timings(astore: AsyncConversationStorage) -> None:
    await astore.create_session(ConversationSession("a1", "u1"))
    await astore.store_message(ConversationMessage("a1", "human", "hello"))
    report = await astore.stats()
    assert report["operations"]["create_session"]["calls"] == 1
    assert report["cache"] is None or "hit_rate" in report["cache"]
    assert report["rows"]["messages"] == 1


def test_operation_metrics_percentiles_and_reset() -> None:
    metrics = OperationMetrics(window=100)
    for ms in range(1, 101):
        metrics.record("op", ms / 1000)
    metrics.record("op", 0.5, error=True)
    figures = metrics.snapshot()["op"]
    assert figures["calls"] == 101 and figures["errors"] == 1 and figures["max_ms"] == 500.0
    assert 45 <= figures["p50_ms"] <= 55 and 90 <= figures["p95_ms"] <= 100  # window keeps the last 100
    metrics.reset()
    assert metrics.snapshot() == {}
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(10) == "10 B"


def test_prometheus_histogram_and_opentelemetry_spans_when_installed(
    store: ConversationStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    trace = pytest.importorskip("opentelemetry.sdk.trace")
    exporters = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = trace.TracerProvider()
    exporter = exporters.InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(stats_module, "_instruments", {})
    monkeypatch.setenv("LTST_INSTRUMENTATION", "1")
    import opentelemetry.trace

    monkeypatch.setattr(opentelemetry.trace, "get_tracer", lambda name, *a, **k: provider.get_tracer(name))
    store.create_session(ConversationSession("p1", "u1"))
    assert any(span.name == "ltst.create_session" for span in exporter.get_finished_spans())
    count = prometheus_client.REGISTRY.get_sample_value("ltst_operation_seconds_count", {"operation": "create_session"})
    assert count is not None and count >= 1


def test_spans_start_when_a_tracer_provider_is_set_after_the_first_call(
    store: ConversationStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opentelemetry.trace as api
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setattr(stats_module, "_instruments", {})
    monkeypatch.setenv("LTST_INSTRUMENTATION", "1")
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    monkeypatch.setattr(api, "_TRACER_PROVIDER", None)  # no provider yet: calls open no span
    store.create_session(ConversationSession("t1", "u1"))
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(api, "_TRACER_PROVIDER", provider)  # what trace.set_tracer_provider sets, once a process
    store.get_recent_messages("t1")
    assert [span.name for span in exporter.get_finished_spans()] == ["ltst.get_recent_messages"]


def test_instrumentation_can_be_switched_off(store: ConversationStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_module, "_instruments", {})
    monkeypatch.setenv("LTST_INSTRUMENTATION", "0")
    store.create_session(ConversationSession("q1", "u1"))
    assert stats_module._instruments["tracer"] is None and stats_module._instruments["histogram"] is None
    assert store.stats()["operations"]["create_session"]["calls"] == 1
