"""The example agents run end to end, offline, as a user would start them (``python examples/<name>/main.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, dsn: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LTST_LM", "DATABASE_URL")}
    env.update(LTST_DATABASE_URL=dsn, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "main.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scripted" in proc.stdout  # offline mode was used
    return proc.stdout


def test_dspy_react_agent(database_dsn):
    out = run_example("dspy_react_agent", database_dsn, "--hashing-embedder")
    assert "tool remember({'fact': 'The user is allergic to peanuts.'})" in out
    # in the second session the memory tool really returns the fact stored in the first one
    search_line = next(line for line in out.splitlines() if "tool search_memory({'query': 'food allergy'})" in line)
    assert "allergic to peanuts" in search_line
    assert "[session 2] agent: Visit Ana in Porto" in out


def test_langchain_chat(database_dsn):
    out = run_example("langchain_chat", database_dsn, "--hashing-embedder")
    assert "restored 4 messages" in out
    # after reopening the database the model answers from the stored history and the notes
    assert "bot> You are Priya, and you work on a compiler." in out
    assert "bot> According to the project notes it is written in Rust." in out


@pytest.mark.slow
def test_langgraph_agent_with_the_real_model(database_dsn):
    out = run_example("langgraph_agent", database_dsn)  # default embedder: all-MiniLM-L6-v2
    assert "[alice / thread-2] agent: How about a vegetarian place in Oslo?" in out
    assert "[bob / thread-3] agent: How about a place near you?" in out
