"""Hostile and broken input through the public API (hypothesis).

For every input: either it is stored and read back exactly (after the documented sanitisation:
JSON turns non-string dict keys into strings and tuples into lists), or the call raises a typed
``LTSTError`` and the database is unchanged — never a raw driver error, never a partial write.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ltst_memory import (
    ConversationContext,
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    LTSTError,
    SessionRelationship,
    UserPreference,
    ValidationError,
)
from ltst_memory.models import MAX_JSON_DEPTH

SETTINGS = settings(
    max_examples=int(os.environ.get("LTST_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# text with everything PostgreSQL and UTF-8 find awkward
nasty_chars = st.characters(codec=None, categories=None)  # any code point, including NUL and lone surrogates
NASTY_EXAMPLES = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202eevil\u202c",
    "\u200f\u200e\u061c",
    "\x1b[31mred",
    "\r\n\t\x7f\x85",
    "\ufeffBOM",
    "𝕳𝖊𝖑𝖑𝖔 👩‍👩‍👧‍👦",
    "e\u0301\u0301\u0301",
    " ",
    "\u3000",
    "null",
    "\\u0000",
    "%s",
    "%(content)s",
]
INJECTIONS = [
    "'; DROP TABLE conversation_messages; --",
    "' OR '1'='1",
    '" OR ""="',
    "Robert'); DROP TABLE conversation_sessions;--",
    "%(session_id)s",
    "%s%s%s",
    "$1",
    "\\'; SELECT pg_sleep(10); --",
    "1; UPDATE user_preferences SET preference_value = '\"pwned\"'",
    "') UNION SELECT user_id, user_id FROM conversation_sessions --",
    "{{}}{0}",
    "E'\\x00'",
    "current_setting('ltst.user_id')",
]
hostile_text = st.one_of(st.sampled_from(NASTY_EXAMPLES + INJECTIONS), st.text(nasty_chars, max_size=60))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_like = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.integers(), st.booleans()), children, max_size=4),
        st.tuples(children, children),
    ),
    max_leaves=20,
)
non_json = st.sampled_from([b"bytes", {1, 2}, object(), datetime.now(timezone.utc), uuid.uuid4(), 1 + 2j, Ellipsis])
metadata_values = st.one_of(
    st.dictionaries(hostile_text, json_like, max_size=5),
    st.dictionaries(hostile_text, non_json, min_size=1, max_size=2),
    json_like,  # not even a dict
)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"d": value}
    return value


FINGERPRINT = "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t"


def _fingerprint(store: ConversationStorage) -> tuple[Any, ...]:
    with store.pool.connection() as conn:
        return tuple(
            conn.execute(FINGERPRINT.format(t)).fetchone()
            for t in (
                "conversation_sessions",
                "conversation_messages",
                "conversation_context",
                "user_preferences",
                "session_relationships",
                "session_summary",
            )
        )


def _attempt(store: ConversationStorage, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run ``call``; return (True, result) or (False, typed error) — and prove a failure wrote nothing."""
    before = _fingerprint(store)
    try:
        return True, call()
    except LTSTError as exc:
        assert _fingerprint(store) == before, f"partial write before {exc!r}"
        return False, exc
    except psycopg.Error as exc:  # pragma: no cover - this is the bug the suite hunts
        pytest.fail(f"raw driver error leaked: {type(exc).__name__}: {exc}")


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def _same(stored: Any, expected: Any) -> bool:
    """JSON equality, with numbers compared by value: jsonb keeps numbers as PostgreSQL ``numeric``,
    so a float written in exponent form (``1.7976931348623157e308``) comes back as the int with the
    same decimal digits (documented in docs/security.md)."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        return stored.keys() == expected.keys() and all(_same(stored[k], expected[k]) for k in stored)
    if isinstance(stored, list) and isinstance(expected, list):
        return len(stored) == len(expected) and all(_same(a, b) for a, b in zip(stored, expected, strict=True))
    numbers = (int, float)
    if (
        isinstance(stored, numbers)
        and isinstance(expected, numbers)
        and not isinstance(stored, bool)
        and (isinstance(stored, float) or isinstance(expected, float))
    ):
        return float(stored) == float(expected)
    return type(stored) is type(expected) and stored == expected


def _from_deep_stack(frames: int, call: Callable[[], Any]) -> Any:
    """``call()`` from ``frames`` more frames down the stack (a caller inside a framework)."""
    return call() if frames <= 0 else _from_deep_stack(frames - 1, call)


def test_deeply_nested_metadata(store: ConversationStorage) -> None:
    """The deepest metadata accepted stays readable from a deep call stack; deeper is refused, whatever
    the caller's stack (json.dumps's own recursion limit used to decide, so a shallow caller could store
    a document a deeper one could not read back)."""
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    ok, _ = _attempt(
        store,
        lambda: store.store_message(
            ConversationMessage(session_id="s", role="ai", content="m", metadata=_nested(MAX_JSON_DEPTH - 1))
        ),
    )
    assert ok
    read = _from_deep_stack(500, lambda: store.get_messages("s"))
    assert read[0].metadata == _nested(MAX_JSON_DEPTH - 1)  # (MAX_JSON_DEPTH dicts, the innermost empty)
    for depth in (MAX_JSON_DEPTH, 900, 5_000):
        ok, error = _attempt(
            store,
            lambda depth=depth: store.store_message(
                ConversationMessage(session_id="s", role="ai", content="m", metadata=_nested(depth))
            ),
        )
        assert not ok and isinstance(error, ValidationError) and f"limit is {MAX_JSON_DEPTH} levels" in str(error)
    assert len(store.get_messages("s")) == 1


@pytest.fixture
def session(store: ConversationStorage) -> str:
    store.create_session(ConversationSession(session_id="s", user_id="u"))
    store.create_session(ConversationSession(session_id="other", user_id="u"))
    return "s"


@SETTINGS
@given(content=st.one_of(hostile_text, st.text(nasty_chars, min_size=1, max_size=3000)))
@example(content="x" * 100_001)  # over LTST_MAX_CONTENT_CHARS
@example(content="\u202e" * 100_000)
def test_message_content(store: ConversationStorage, session: str, content: str) -> None:
    ok, result = _attempt(
        store, lambda: store.store_message(ConversationMessage(session_id=session, role="human", content=content))
    )
    if ok:
        assert store.get_messages(session, limit=1, offset=result.message_index)[0].content == content
        assert store.search_messages(content[:1000], session_id=session, limit=1)  # searchable, no error
    else:
        assert "\x00" in content or not content.strip() or len(content) > 100_000 or _has_surrogate(content)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@SETTINGS
@given(metadata=metadata_values)
@example(metadata={"big": 10**400, "tiny": 1e-320, "neg0": -0.0, "max": 1.7976931348623157e308})
def test_metadata(store: ConversationStorage, session: str, metadata: Any) -> None:
    ok, result = _attempt(
        store,
        lambda: store.store_message(ConversationMessage(session_id=session, role="ai", content="m", metadata=metadata)),
    )
    if ok:
        stored = store.get_messages(session, limit=1, offset=result.message_index)[0].metadata
        assert _same(stored, _json_roundtrip(metadata))
    ok, _ = _attempt(
        store, lambda: store.update_session(ConversationSession(session_id=session, user_id="u", metadata=metadata))
    )
    if ok:
        assert _same(store.get_session(session).metadata, _json_roundtrip(metadata))


@SETTINGS
@given(session_id=hostile_text, user_id=hostile_text, name=st.one_of(st.none(), hostile_text))
def test_odd_ids(store: ConversationStorage, session_id: str, user_id: str, name: str | None) -> None:
    ok, _ = _attempt(
        store,
        lambda: store.create_session(ConversationSession(session_id=session_id, user_id=user_id, session_name=name)),
    )
    if not ok:
        return
    got = store.get_session(session_id)
    assert (got.session_id, got.user_id, got.session_name) == (session_id, user_id, name)
    assert [s.session_id for s in store.get_user_sessions(user_id)] == [session_id]
    store.store_message(ConversationMessage(session_id=session_id, role="human", content="hi"))
    assert store.get_messages(session_id)[0].user_id == user_id
    assert store.delete_session(session_id)["messages"] == 1


@SETTINGS
@given(
    role=st.one_of(
        hostile_text, st.sampled_from(["HUMAN", " ai ", "user", "assistant", "function"]), st.integers(), st.none()
    )
)
def test_odd_roles(store: ConversationStorage, session: str, role: Any) -> None:
    ok, result = _attempt(
        store, lambda: store.store_message(ConversationMessage(session_id=session, role=role, content="r"))
    )
    if ok:
        assert result.role in ("human", "ai", "system", "tool")


@SETTINGS
@given(
    text=hostile_text, number=st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.booleans())
)
def test_every_string_and_number_parameter(store: ConversationStorage, session: str, text: str, number: Any) -> None:
    """The injection/odd value goes into each string (and numeric) parameter in turn."""
    ts = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=13, minutes=59)))
    calls: list[Callable[[], Any]] = [
        lambda: store.store_context(
            ConversationContext(
                session_id=session, context_type=text, context_key=text, context_value=text, relevance_score=number
            )
        ),
        lambda: store.get_context(session, context_type=text),
        lambda: store.get_context(text),
        lambda: store.store_preference(
            UserPreference(
                user_id=text, preference_key=text, preference_value=text, preference_type=text, confidence_score=number
            )
        ),
        lambda: store.get_preferences(text, preference_type=text),
        lambda: store.search_messages(text, session_id=text, limit=number, threshold=number),
        lambda: store.search_messages(text, user_id=text),
        lambda: store.get_messages(text, limit=number, offset=number),
        lambda: store.get_recent_messages(session, limit=number),
        lambda: store.get_user_sessions(text, limit=number),
        lambda: store.get_session_summary(text),
        lambda: store.update_session_activity(text),
        lambda: store.delete_session(text if text != session else "nope"),
        lambda: store.store_relationship(
            SessionRelationship(
                source_session_id=session,
                target_session_id="other",
                relationship_type=text,
                relationship_strength=number,
            )
        ),
        lambda: store.get_related_sessions(text, limit=number),
        lambda: store.store_message(
            ConversationMessage(
                session_id=session,
                role="tool",
                content="c",
                message_type=text,
                relevance_score=number,
                parent_message_id=number,
                message_uuid=text,
                timestamp=ts,
            )
        ),
        lambda: store.set_retention_policy(user_id=text, session_type=text, message_days=number),
        lambda: store.delete_user(text) if text != "u" else None,
        lambda: store.for_user(text).get_user_sessions(),
    ]
    if hasattr(store, "recall"):
        calls.append(lambda: store.recall(text, user_id=text, limit=number))
    if hasattr(store, "rehydrate"):
        calls.append(lambda: store.rehydrate(session, text, token_budget=number))
    for call in calls:
        _attempt(store, call)
    with store.pool.connection() as conn:  # nothing was dropped or rewritten by an injection
        assert conn.execute("SELECT count(*) FROM conversation_sessions").fetchone()[0] >= 2
        assert (
            conn.execute("SELECT count(*) FROM user_preferences WHERE preference_value = '\"pwned\"'").fetchone()[0]
            == 0
        )


@SETTINGS
@given(key=hostile_text, value=json_like)
def test_preference_values_round_trip(store: ConversationStorage, key: str, value: Any) -> None:
    ok, _ = _attempt(
        store, lambda: store.store_preference(UserPreference(user_id="u", preference_key=key, preference_value=value))
    )
    if ok:
        (pref,) = [p for p in store.get_preferences("u") if p.preference_key == key]
        assert _same(pref.preference_value, _json_roundtrip(value))
    else:
        assume(True)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_failed_batch_writes_nothing(store: ConversationStorage, session: str) -> None:
    good = [ConversationMessage(session_id=session, role="human", content=f"ok {i}") for i in range(5)]
    for bad in (
        ConversationMessage(session_id=session, role="human", content="bad\x00"),
        ConversationMessage(session_id="missing", role="human", content="x"),
        ConversationMessage(session_id=session, role="robot", content="x"),
        ConversationMessage(session_id=session, role="human", content="x", metadata={"x": math.nan}),
        ConversationMessage(session_id=session, role="human", content="x", embedding=[1e39] * 384),
    ):
        ok, _ = _attempt(store, lambda bad=bad: store.store_messages([*good, bad]))
        assert not ok
    assert store.get_messages(session) == []
