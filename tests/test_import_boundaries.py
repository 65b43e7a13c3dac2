"""Importers stay inside the importing user: no line of a file writes into another user's session.

Regression tests of issue 14, finding 1: a crafted archive imported with ``--user alice`` whose
``context`` line named bob's session and whose ``relationship`` line linked two of bob's sessions
wrote into bob's memory (the text reached bob's rehydrated prompt). Every refused import must leave
every table exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    SessionRelationship,
    ValidationError,
)
from ltst_memory._tables import owned_table_names
from ltst_memory.cli import app
from ltst_memory.io import export_jsonl, import_export, import_jsonl
from ltst_memory.io.archive import import_other_rows

TABLES = sorted(owned_table_names())  # every table of the library, adapters' included
SECRET = "PLANTED-BY-ALICE"


def fingerprint(dsn: str) -> dict[str, str]:
    """An md5 of every row of every table the library owns (ordered), to prove that nothing changed."""
    result = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} AS t")
            result[table] = str(row.fetchone()[0])  # type: ignore[index]
    return result


@pytest.fixture
def bob(store: ConversationStorage) -> ConversationStorage:
    store.create_session(ConversationSession("bob-1", "bob", "Health"))
    store.create_session(ConversationSession("bob-2", "bob", "Work"))
    store.store_message(ConversationMessage("bob-1", "human", "My doctor said the results are fine."))
    store.store_message(ConversationMessage("bob-2", "human", "The quarterly report is due Friday."))
    return store


def header(**extra: Any) -> dict[str, Any]:
    return {"type": "ltst-export", "version": 1, "embeddings": False, "sessions": 1, **extra}


def alice_session(session_id: str = "alice-1") -> list[dict[str, Any]]:
    return [
        {"type": "session", "session_id": session_id, "user_id": "alice", "session_name": "Mine"},
        {
            "type": "message",
            "session_id": session_id,
            "role": "human",
            "content": "hello",
            "message_uuid": "00000000-0000-4000-8000-0000000000a1" if session_id == "alice-1" else None,
        },
    ]


def context_line(session_id: str) -> dict[str, Any]:
    return {
        "type": "context",
        "session_id": session_id,
        "context_type": "note",
        "context_key": "planted",
        "context_value": SECRET,
    }


def relationship_line(source: str, target: str) -> dict[str, Any]:
    return {"type": "relationship", "source_session_id": source, "target_session_id": target}


def write(tmp_path: Path, lines: list[dict[str, Any]], name: str = "crafted.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


CRAFTED = {
    "context into bob's session": [header(), *alice_session(), context_line("bob-1")],
    "relationship between bob's sessions": [header(), *alice_session(), relationship_line("bob-1", "bob-2")],
    "relationship from alice's session to bob's": [header(), *alice_session(), relationship_line("alice-1", "bob-1")],
    "bob's session declared in the file": [
        header(),
        *alice_session(),
        {"type": "session", "session_id": "bob-1", "user_id": "bob"},
        context_line("bob-1"),
    ],
    "a message line into bob's session": [
        header(),
        {"type": "session", "session_id": "bob-1", "user_id": "alice"},
        {
            "type": "message",
            "session_id": "bob-1",
            "role": "human",
            "content": SECRET,
            "message_uuid": "00000000-0000-4000-8000-0000000000b1",
        },
    ],
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archive_is_refused_whole_with_nothing_written(
    bob: ConversationStorage, database_dsn: str, tmp_path: Path, case: str
) -> None:
    path = write(tmp_path, CRAFTED[case])
    before = fingerprint(database_dsn)
    with pytest.raises(ValidationError):
        import_export(bob, path, user_id="alice")
    assert fingerprint(database_dsn) == before
    prompt = bob.rehydrate("bob-1", "what did the doctor say?").to_prompt()
    assert SECRET not in prompt
    assert bob.get_session("alice-1") is None  # not even alice's own session was half-imported


def test_cli_import_with_user_refuses_the_crafted_archive(
    bob: ConversationStorage, database_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    path = write(tmp_path, CRAFTED["context into bob's session"])
    before = fingerprint(database_dsn)
    result = CliRunner().invoke(app, ["import", str(path), "--user", "alice", "--dsn", database_dsn])
    assert result.exit_code != 0
    assert "does not declare" in result.output
    assert fingerprint(database_dsn) == before


def test_preference_of_another_user_is_refused_without_rehoming(
    bob: ConversationStorage, database_dsn: str, tmp_path: Path
) -> None:
    lines = [
        header(scope={"user_id": "alice"}),
        *alice_session(),
        {"type": "preference", "user_id": "bob", "preference_key": "tone", "preference_value": SECRET},
    ]
    before = fingerprint(database_dsn)
    with pytest.raises(ValidationError, match="preference line of user 'bob'"):
        import_export(bob, write(tmp_path, lines))
    assert fingerprint(database_dsn) == before


def test_rehomed_preference_lands_with_the_importing_user(bob: ConversationStorage, tmp_path: Path) -> None:
    lines = [
        header(scope={"user_id": "carol"}),
        {"type": "session", "session_id": "carol-1", "user_id": "carol"},
        {"type": "preference", "user_id": "carol", "preference_key": "tone", "preference_value": "dry"},
    ]
    import_export(bob, write(tmp_path, lines), user_id="alice")
    assert {p.preference_key for p in bob.get_preferences("alice")} == {"tone"}
    assert bob.get_preferences("bob") == []
    assert bob.get_session("carol-1").user_id == "alice"  # type: ignore[union-attr]


def test_a_genuine_export_still_round_trips_and_rehomes(bob: ConversationStorage, tmp_path: Path) -> None:
    bob.store_context(ConversationContext("bob-1", "note", "diet", "vegetarian"))
    bob.store_relationship(SessionRelationship("bob-1", "bob-2", "follow_up"))
    path = tmp_path / "bob.jsonl"
    export_jsonl(bob, path, user_id="bob")
    bob.delete_user("bob")
    result = import_export(bob, path, user_id="dave")
    assert result.sessions_created == 2
    assert result.other_rows_added == 2  # the context row and the relationship, now dave's
    assert [s.user_id for s in (bob.get_session("bob-1"), bob.get_session("bob-2"))] == ["dave", "dave"]
    assert "vegetarian" in bob.rehydrate("bob-1", "diet?").to_prompt()


def test_context_sql_refuses_a_session_of_another_user_even_when_called_directly(bob: ConversationStorage) -> None:
    row = {**context_line("bob-1"), "user_id": "alice"}
    assert bob._run(import_other_rows(bob._core, "context", [row])) == 0
    row = {**relationship_line("bob-1", "bob-2"), "user_id": "alice"}
    assert bob._run(import_other_rows(bob._core, "relationship", [row])) == 0


def test_jsonl_import_naming_bobs_session_writes_nothing(
    bob: ConversationStorage, database_dsn: str, tmp_path: Path
) -> None:
    lines = [
        {"role": "human", "content": "fine line", "session_id": "alice-new"},
        {"role": "human", "content": SECRET, "session_id": "bob-1"},
    ]
    before = fingerprint(database_dsn)
    with pytest.raises(ValidationError, match="belongs to another user"):
        import_jsonl(bob, write(tmp_path, lines, "messages.jsonl"), "alice")
    assert fingerprint(database_dsn) == before


def test_malformed_lines_are_typed_errors(bob: ConversationStorage, tmp_path: Path) -> None:
    for line in ({"type": "session"}, {"type": "context"}, {"type": "relationship", "source_session_id": 3}):
        with pytest.raises(ValidationError):
            import_export(bob, write(tmp_path, [header(), line]), user_id="alice")
