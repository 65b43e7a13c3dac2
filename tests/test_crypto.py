"""Sensitive preferences are encrypted at rest (ltst_memory/crypto.py), with key rotation."""

from __future__ import annotations

import json
import logging

import pytest

from ltst_memory import ConversationStorage, DatabaseUnavailableError, UserPreference
from ltst_memory.crypto import EncryptionError, EncryptionKeyError, generate_key

SECRET = {"ssn": "078-05-1120", "pin": 4321}


def _raw_value(store: ConversationStorage, user_id: str, key: str):
    with store.pool.connection() as conn:
        row = conn.execute(
            "SELECT preference_value FROM user_preferences WHERE user_id = %s AND preference_key = %s", (user_id, key)
        ).fetchone()
    return row[0]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = generate_key()
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", value)
    return value


def test_sensitive_value_is_encrypted_at_rest_and_read_back(store: ConversationStorage, key: str) -> None:
    stored = store.store_preference(
        UserPreference(user_id="u1", preference_key="id", preference_value=SECRET, is_sensitive=True)
    )
    assert stored.preference_value == SECRET
    raw = _raw_value(store, "u1", "id")
    assert "078-05-1120" not in json.dumps(raw) and "4321" not in json.dumps(raw)
    assert raw["ltst_encrypted"] == "fernet-v1"
    store.store_preference(UserPreference(user_id="u1", preference_key="tone", preference_value="warm"))
    prefs = {p.preference_key: p for p in store.get_preferences("u1")}
    assert prefs["id"].preference_value == SECRET and prefs["id"].is_sensitive
    assert prefs["tone"].preference_value == "warm" and _raw_value(store, "u1", "tone") == "warm"


def test_without_a_key_sensitive_values_cannot_be_stored(store: ConversationStorage, monkeypatch) -> None:
    monkeypatch.delenv("LTST_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("LTST_ENCRYPTION_KEY", raising=False)
    with pytest.raises(EncryptionKeyError, match="LTST_ENCRYPTION_KEYS"):
        store.store_preference(UserPreference(user_id="u1", preference_key="id", preference_value=1, is_sensitive=True))
    assert store.get_preferences("u1") == []
    store.store_preference(UserPreference(user_id="u1", preference_key="tone", preference_value="ok"))  # plain is fine


def test_invalid_key_is_a_clear_error_that_does_not_echo_the_key(store: ConversationStorage, monkeypatch) -> None:
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", "not-a-real-key-but-secret-material")
    with pytest.raises(EncryptionKeyError) as info:
        store.store_preference(UserPreference(user_id="u", preference_key="k", preference_value=1, is_sensitive=True))
    assert "secret-material" not in str(info.value)


def test_wrong_key_or_tampering_is_detected(store: ConversationStorage, key: str, monkeypatch) -> None:
    store.store_preference(
        UserPreference(user_id="u1", preference_key="id", preference_value=SECRET, is_sensitive=True)
    )
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", generate_key())
    with pytest.raises(EncryptionError, match="cannot decrypt"):
        store.get_preferences("u1")
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", key)
    raw = _raw_value(store, "u1", "id")
    token = raw["token"]
    raw["token"] = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE user_preferences SET preference_value = %s::jsonb WHERE user_id = 'u1'", (json.dumps(raw),)
        )
    with pytest.raises(EncryptionError):
        store.get_preferences("u1")


def test_ciphertext_moved_to_another_user_is_refused(store: ConversationStorage, key: str) -> None:
    store.store_preference(
        UserPreference(user_id="u1", preference_key="id", preference_value=SECRET, is_sensitive=True)
    )
    store.store_preference(UserPreference(user_id="u2", preference_key="id", preference_value="x", is_sensitive=True))
    with store.pool.connection() as conn:  # a malicious DBA copies u1's token into u2's row
        conn.execute(
            "UPDATE user_preferences SET preference_value = (SELECT preference_value FROM user_preferences "
            "WHERE user_id = 'u1') WHERE user_id = 'u2'"
        )
    with pytest.raises(EncryptionError, match="another row"):
        store.get_preferences("u2")


def test_key_rotation(store: ConversationStorage, key: str, monkeypatch) -> None:
    for n in range(3):
        store.store_preference(
            UserPreference(user_id=f"u{n}", preference_key="id", preference_value=[n, "secret"], is_sensitive=True)
        )
    with store.pool.connection() as conn:  # a value marked sensitive by a version without encryption
        conn.execute(
            "INSERT INTO user_preferences (user_id, preference_key, preference_value, is_sensitive) "
            "VALUES ('legacy', 'id', '\"plain secret\"', true)"
        )
    before = _raw_value(store, "u0", "id")
    new = generate_key()
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", f"{new},{key}")  # new key first, old still readable
    assert store.get_preferences("u0")[0].preference_value == [0, "secret"]
    assert store.rotate_encryption_keys() == {"rotated": 3, "encrypted": 1, "unreadable": 0}
    assert _raw_value(store, "u0", "id") != before
    assert "plain secret" not in json.dumps(_raw_value(store, "legacy", "id"))
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", new)  # old key retired: everything still readable
    assert [store.get_preferences(f"u{n}")[0].preference_value for n in range(3)] == [[n, "secret"] for n in range(3)]
    assert store.get_preferences("legacy")[0].preference_value == "plain secret"
    monkeypatch.setenv("LTST_ENCRYPTION_KEYS", key)  # only the retired key: nothing opens
    with pytest.raises(EncryptionError):
        store.get_preferences("u0")


def test_no_secret_in_logs_or_errors(store: ConversationStorage, key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store.store_preference(
        UserPreference(user_id="u1", preference_key="id", preference_value="hunter2-secret", is_sensitive=True)
    )
    store.get_preferences("u1")
    store.rotate_encryption_keys()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2-secret" not in text and key not in text
    with pytest.raises(DatabaseUnavailableError) as info:
        ConversationStorage("postgresql://app:Sup3rS3cretPw@127.0.0.1:1/ltst?connect_timeout=1", auto_migrate=False)
    assert "Sup3rS3cretPw" not in str(info.value) and "Sup3rS3cretPw" not in "\n".join(
        r.getMessage() for r in caplog.records
    )
