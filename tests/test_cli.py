"""The ``ltst`` command line, run in-process with typer's CliRunner (and once as a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder
from ltst_memory.cli import app
from ltst_memory.errors import EmbeddingDimensionError
from ltst_memory.reembed import reembed, reembed_status

DATA = Path(__file__).parent / "data"
LISBON = "chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000001"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(runner: CliRunner, *args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args))
    output = result.output
    if ok:
        assert result.exit_code == 0, output + repr(result.exception)
    else:
        assert result.exit_code != 0, output
    return output


def _fill(store: ConversationStorage) -> None:
    store.create_session(ConversationSession("s1", "alice", "Trip"))
    store.create_session(ConversationSession("s2", "bob", "Other"))
    store.store_messages(
        [
            ConversationMessage("s1", "human", "My sister Ana is vegetarian."),
            ConversationMessage("s1", "ai", "Noted, vegetarian restaurants only."),
            ConversationMessage("s2", "human", "The laptop overheats."),
        ]
    )


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    commands = [
        "demo", "migrate", "doctor", "search", "rehydrate", "stats", "cleanup", "reembed", "import",
        "import-langchain-postgres", "export", "schema-docs", "api-docs",
    ]  # fmt: skip
    for command in commands:
        assert "Example: ltst" in run(runner, command, "--help"), command
    for sub in ("list", "show"):
        assert "Example: ltst sessions" in run(runner, "sessions", sub, "--help")


def test_sessions_search_stats_cleanup(runner: CliRunner, store: ConversationStorage, database_dsn: str) -> None:
    _fill(store)
    out = run(runner, "sessions", "list", "--dsn", database_dsn)
    assert "s1" in out and "s2" in out and "alice" in out
    out = run(runner, "sessions", "list", "--user", "alice", "--json", "--dsn", database_dsn)
    assert [r["session_id"] for r in json.loads(out)] == ["s1"]
    out = run(runner, "sessions", "show", "s1", "--dsn", database_dsn)
    assert "Ana is vegetarian" in out and "2 messages" in out
    shown = json.loads(run(runner, "sessions", "show", "s1", "--json", "--dsn", database_dsn))
    assert shown["summary"]["total_messages"] == 2 and shown["messages"][0]["embedding"] is None

    hits = json.loads(run(runner, "search", "vegetarian", "--user", "alice", "--json", "--dsn", database_dsn))
    assert hits and all(h["user_id"] == "alice" for h in hits)
    assert "vegetarian" in run(runner, "search", "vegetarian", "-s", "s1", "--dsn", database_dsn)

    report = json.loads(run(runner, "stats", "--json", "--dsn", database_dsn))
    assert report["rows"]["messages"] == 3 and report["rows"]["sessions"] == 2
    out = run(runner, "stats", "--dsn", database_dsn)
    assert "idx_messages_user_time" in out and "conversation_messages" in out
    assert "removed" in run(runner, "cleanup", "--dsn", database_dsn)


def test_errors_are_one_line_with_non_zero_exit(runner: CliRunner, database_dsn: str, tmp_path: Path) -> None:
    out = run(runner, "sessions", "show", "nope", "--dsn", database_dsn, ok=False)
    assert "error:" in out and "does not exist" in out and "Traceback" not in out
    assert len([line for line in out.splitlines() if line.strip()]) == 1
    bad = tmp_path / "x.json"
    bad.write_text("not json at all")
    out = run(runner, "import", str(bad), "--user", "u", "--dsn", database_dsn, ok=False)
    assert "cannot tell the format" in out
    out = run(runner, "export", str(tmp_path / "o.jsonl"), "--dsn", database_dsn, ok=False)
    assert "exactly one of --user or --session" in out
    out = run(runner, "stats", "--dsn", "postgresql://nobody:secret@127.0.0.1:1/none", ok=False)
    assert "cannot connect" in out and "secret" not in out


def test_import_export_round_trip_through_the_cli(
    runner: CliRunner, store: ConversationStorage, database_dsn: str, empty_database_dsn: str, tmp_path: Path
) -> None:
    out = run(runner, "import", str(DATA / "chatgpt_conversations.json"), "-u", "alice", "--dsn", database_dsn)
    assert "2 sessions (2 new), 9 messages (9 new)" in out
    out = run(runner, "import", str(DATA / "chatgpt_conversations.json"), "-u", "alice", "--dsn", database_dsn)
    assert "9 messages (0 new)" in out
    exported = tmp_path / "alice.jsonl"
    run(runner, "export", str(exported), "--user", "alice", "--dsn", database_dsn)
    assert exported.read_text().count('"type": "message"') == 9
    with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder(384)):
        pass  # creates the schema with the same (hashing) model
    out = run(runner, "import", str(exported), "--dsn", empty_database_dsn)
    assert "9 messages (9 new)" in out
    with ConversationStorage(empty_database_dsn, embedder=HashingEmbedder(384)) as copy:
        assert len(copy.get_messages(LISBON)) == 7
    out = run(runner, "export", "-", "--session", LISBON, "--no-embeddings", "--dsn", database_dsn)
    assert '"embedding": [' not in out and out.count('"type": "message"') == 7


def test_rehydrate_uses_the_store_or_says_it_cannot(
    runner: CliRunner, store: ConversationStorage, database_dsn: str
) -> None:
    _fill(store)
    if hasattr(ConversationStorage, "rehydrate"):
        out = run(runner, "rehydrate", "s1", "Where should we eat?", "--budget", "200", "--dsn", database_dsn)
        assert "## Recent conversation" in out and "Ana is vegetarian" in out
    else:
        out = run(runner, "rehydrate", "s1", "Where should we eat?", "--dsn", database_dsn, ok=False)
        assert "no storage.rehydrate()" in out


def test_reembed_switches_model_and_dimension(runner: CliRunner, store: ConversationStorage, database_dsn: str) -> None:
    _fill(store)
    store.close()
    out = run(runner, "reembed", "--model", "hashing-bow:64", "--batch-size", "2", "--dsn", database_dsn)
    assert "re-embedded 3 messages" in out and "-> hashing-bow:64 (64 dims)" in out
    with pytest.raises(EmbeddingDimensionError):
        ConversationStorage(database_dsn, embedder=HashingEmbedder(384))
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(64, model_name="hashing-bow:64")) as new:
        hits = new.search_messages("vegetarian restaurants", user_id="alice", limit=1)
        assert hits[0][0].content == "Noted, vegetarian restaurants only."
        assert new.stats()["embedding"] == {"model": "hashing-bow:64", "dimension": 64}
        new.store_message(ConversationMessage("s1", "human", "a new one"))  # the new column takes writes
    with psycopg.connect(database_dsn) as conn:
        indexes = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef ~ 'embedding'")]
        assert "idx_messages_pending_embedding" in indexes
        assert reembed_status(conn) is None
    assert "nothing to do" in run(runner, "reembed", "--model", "hashing-bow:64", "--dsn", database_dsn)


def test_reembed_resumes_after_an_interruption(store: ConversationStorage, database_dsn: str) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    store.store_messages([ConversationMessage("s1", "human", f"turn number {i}") for i in range(7)])
    store.close()
    target = HashingEmbedder(32, model_name="hashing-bow:32")
    done: list[int] = []

    def interrupt(n: int) -> None:
        done.append(n)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reembed(database_dsn, target, batch_size=3, progress=interrupt)
    with psycopg.connect(database_dsn) as conn:
        status = reembed_status(conn)
    assert status is not None and status["model"] == "hashing-bow:32" and status["last_message_id"] > 0
    # the old model still works meanwhile
    with ConversationStorage(database_dsn, embedder=HashingEmbedder(384)) as old:
        assert old.search_messages("turn number", session_id="s1", limit=10)
    result = reembed(database_dsn, target, batch_size=3)
    assert result.resumed_from == status["last_message_id"] and result.messages == 1  # 7 = 3 + 3 + 1
    with ConversationStorage(database_dsn, embedder=target) as new:
        assert len(new.search_messages("turn number", session_id="s1", limit=10)) == 7


def test_doctor_reports_versions_and_fails_clearly(
    runner: CliRunner, store: ConversationStorage, database_dsn: str
) -> None:
    out = run(runner, "doctor", "--dsn", database_dsn)
    for word in ("PostgreSQL", "pgvector", "schema", "embedding model", "hashing-bow"):
        assert word in out
    out = run(runner, "doctor", "--dsn", "postgresql://nobody@127.0.0.1:1/none", ok=False)
    assert "\tfail\t" in out and "LTST_DATABASE_URL" in out


def test_migrate_command(runner: CliRunner, empty_database_dsn: str) -> None:
    assert "applied: 0001_ltst_schema.sql" in run(runner, "migrate", "--dsn", empty_database_dsn)
    assert "schema is up to date" in run(runner, "migrate", "--dsn", empty_database_dsn)


def test_ltst_script_runs_as_a_process(database_dsn: str, store: ConversationStorage) -> None:
    _fill(store)
    env = {**os.environ, "LTST_DATABASE_URL": database_dsn, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "ltst_memory.cli", "sessions", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["session_id"] for r in json.loads(done.stdout)} == {"s1", "s2"}
    done = subprocess.run(
        [sys.executable, "-m", "ltst_memory.cli", "sessions", "show", "missing"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
