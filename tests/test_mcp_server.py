"""The MCP server (ltst_memory/mcp_server.py) through the SDK's own client, against the real store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from ltst_memory import ConversationMessage, ConversationSession
from ltst_memory.mcp_server import build_server

TOOLS = {
    "remember_message", "remember_context", "remember_preference", "search", "recall", "rehydrate",
    "list_sessions", "forget_message", "forget_session", "forget_user",
}  # fmt: skip


@pytest.fixture
def two_users(store: Any) -> Any:
    """alice (the server's user) and bob, each with a session about Lisbon."""
    for user in ("alice", "bob"):
        store.create_session(ConversationSession(session_id=f"{user}-trip", user_id=user))
        store.store_messages([
            ConversationMessage(session_id=f"{user}-trip", role="human", content=f"{user} flies to Lisbon in March"),
            ConversationMessage(session_id=f"{user}-trip", role="ai", content="Lisbon is mild in March."),
        ])  # fmt: skip
    return store


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    if result.structured_content is not None:
        value = result.structured_content
        return value.get("result", value) if set(value) == {"result"} else value
    return json.loads(result.content[0].text)


async def error_of(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return str(result.content[0].text)


async def test_tools_listed_and_each_works_for_its_user(two_users: Any) -> None:
    async with Client(build_server(two_users, "alice")) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS

        stored = await call(client, "remember_message", session_id="alice-new", content="Ana is vegetarian")
        assert stored["user_id"] == "alice" and stored["session_id"] == "alice-new"
        ctx = await call(client, "remember_context", session_id="alice-new", context_type="project",
                         context_key="task", context_value="plan the Lisbon trip")  # fmt: skip
        assert ctx["context_value"] == "plan the Lisbon trip"
        pref = await call(client, "remember_preference", key="diet", value={"vegetarian": True})
        assert pref["preference_value"] == {"vegetarian": True}

        sessions = await call(client, "list_sessions")
        assert {s["session_id"] for s in sessions} == {"alice-trip", "alice-new"}

        found = await call(client, "search", query="Lisbon in March")
        assert found and {h["message"]["user_id"] for h in found} == {"alice"}
        recalled = await call(client, "recall", query="who flies to Lisbon?")
        assert recalled and {h["message"]["user_id"] for h in recalled} == {"alice"}
        top = recalled[0]
        parts = top["parts"]
        assert parts["words"] + parts["meaning"] + parts["neighbour"] + parts["recency"] == pytest.approx(top["score"])

        hydrated = await call(client, "rehydrate", session_id="alice-new", query="where is the trip?", token_budget=500)
        assert hydrated["token_budget"] == 500 and 0 < hydrated["tokens_used"] <= 500
        assert "plan the Lisbon trip" in hydrated["prompt"]
        assert "bob" not in hydrated["prompt"]

        transcript = await client.read_resource("ltst://sessions/alice-trip/transcript")
        turns = json.loads(transcript.contents[0].text)
        assert [t["content"] for t in turns] == ["alice flies to Lisbon in March", "Lisbon is mild in March."]
        summary = json.loads((await client.read_resource("ltst://sessions/alice-trip/summary")).contents[0].text)
        assert summary["total_messages"] == 2

        gone = await call(client, "forget_message", message_id=stored["message_id"])
        assert gone == {"message_id": stored["message_id"], "session_id": "alice-new"}
        assert (await call(client, "forget_session", session_id="alice-new", confirm_session_id="alice-new"))[
            "sessions"
        ] == 1
        erased = await call(client, "forget_user", confirm_user_id="alice")
        assert erased["removed"]["sessions"] == 1 and erased["complete"]
    assert two_users.get_user_sessions("alice") == []
    assert [s.session_id for s in two_users.get_user_sessions("bob")] == ["bob-trip"]
    assert len(two_users.get_messages("bob-trip")) == 2


async def test_another_users_data_is_out_of_reach(two_users: Any) -> None:
    bob_message = two_users.get_messages("bob-trip")[0]
    async with Client(build_server(two_users, "alice")) as client:
        assert "AccessDeniedError" in await error_of(client, "rehydrate", session_id="bob-trip", query="Lisbon")
        assert "AccessDeniedError" in await error_of(client, "search", query="Lisbon", session_id="bob-trip")
        assert "AccessDeniedError" in await error_of(
            client, "remember_message", session_id="bob-trip", content="written by alice"
        )
        assert "NotFoundError" in await error_of(client, "forget_message", message_id=bob_message.message_id)
        assert "AccessDeniedError" in await error_of(
            client, "forget_session", session_id="bob-trip", confirm_session_id="bob-trip"
        )
        for hit in await call(client, "recall", query="bob flies to Lisbon", limit=50):
            assert hit["message"]["user_id"] == "alice"
        with pytest.raises(Exception, match="AccessDeniedError"):
            await client.read_resource("ltst://sessions/bob-trip/transcript")
    assert len(two_users.get_messages("bob-trip")) == 2
    assert two_users.get_session("bob-trip") is not None


async def test_bad_input_is_refused_and_changes_nothing(two_users: Any) -> None:
    async with Client(build_server(two_users, "alice")) as client:
        assert "ValidationError" in await error_of(client, "remember_message", session_id="alice-trip", content="")
        assert "ValidationError" in await error_of(
            client, "remember_message", session_id="alice-trip", content="hi", role="wizard"
        )
        assert "ValidationError" in await error_of(client, "recall", query="x", limit=0)
        assert "ValidationError" in await error_of(client, "rehydrate", session_id="alice-trip", token_budget=-1)
        assert "ValidationError" in await error_of(client, "forget_message", message_id=-3)
        refused = await error_of(client, "forget_session", session_id="alice-trip", confirm_session_id="yes")
        assert "ValidationError" in refused and "nothing was deleted" in refused
        assert "ValidationError" in await error_of(client, "forget_user", confirm_user_id="bob")
        assert "SessionNotFoundError" in await error_of(client, "rehydrate", session_id="nobody", query="x")
    assert len(two_users.get_messages("alice-trip")) == 2
    assert [s.session_id for s in two_users.get_user_sessions("alice")] == ["alice-trip"]


async def test_ltst_mcp_over_stdio(two_users: Any, database_dsn: str) -> None:
    """``ltst mcp --user alice`` as Claude Desktop runs it: a subprocess speaking MCP on stdio."""
    import sys

    from mcp import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ltst_memory.cli", "mcp", "--user", "alice", "--dsn", database_dsn, "--model", "hashing-bow"],
    )
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        sessions = await call(client, "list_sessions")
        assert [s["session_id"] for s in sessions] == ["alice-trip"]
        assert "AccessDeniedError" in await error_of(client, "rehydrate", session_id="bob-trip")


def test_ltst_mcp_needs_a_user_and_a_known_transport(database_dsn: str) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "ltst_memory.cli", "mcp", "--dsn", database_dsn]
    missing = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "--user" in missing.stderr
    wrong = subprocess.run([*base, "--user", "a", "--transport", "smoke"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 1 and "--transport must be stdio or http" in wrong.stderr


async def test_ltst_mcp_over_streamable_http(two_users: Any, database_dsn: str) -> None:
    """``ltst mcp --transport http``: the SDK's client over streamable HTTP on 127.0.0.1."""
    import socket
    import subprocess
    import sys

    import anyio

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ltst_memory.cli", "mcp", "--user", "bob", "--transport", "http",
               "--port", str(port), "--dsn", database_dsn, "--model", "hashing-bow"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            assert "ready" in process.stderr.readline()
            for _ in range(200):  # the ready line comes just before uvicorn binds the port
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    await anyio.sleep(0.05)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert [s["session_id"] for s in await call(client, "list_sessions")] == ["bob-trip"]
                assert "AccessDeniedError" in await error_of(client, "search", query="x", session_id="alice-trip")
        finally:
            process.terminate()
            process.wait(timeout=30)
