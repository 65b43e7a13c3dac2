"""The documentation runs and is current.

* Every ```python block of README.md and docs/*.md runs, file by file (blocks of one file share a
  namespace, in order; top-level ``await`` works, on one event loop per file), against a fresh
  database with the real all-MiniLM-L6-v2 model. A page may use ``storage`` without creating it: the
  namespace starts with an open ``ConversationStorage()`` on that database, as after the quickstart. A block
  right after an ``<!-- no-test -->`` line is skipped (for code that needs a network or a server
  that the tests do not have); keep those rare.
* Every ``ltst COMMAND`` named in a ```bash block exists.
* docs/api.md and docs/schema.md are what ``ltst api-docs`` / ``ltst schema-docs`` generate now, and
  docs/api.md documents every public method of both stores.
* docs/index.md links every page of docs/.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import re
import shutil
from pathlib import Path

import pytest

import ltst_memory._executor
from ltst_memory import AsyncConversationStorage, ConversationStorage

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
SKIP_MARK = "<!-- no-test -->"


def code_blocks(text: str, language: str) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` of every fenced block of ``language`` in ``text``."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("info").strip() != language:
            continue
        before = text[: match.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].strip() == SKIP_MARK
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group("body"), skipped))
    return blocks


PAGES_WITH_CODE = [p for p in PAGES if any(not s for _, _, s in code_blocks(p.read_text(), "python"))]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(
    page: Path,
    database_dsn: str,
    minilm: object,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("LTST_DATABASE_URL", database_dsn)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A block that starts a process with an environment of its own (the MCP SDK's client passes HOME
    # and PATH, not LTST_DATABASE_URL) must not reach the developer's default store.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ltst_memory._executor, "default_embedder", lambda name="all-MiniLM-L6-v2": minilm)
    shutil.copytree(ROOT / "tests" / "data", tmp_path / "tests" / "data")
    monkeypatch.chdir(tmp_path)
    given = ConversationStorage()  # what a page may assume, as after the quickstart
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}", "storage": given}
    loop = asyncio.new_event_loop()  # one loop per page: blocks may `await` at top level, as in a notebook
    try:
        for line, code, skipped in code_blocks(page.read_text(encoding="utf-8"), "python"):
            if skipped:
                continue
            output = io.StringIO()
            try:
                where = f"{page.relative_to(ROOT)}:{line}"
                compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                with contextlib.redirect_stdout(output):
                    result = eval(compiled, namespace)
                    if compiled.co_flags & inspect.CO_COROUTINE:
                        loop.run_until_complete(result)
            except Exception as exc:
                pytest.fail(f"{page.relative_to(ROOT)}, block at line {line} failed: {type(exc).__name__}: {exc}")
        for value in namespace.values():  # close stores a page left open
            if isinstance(value, ConversationStorage):
                value.close()
            elif isinstance(value, AsyncConversationStorage):
                loop.run_until_complete(value.close())
    finally:
        loop.close()
        given.close()


def test_skip_marks_stay_rare() -> None:
    blocks = [b for p in PAGES for b in code_blocks(p.read_text(encoding="utf-8"), "python")]
    skipped = sum(1 for *_, s in blocks if s)
    assert skipped <= max(3, len(blocks) // 5), f"{skipped} of {len(blocks)} python blocks are marked no-test"


def test_ltst_commands_in_docs_exist() -> None:
    from typer.main import get_command

    from ltst_memory.cli import app

    group = get_command(app)
    commands = set(group.commands)  # type: ignore[attr-defined]
    for page in PAGES:
        for line, code, _ in code_blocks(page.read_text(encoding="utf-8"), "bash"):
            for command in re.findall(r"(?:^|&&|\|)\s*ltst\s+(?:-v\s+)?([a-z][a-z-]*)", code, re.MULTILINE):
                assert command in commands, f"{page.name}:{line}: `ltst {command}` is not a command"


def test_api_reference_is_current_and_complete() -> None:
    from ltst_memory._docgen import render_api

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    assert text == render_api(), "docs/api.md is stale: run `ltst api-docs --force`"
    for cls in (ConversationStorage, AsyncConversationStorage):
        for name in dir(cls):
            if not name.startswith("_"):
                assert f"`{name}`" in text, f"{cls.__name__}.{name} is not in docs/api.md"
    for name, member in inspect.getmembers(ConversationStorage, inspect.isfunction):
        if not name.startswith("_"):
            params = [p for p in inspect.signature(member).parameters if p != "self"]
            assert all(p in text for p in params), f"docs/api.md misses a parameter of {name}"


def test_schema_reference_is_current(pg_admin_dsn: str) -> None:
    from ltst_memory._docgen import render_schema

    assert (DOCS / "schema.md").read_text(encoding="utf-8") == render_schema(pg_admin_dsn), (
        "docs/schema.md is stale: run `ltst schema-docs --force`"
    )


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+\.md)", index))
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert page.name in linked, f"docs/index.md does not link {page.name}"
