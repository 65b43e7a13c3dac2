"""The web inspector (ltst_memory/inspector) over HTTP against the real store: token, pages, edits, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from ltst_memory import ConversationContext, ConversationMessage, ConversationSession, UserPreference
from ltst_memory.inspector import create_app

TOKEN = "test-token-0123456789abcdef"


def seed(store: Any) -> None:
    """alice: a trip session with an off-branch turn, context and preferences; bob: one session."""
    store.create_session(ConversationSession(session_id="trip", user_id="alice", session_name="Lisbon trip"))
    store.store_messages([
        ConversationMessage(session_id="trip", role="human", content="I fly to Lisbon in March with Ana."),
        ConversationMessage(session_id="trip", role="ai", content="March is mild in Lisbon."),
        ConversationMessage(session_id="trip", role="human", content="Ana is vegetarian.",
                            metadata={"speaker": "alice"}),
        ConversationMessage(session_id="trip", role="ai", content="An abandoned draft answer.",
                            metadata={"off_branch": True}),
    ])  # fmt: skip
    store.store_context(ConversationContext(session_id="trip", context_type="project", context_key="task",
                                            context_value="plan the Lisbon trip", relevance_score=0.9))  # fmt: skip
    store.store_preference(UserPreference(user_id="alice", preference_key="units", preference_value="metric"))
    store.create_session(ConversationSession(session_id="bob-s", user_id="bob"))
    store.store_message(ConversationMessage(session_id="bob-s", role="human", content="bob likes Porto"))


@pytest.fixture
def client(store: Any) -> Any:
    seed(store)
    with TestClient(create_app(store, token=TOKEN), base_url="http://127.0.0.1") as c:
        c.headers["x-ltst-token"] = TOKEN
        yield c


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_requests_without_the_token_are_refused(store: Any) -> None:
    seed(store)
    with TestClient(create_app(store, token=TOKEN), base_url="http://127.0.0.1") as anonymous:
        for path in ("/", "/users/alice", "/sessions/trip", "/static/htmx.min.js"):
            response = anonymous.get(path)
            assert response.status_code == 401 and "alice" not in response.text
        assert anonymous.get("/", headers={"x-ltst-token": "wrong-token-0123456789"}).status_code == 401
        assert anonymous.get("/?token=nope").status_code == 401
        erase = anonymous.post("/users/alice/erase", data={"confirm": "alice"})
        assert erase.status_code == 401
        # the first visit with ?token= sets a cookie and drops the token from the address
        first = anonymous.get(f"/users/alice?token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/users/alice"
        assert anonymous.get("/users/alice").status_code == 200
    assert store.get_session("trip") is not None
    with TestClient(create_app(store, token=TOKEN), base_url="http://evil.example") as rebound:
        assert rebound.get("/", headers={"x-ltst-token": TOKEN}).status_code == 400


def test_users_sessions_and_messages(client: Any) -> None:
    users = text_of(client.get("/").text)
    assert "alice 1 4" in users and "bob 1 1" in users
    user = text_of(client.get("/users/alice").text)
    assert "trip" in user and "Lisbon trip" in user and "bob-s" not in user and "metric" in user
    page = client.get("/sessions/trip").text
    assert page.count('class="message') == 4
    assert 'class="message off-branch"' in page and "off branch" in page
    assert "&#34;speaker&#34;: &#34;alice&#34;" in page  # metadata shown, escaped
    assert "plan the Lisbon trip" in page
    assert "4 messages (2 human, 2 ai" in text_of(page)


def test_recall_shows_score_parts_and_rehydrate_sections(client: Any) -> None:
    page = client.get("/users/alice/recall", params={"q": "Lisbon in March", "mode": "recall"}).text
    rows = re.findall(r'<tr class="hit">(.*?)</tr>', page, re.S)
    assert rows and "bob" not in page
    numbers = [float(x) for x in re.findall(r'<td class="num">([0-9.]+)</td>', rows[0])[1:7]]
    score, words, meaning, neighbour, recency = numbers[:5]
    assert words + meaning + neighbour + recency == pytest.approx(score, abs=0.003) and words > 0
    searched = client.get("/users/alice/recall", params={"q": "Lisbon", "mode": "search"}).text
    assert "March is mild" in searched
    hydrated = client.get("/sessions/trip/rehydrate", params={"q": "where do we go?", "budget": "60"}).text
    assert re.search(r"<strong>\d+</strong> of <strong>60</strong> tokens used", hydrated)
    assert 'class="dropped"' in hydrated  # a 60-token budget cannot hold everything
    assert 'data-section="recent"' in hydrated
    fragment = client.get("/sessions/trip/rehydrate", params={"budget": "2000"}, headers={"hx-request": "true"}).text
    assert "<html" not in fragment and "Nothing dropped." in fragment


def test_edits_and_erase(client: Any, store: Any) -> None:
    saved = client.post("/sessions/trip/context", data={"context_type": "fact", "context_key": "diet",
                                                         "context_value": "Ana is vegetarian"})  # fmt: skip
    assert saved.status_code == 200 and "Ana is vegetarian" in saved.text
    assert {c.context_key for c in store.get_context("trip")} == {"task", "diet"}
    client.post("/users/alice/preferences", data={"preference_key": "theme", "preference_value": '"dark"'})
    assert {p.preference_key: p.preference_value for p in store.get_preferences("alice")}["theme"] == "dark"
    message = store.get_messages("trip")[3]
    assert client.post(f"/messages/{message.message_id}/delete").status_code == 200
    assert len(store.get_messages("trip")) == 3
    refused = client.post("/users/alice/erase", data={"confirm": "alic"})
    assert refused.status_code == 400 and "nothing was deleted" in refused.text
    assert store.get_session("trip") is not None
    erased = client.post("/users/alice/erase", data={"confirm": "alice"})
    assert erased.status_code == 200 and "Erased every row of user" in erased.text
    assert store.get_user_sessions("alice") == [] and store.get_preferences("alice") == []
    assert len(store.get_messages("bob-s")) == 1


def test_sensitive_preferences_are_masked_without_a_key(client: Any, store: Any, monkeypatch: Any) -> None:
    from ltst_memory.crypto import generate_key

    monkeypatch.setenv("LTST_ENCRYPTION_KEY", generate_key())
    store.store_preference(UserPreference(user_id="alice", preference_key="passport", preference_value="X123",
                                          is_sensitive=True))  # fmt: skip
    shown = client.get("/users/alice").text
    assert "passport" in shown and "X123" not in shown and "••••••" in shown
    assert "X123" in client.get("/users/alice", params={"reveal": "1"}).text
    monkeypatch.delenv("LTST_ENCRYPTION_KEY")
    masked = client.get("/users/alice", params={"reveal": "1"}).text
    assert "passport" in masked and "X123" not in masked and "no encryption key is set" in masked


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "error"),
    [
        ("get", "/sessions/nope", None, 404, "SessionNotFoundError"),
        ("get", "/sessions/trip?page=abc", None, 400, "ValidationError"),
        ("get", "/sessions/trip/rehydrate?budget=-5", None, 400, "ValidationError"),
        ("get", "/users/alice/recall?q=x&mode=magic", None, 400, "ValidationError"),
        ("get", "/users/alice/recall?q=x&session=bob-s", None, 403, "AccessDeniedError"),
        ("post", "/sessions/trip/context", {"context_type": "", "context_key": "k", "context_value": "v"}, 400,
         "ValidationError"),
        ("post", "/sessions/trip/context", {"context_type": "t", "context_key": "k", "context_value": "v",
                                            "relevance_score": "high"}, 400, "ValidationError"),
        ("post", "/users/alice/preferences", {"preference_key": "k", "preference_value": "not json"}, 400,
         "ValidationError"),
        ("post", "/users/alice/preferences", {"preference_key": "k", "preference_value": "1",
                                              "confidence_score": "7"}, 400, "ValidationError"),
        ("post", "/messages/abc/delete", None, 400, "ValidationError"),
        ("post", "/messages/999999/delete", None, 404, "NotFoundError"),
        ("post", "/sessions/trip/erase", {"confirm": "no"}, 400, "ValidationError"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_changes_nothing(
    client: Any, store: Any, method: str, path: str, data: Any, status: int, error: str
) -> None:
    before = (store.get_messages("trip"), store.get_context("trip"), store.get_preferences("alice"))
    response = getattr(client, method)(path, **({"data": data} if data else {}))
    assert response.status_code == status and error in response.text and "Nothing was changed" in response.text
    assert (store.get_messages("trip"), store.get_context("trip"), store.get_preferences("alice")) == before


def test_ltst_serve_prints_its_address_and_refuses_requests_without_the_token(store: Any, database_dsn: str) -> None:
    import subprocess
    import sys

    import httpx

    seed(store)
    command = [sys.executable, "-m", "ltst_memory.cli", "serve", "--port", "0", "--dsn", database_dsn,
               "--model", "hashing-bow"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", line)
            assert found, line
            base, token = found.group(1), found.group(3)
            assert httpx.get(f"{base}/").status_code == 401
            assert httpx.get(f"{base}/", headers={"x-ltst-token": token[:-1]}).status_code == 401
            with httpx.Client(follow_redirects=True) as browser:
                users = browser.get(f"{base}/?token={token}")
                assert users.status_code == 200 and "alice" in users.text
                assert browser.get(f"{base}/sessions/trip").status_code == 200  # the cookie carries the token
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_messages_and_users_are_paged(client: Any, store: Any) -> None:
    store.create_session(ConversationSession(session_id="long", user_id="carol"))
    store.store_messages([ConversationMessage("long", "human", f"turn {i}") for i in range(120)])
    first = client.get("/sessions/long").text
    assert first.count('class="message') == 50 and "page 1 of 3" in first  # oldest first
    assert ">turn 0<" in first and ">turn 49<" in first and ">turn 50<" not in first
    third = client.get("/sessions/long", params={"page": "3"}).text
    assert third.count('class="message') == 20 and ">turn 100<" in third and ">turn 119<" in third
    assert ">turn 99<" not in third
    assert client.get("/sessions/long", params={"page": "0"}).status_code == 400
    users = client.get("/").text
    assert "carol" in users and "?page=2" not in users  # three users fit on one page
