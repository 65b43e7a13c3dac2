"""The package surface: exports, typing marker, cheap import, and the embedded default database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ltst_memory
from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
from ltst_memory.config import Settings


def test_all_names_are_importable_and_documented() -> None:
    for name in ltst_memory.__all__:
        obj = getattr(ltst_memory, name)
        if name != "__version__":
            assert obj.__doc__, f"{name} has no docstring"
    for name in (
        "ConversationStorage",
        "AsyncConversationStorage",
        "ConversationSession",
        "ConversationMessage",
        "ConversationContext",
        "UserPreference",
        "SessionRelationship",
        "SessionSummary",
        "LTSTError",
    ):
        assert name in ltst_memory.__all__


def test_spec_methods_exist_with_spec_parameters() -> None:
    import inspect

    spec = {
        "create_session": ["session"],
        "get_session": ["session_id"],
        "store_message": ["message"],
        "get_messages": ["session_id", "limit", "offset"],
        "search_messages": ["query", "session_id", "limit", "threshold"],
        "store_context": ["context"],
        "get_context": ["session_id", "context_type"],
        "update_session_activity": ["session_id"],
        "get_user_sessions": ["user_id", "limit"],
        "delete_session": ["session_id"],
        "get_session_summary": ["session_id"],
        "cleanup_expired_data": [],
    }
    for name, params in spec.items():
        method = getattr(ConversationStorage, name)
        assert method.__doc__
        signature = list(inspect.signature(method).parameters)[1:]
        assert signature[: len(params)] == params, name


def test_package_is_typed_and_ships_schema() -> None:
    root = Path(ltst_memory.__file__).parent
    assert (root / "py.typed").exists()
    from ltst_memory.schema import migration_files

    names = [name for name, _ in migration_files()]
    assert names[0] == "0001_ltst_schema.sql" and names == sorted(names)


def test_import_is_cheap_and_does_not_load_torch() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import ltst_memory; "
        "import json; print(json.dumps({'torch': 'torch' in sys.modules, "
        "'st': 'sentence_transformers' in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"torch": False, "st": False}


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-database-url/db")
    monkeypatch.delenv("LTST_DATABASE_URL", raising=False)
    assert Settings.from_env().dsn == "postgresql://from-database-url/db"
    monkeypatch.setenv("LTST_DATABASE_URL", "postgresql://from-ltst/db")
    assert Settings.from_env().dsn == "postgresql://from-ltst/db"
    assert Settings.from_env(dsn="postgresql://explicit/db").dsn == "postgresql://explicit/db"
    monkeypatch.delenv("LTST_DATABASE_URL")
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("LTST_DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert settings.dsn is None and settings.data_dir == tmp_path


def test_default_store_uses_the_embedded_server(
    monkeypatch: pytest.MonkeyPatch, pg_data_dir: Path | None, hashing_embedder: HashingEmbedder
) -> None:
    if pg_data_dir is None:
        pytest.fail("this test needs the embedded server (unset LTST_TEST_DATABASE_URL)")
    monkeypatch.delenv("LTST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("LTST_DATA_DIR", str(pg_data_dir))
    # the server in pg_data_dir is already running (the suite's); a store joins it, uses database "ltst"
    with (
        ConversationStorage(embedder=hashing_embedder) as first,
        ConversationStorage(embedder=hashing_embedder) as second,
    ):
        assert "dbname=ltst" in first.dsn and str(pg_data_dir) in first.dsn
        first.create_session(ConversationSession("embedded-s", "u"))
        second.store_message(ConversationMessage("embedded-s", "human", "seen by both"))
        assert [m.content for m in first.get_messages("embedded-s")] == ["seen by both"]
        first.delete_session("embedded-s")
