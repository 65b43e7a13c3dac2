"""Sensitive preferences under hostile or careless use (issue 14, finding 7).

One sensitive preference and no key must not break reading the others; an archive line with
``is_sensitive: true`` and a plain value is encrypted on import (or refused without a key); a
re-homed import re-encrypts for the new owner and never copies the token; key rotation reports a
row it cannot open instead of aborting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ltst_memory import ConversationSession, ConversationStorage, UserPreference
from ltst_memory.crypto import EncryptionError, EncryptionKeyError, generate_key, is_encrypted
from ltst_memory.io import export_jsonl, import_export

SECRET = "078-05-1120"


def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTST_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("LTST_ENCRYPTION_KEY", raising=False)


def _raw(store: ConversationStorage, user_id: str, key: str) -> Any:
    with store.pool.connection() as conn:
        row = conn.execute(
            "SELECT preference_value FROM user_preferences WHERE user_id = %s AND preference_key = %s", (user_id, key)
        ).fetchone()
    return None if row is None else row[0]


def _table(store: ConversationStorage) -> str:
    with store.pool.connection() as conn:
        return str(conn.execute("SELECT string_agg(t::text, '|' ORDER BY t::text) FROM user_preferences t").fetchone())


@pytest.fixture
def alice(store: ConversationStorage, monkeypatch: pytest.MonkeyPatch) -> ConversationStorage:
    """alice has a plain preference and a sensitive one (stored with a key that is then unset)."""
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    store.create_session(ConversationSession("alice-1", "alice"))
    store.store_preference(UserPreference("alice", "tone", "friendly"))
    store.store_preference(UserPreference("alice", "ssn", SECRET, is_sensitive=True))
    return store


def test_reads_without_a_key_return_the_other_preferences(
    alice: ConversationStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _no_key(monkeypatch)
    caplog.set_level(logging.WARNING)
    prefs = alice.get_preferences("alice")
    assert [(p.preference_key, p.preference_value) for p in prefs] == [("tone", "friendly")]
    assert "1 sensitive preferences left out" in caplog.text and SECRET not in caplog.text
    prompt = alice.rehydrate("alice-1", "what tone?", include_sensitive_preferences=False).to_prompt()
    assert "friendly" in prompt and SECRET not in prompt
    assert alice.for_user("alice").get_preferences() == prefs


async def test_async_reads_without_a_key(alice: ConversationStorage, database_dsn: str, monkeypatch) -> None:
    from ltst_memory import AsyncConversationStorage

    _no_key(monkeypatch)
    async with AsyncConversationStorage(database_dsn, embedder=alice.embedder) as astore:
        assert [p.preference_key for p in await astore.get_preferences("alice")] == ["tone"]


def test_a_wrong_key_still_raises_on_read(alice: ConversationStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    with pytest.raises(EncryptionError, match="cannot decrypt"):
        alice.get_preferences("alice")


def _archive(path: Path, lines: list[dict[str, Any]]) -> Path:
    head = {"type": "ltst-export", "version": 1, "embeddings": False, "scope": {"user_id": "alice"}}
    path.write_text("\n".join(json.dumps(x) for x in [head, *lines]) + "\n", encoding="utf-8")
    return path


PLAIN_SENSITIVE = {
    "type": "preference",
    "user_id": "alice",
    "preference_key": "pin",
    "preference_value": "4321",
    "is_sensitive": True,
}


def test_plain_sensitive_archive_value_is_encrypted_on_import(
    store: ConversationStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    import_export(store, _archive(tmp_path / "a.jsonl", [PLAIN_SENSITIVE]))
    raw = _raw(store, "alice", "pin")
    assert is_encrypted(raw) and "4321" not in json.dumps(raw)
    assert store.get_preferences("alice")[0].preference_value == "4321"


def test_plain_sensitive_archive_value_without_a_key_is_refused_before_writing(
    store: ConversationStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_key(monkeypatch)
    session = {"type": "session", "session_id": "alice-9", "user_id": "alice"}
    message = {"type": "message", "session_id": "alice-9", "role": "human", "content": "hi", "message_uuid": None}
    before = _table(store)
    with pytest.raises(EncryptionKeyError, match="LTST_ENCRYPTION_KEYS"):
        import_export(store, _archive(tmp_path / "a.jsonl", [session, message, PLAIN_SENSITIVE]))
    assert _table(store) == before and store.get_session("alice-9") is None  # the session was not written either


def test_rehomed_import_re_encrypts_for_the_new_owner(
    alice: ConversationStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", key)
    alice.store_preference(UserPreference("alice", "ssn", SECRET, is_sensitive=True))  # with the key now set
    path = tmp_path / "alice.jsonl"
    export_jsonl(alice, path, user_id="alice")
    assert SECRET not in path.read_text(encoding="utf-8")
    alice.delete_session("alice-1")  # the session comes back as dave's; alice keeps her preferences
    import_export(alice, path, user_id="dave")
    alices, daves = _raw(alice, "alice", "ssn"), _raw(alice, "dave", "ssn")
    assert is_encrypted(daves) and daves["token"] != alices["token"]  # never a copied token
    assert {p.preference_key: p.preference_value for p in alice.get_preferences("dave")}["ssn"] == SECRET
    assert alice.rotate_encryption_keys()["unreadable"] == 0


def test_rehomed_import_without_a_key_is_refused(
    alice: ConversationStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alice.jsonl"
    export_jsonl(alice, path, user_id="alice")
    alice.delete_session("alice-1")
    _no_key(monkeypatch)
    before = _table(alice)
    with pytest.raises(EncryptionKeyError, match="re-encrypts"):
        import_export(alice, path, user_id="dave")
    assert _table(alice) == before and alice.get_user_sessions("dave") == []


def test_rotation_reports_a_row_it_cannot_open(
    alice: ConversationStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())  # a new key; alice's value is under the old one
    alice.store_preference(UserPreference("bob", "pin", 1234, is_sensitive=True))
    with alice.pool.connection() as conn:  # a copied token: encrypted for bob/pin, stored as carol/pin
        conn.execute(
            "INSERT INTO user_preferences (user_id, preference_key, preference_value, is_sensitive) "
            "SELECT 'carol', 'pin', preference_value, true FROM user_preferences WHERE user_id = 'bob'"
        )
    caplog.set_level(logging.WARNING)
    before = _raw(alice, "alice", "ssn")
    assert alice.rotate_encryption_keys() == {"rotated": 1, "encrypted": 0, "unreadable": 2}
    assert _raw(alice, "alice", "ssn") == before  # left as it was
    assert "'alice'/'ssn'" in caplog.text and "'carol'/'pin'" in caplog.text
    assert alice.get_preferences("bob")[0].preference_value == 1234
