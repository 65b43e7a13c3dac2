"""The embedded server is configured for a memory store once, and never a server the user owns."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ltst_memory import _tuning
from ltst_memory._connection import acquire_embedded, release_embedded

GB = 1024**3


def test_recommended_settings_scale_with_memory_within_bounds() -> None:
    small = _tuning.recommended_settings(512 * 1024**2)
    large = _tuning.recommended_settings(256 * GB)
    assert small["shared_buffers"] == "128MB"  # never below PostgreSQL's own default
    assert large["shared_buffers"] == "1024MB"  # capped: a library must not take a big server's RAM
    assert _tuning.recommended_settings(16 * GB)["shared_buffers"] == "1024MB"
    assert _tuning.recommended_settings(4 * GB)["shared_buffers"] == "512MB"
    assert small["jit"] == large["jit"] == "off"


def test_embedded_server_runs_with_the_settings(pg_admin_dsn: str, pg_data_dir: Path | None) -> None:
    if pg_data_dir is None:
        pytest.fail("this suite runs on the embedded server; LTST_TEST_DATABASE_URL is for manual runs")
    expected = _tuning.recommended_settings()
    with psycopg.connect(pg_admin_dsn) as conn:
        shown = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings").fetchall())
        in_bytes = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()
    assert shown["jit"] == "off"
    assert in_bytes is not None and in_bytes[0] == int(expected["shared_buffers"].removesuffix("MB")) * 1024**2
    assert (pg_data_dir / "pgdata" / _tuning.MARKER).exists()


def test_tuning_can_be_switched_off_and_is_applied_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTST_EMBEDDED_TUNING", "0")
    dsn = acquire_embedded(tmp_path)
    try:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW jit").fetchone() == ("on",)  # PostgreSQL's default, untouched
        assert not (tmp_path / "pgdata" / _tuning.MARKER).exists()
    finally:
        release_embedded(tmp_path)

    monkeypatch.setenv("LTST_EMBEDDED_TUNING", "1")
    dsn = acquire_embedded(tmp_path)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW jit").fetchone() == ("off",)
            # a later choice of the user's own is kept: tuning runs once per data directory
            conn.execute("ALTER SYSTEM SET jit = on")
            conn.execute("SELECT pg_reload_conf()")
    finally:
        release_embedded(tmp_path)
    dsn = acquire_embedded(tmp_path)
    try:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW jit").fetchone() == ("on",)
    finally:
        release_embedded(tmp_path)
