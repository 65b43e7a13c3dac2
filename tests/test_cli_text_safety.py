"""The ``ltst`` command line is safe for any stored text and for the files it writes (issue 17).

Stored text is data: never read as Rich markup, never allowed to drive the terminal, printed plainly
into pipes and files, and returned byte for byte by ``--json``. No command replaces a file without
``--force``.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from ltst_memory import ConversationMessage, ConversationSession, ConversationStorage, HashingEmbedder, _cli_common, cli
from ltst_memory.cli import app

DATA = Path(__file__).parent / "data"
LISBON = "chatgpt-6e1c0a52-0d5e-4f43-9a2b-000000000001"

PIECES = [
    "[/b]", "[/]", "[red]", "[/red]", "[bold magenta]", "[link=https://evil.example]click[/link]", "arr[index]",
    "[image]", "[[", "]]", "\\[", "\\", "{", "}", "\x1b[31m", "\x1b[0m", "\x1b]8;;http://x\x07", "\x1b[2J", "\x9b1m",
    "\x00", "\x07", "\x08", "\r", "\t", "\n", "\x0b", "\x0c", "\x7f", "\u202e", "\u2066", "\u200f", ":smile:",
    "<b>", "%s", "{0}", "$(rm -rf /)", "é", "ß", "日本語", "🙂", "\ufeff", "pip install 'ltst-memory[local]'",
]  # fmt: skip


def hostile_texts(n: int, seed: int = 17) -> list[str]:
    """``n`` distinct texts made of markup, brackets, ANSI escapes, controls and ordinary words."""
    rng = random.Random(seed)
    words = ["memory", "postgres", "vector", "temple", "trip", "code", "list", "index"]
    texts = []
    for i in range(n):
        parts = [rng.choice(PIECES) if rng.random() < 0.6 else rng.choice(words) for _ in range(rng.randint(1, 12))]
        text = f"{i} " + "".join(parts)
        texts.append(text.replace("\x00", "") if i % 2 else text.replace("\x00", "\x01"))
    return texts


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "100")
    return CliRunner()


def run(runner: CliRunner, *args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (args, result.output, repr(result.exception))
    else:
        assert result.exit_code != 0, (args, result.output)
    return result.output


def test_a_thousand_hostile_messages_through_every_command(
    runner: CliRunner, store: ConversationStorage, database_dsn: str
) -> None:
    texts = hostile_texts(1000)
    store.create_session(ConversationSession("[red]s[/red]", "alice", "[/b] name \x1b[31m"))
    store.store_messages([ConversationMessage("[red]s[/red]", "human", t) for t in texts])
    dsn = ("--dsn", database_dsn)

    # every command that shows them exits 0, and the human output never carries a raw escape
    outputs = [
        run(runner, "sessions", "list", *dsn),
        run(runner, "sessions", "show", "[red]s[/red]", "--limit", "1000", *dsn),
        run(runner, "search", "memory [/b] vector", "--user", "alice", "--limit", "1000", *dsn),
        run(runner, "search", "[/b]", "--session", "[red]s[/red]", *dsn),
        run(runner, "stats", *dsn),
    ]
    for out in outputs:
        assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    assert "[/b] name \\x1b[31m" in outputs[0]  # shown literally, made visible
    assert "arr[index]" in outputs[1] or "[image]" in outputs[1]
    prompt = run(runner, "rehydrate", "[red]s[/red]", "memory [/b]", *dsn)
    assert prompt.startswith("## ")

    # --json round-trips every text exactly
    shown = json.loads(run(runner, "sessions", "show", "[red]s[/red]", "--limit", "1000", "--json", *dsn))
    assert [m["content"] for m in shown["messages"]] == texts
    assert shown["session"]["session_name"] == "[/b] name \x1b[31m"
    hits = json.loads(run(runner, "search", "memory vector", "--user", "alice", "--limit", "1000", "--json", *dsn))
    assert hits and {h["content"] for h in hits} <= set(texts)
    hydrated = json.loads(run(runner, "rehydrate", "[red]s[/red]", "memory [/b]", "--json", *dsn))
    contents = [i["content"] for i in hydrated["items"] if i["content"] is not None]
    assert contents and set(contents) <= set(texts)
    assert hydrated["prompt"] == prompt[:-1]  # the plain output is the prompt itself
    listed = json.loads(run(runner, "sessions", "list", "--json", *dsn))
    assert listed[0]["session_id"] == "[red]s[/red]"
    exported = run(runner, "export", "-", "--session", "[red]s[/red]", "--no-embeddings", *dsn)
    lines = [json.loads(line) for line in exported.splitlines() if line.startswith("{")]
    assert [r["content"] for r in lines if r["type"] == "message"] == texts


def test_on_a_terminal_markup_in_data_is_shown_not_acted_on(
    store: ConversationStorage, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_session(ConversationSession("s1", "alice", "[bold]x"))
    store.store_messages(
        [
            ConversationMessage("s1", "human", "crash me [/b] and arr[index] and [image]"),
            ConversationMessage("s1", "ai", "[red]red[/red] [link=https://evil.example]click[/link] \x1b[2Jcleared"),
            ConversationMessage("s1", "human", "pip install 'ltst-memory[local]'"),
        ]
    )
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=200, highlight=False, color_system="standard")
    monkeypatch.setattr(_cli_common, "console", terminal)
    monkeypatch.setattr(cli, "console", terminal)
    result = CliRunner().invoke(app, ["sessions", "show", "s1", "--dsn", database_dsn])
    assert result.exit_code == 0, repr(result.exception)
    result = CliRunner().invoke(app, ["search", "arr index", "--session", "s1", "--dsn", database_dsn])
    assert result.exit_code == 0, repr(result.exception)
    shown = buffer.getvalue()
    for literal in ("[/b]", "arr[index]", "[image]", "[red]red[/red]", "[link=https://evil.example]", "[local]"):
        assert literal in shown, literal
    assert "\\x1b[2Jcleared" in shown and "\x1b[2J" not in shown
    assert "\x1b]8;" not in shown  # no hyperlink escape was emitted


def test_piped_output_is_plain_and_errors_are_one_line(
    runner: CliRunner, store: ConversationStorage, database_dsn: str
) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    long_turn = "word " * 60 + "end"
    store.store_messages([ConversationMessage("s1", "human", long_turn), ConversationMessage("s1", "ai", "short")])
    out = run(runner, "rehydrate", "s1", "word", "--dsn", database_dsn)
    expected = store.rehydrate("s1", "word").to_prompt()
    assert out == expected + "\n"  # no header, no wrapping at 80 columns, no trailing spaces
    out = run(runner, "sessions", "list", "--dsn", database_dsn)
    assert out.splitlines()[0] == "session\tuser\tname\tmessages\tlast activity"
    assert all(line == line.rstrip() for line in out.splitlines())
    out = run(runner, "sessions", "show", "x" * 200, "--dsn", database_dsn, ok=False)
    assert len(out.strip().splitlines()) == 1 and out.startswith("error: ") and "x" * 200 in out


def test_json_everywhere_and_the_small_things(runner: CliRunner, store: ConversationStorage, database_dsn: str) -> None:
    from ltst_memory import __version__

    store.create_session(ConversationSession("s1", "alice"))
    store.store_message(ConversationMessage("s1", "human", "the only vegetarian message"))
    dsn = ("--dsn", database_dsn)
    assert run(runner, "--version") == f"ltst-memory {__version__}\n"
    hydrated = json.loads(run(runner, "rehydrate", "s1", "vegetarian", "--json", *dsn))
    assert hydrated["token_budget"] == 2000  # the API's default
    assert isinstance(json.loads(run(runner, "cleanup", "--json", *dsn)), dict)
    assert [c["name"] for c in json.loads(run(runner, "doctor", "--json", *dsn))][:2] == ["ltst-memory", "database"]
    assert "cache" not in json.loads(run(runner, "stats", "--json", *dsn))
    assert json.loads(run(runner, "migrate", "--json", *dsn)) == {"applied": []}
    assert json.loads(run(runner, "hnsw-storage", "--json", *dsn)) == {"storage": "vector"}
    assert "cache:" not in run(runner, "stats", *dsn)
    assert "1 result for" in _terminal_output(["search", "vegetarian", "-s", "s1", *dsn])

    help_text = run(runner, "--help")
    assert "<bool>" not in help_text and "--version" in help_text
    for developer_only in ("schema-docs", "api-docs", "citus-prepare"):
        assert developer_only not in help_text
        assert "Example: ltst" in run(runner, developer_only, "--help")  # still runnable
    assert "<bool>" not in run(runner, "export", "--help")


def _terminal_output(args: list[str]) -> str:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=200, highlight=False, color_system=None)
    old = (_cli_common.console, cli.console)
    _cli_common.console = cli.console = terminal
    try:
        result = CliRunner().invoke(app, args)
    finally:
        _cli_common.console, cli.console = old
    assert result.exit_code == 0, repr(result.exception)
    return buffer.getvalue()


def test_export_never_destroys_a_file(
    runner: CliRunner, store: ConversationStorage, database_dsn: str, tmp_path: Path
) -> None:
    store.create_session(ConversationSession("s1", "alice"))
    store.store_message(ConversationMessage("s1", "human", "keep me"))
    precious = tmp_path / "precious.jsonl"
    precious.write_bytes(b'{"mine": true}\n' * 5000)
    before = precious.read_bytes()
    dsn = ("--dsn", database_dsn)
    out = run(runner, "export", str(precious), "--session", "s1-typo", *dsn, ok=False)
    assert "error:" in out and precious.read_bytes() == before
    out = run(runner, "export", str(precious), "--user", "alice-typo", *dsn, ok=False)
    assert "error:" in out and precious.read_bytes() == before
    out = run(runner, "export", str(precious), "--user", "alice", *dsn, ok=False)
    assert "exists; pass --force" in out and precious.read_bytes() == before
    fresh = tmp_path / "fresh.jsonl"
    run(runner, "export", str(fresh), "--user", "alice", *dsn)
    assert '"keep me"' in fresh.read_text()
    run(runner, "export", str(precious), "--user", "alice", "--force", *dsn)
    replaced = precious.read_text()
    assert '"keep me"' in replaced and '"mine"' not in replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.jsonl", "precious.jsonl"]  # no temporary left


def test_schema_sql_is_one_idempotent_psql_script(
    runner: CliRunner, empty_database_dsn: str, hashing_embedder: HashingEmbedder, tmp_path: Path
) -> None:
    script = run(runner, "schema-sql")
    assert "0001_ltst_schema.sql" in script
    with psycopg.connect(empty_database_dsn, autocommit=True) as conn:
        conn.execute(script.encode())
        conn.execute(script.encode())  # twice: nothing fails, nothing changes
    with ConversationStorage(empty_database_dsn, embedder=hashing_embedder) as store:
        store.create_session(ConversationSession("s1", "u1"))
        assert store.store_message(ConversationMessage("s1", "human", "works")).message_id
    target = tmp_path / "schema.sql"
    target.write_text("mine")
    assert "exists; pass --force" in run(runner, "schema-sql", "-o", str(target), ok=False)
    assert target.read_text() == "mine"
    run(runner, "schema-sql", "-o", str(target), "--force")
    assert target.read_text() == script
    doc = tmp_path / "api.md"
    doc.write_text("mine")
    assert "exists; pass --force" in run(runner, "api-docs", "-o", str(doc), ok=False)
    assert doc.read_text() == "mine"


def test_import_refuses_binary_and_non_utf8_files_in_one_line_and_takes_an_empty_export(
    runner: CliRunner, store: ConversationStorage, database_dsn: str, tmp_path: Path
) -> None:
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"role": "human", "content": "caf\xe9"}\n'.encode("latin-1"))
    for path in (binary, latin):
        for fmt in ("auto", "jsonl", "chatgpt", "langchain", "ltst"):
            out = run(runner, "import", str(path), "-f", fmt, "-u", "alice", "--dsn", database_dsn, ok=False)
            assert out.startswith("error: ") and len(out.strip().splitlines()) == 1, (path, fmt, out)
            assert "Traceback" not in out and "UnicodeDecodeError" not in out
    assert "not UTF-8" in run(runner, "import", str(latin), "-u", "alice", "--dsn", database_dsn, ok=False)
    assert "binary" in run(runner, "import", str(binary), "-u", "alice", "--dsn", database_dsn, ok=False)
    empty = tmp_path / "conversations.json"
    empty.write_text("[]\n")
    result = json.loads(run(runner, "import", str(empty), "-u", "alice", "--json", "--dsn", database_dsn))
    assert result["sessions_seen"] == 0 and result["messages_added"] == 0


def test_usage_errors_are_one_line_too(database_dsn: str) -> None:
    env = {**os.environ, "LTST_DATABASE_URL": database_dsn, "COLUMNS": "80"}
    for args, words in (
        (["search"], "Missing argument 'query'"),
        (["nope"], "No such command 'nope'"),
        (["search", "q", "--limit", "many"], "Invalid value for '--limit'"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ltst_memory.cli", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout)
        assert done.stderr.startswith("error: ") and words in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_export_jsonl_writes_atomically_and_refuses_without_overwrite(
    store: ConversationStorage, tmp_path: Path
) -> None:
    from ltst_memory.errors import LTSTError, ValidationError
    from ltst_memory.io import export_jsonl

    store.create_session(ConversationSession("s1", "alice"))
    store.store_message(ConversationMessage("s1", "human", "hello"))
    target = tmp_path / "out.jsonl"
    target.write_text("precious\n")
    with pytest.raises(LTSTError):  # fails half-way (unknown session): the old file stays whole
        export_jsonl(store, target, session_id="missing")
    assert target.read_text() == "precious\n"
    with pytest.raises(ValidationError, match="exists"):
        export_jsonl(store, target, user_id="alice", overwrite=False)
    assert target.read_text() == "precious\n"
    assert export_jsonl(store, target, user_id="alice")["message"] == 1  # overwrite=True: the API as before
    assert '"hello"' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
