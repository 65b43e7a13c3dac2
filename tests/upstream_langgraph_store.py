"""Run LangGraph's PostgresStore test suite (from the langgraph-checkpoint-postgres sdist) against LTSTStore.

Not part of the default test suite (it needs sources that are not in this repository); run it by hand:

    python tests/upstream_langgraph_store.py [--workdir DIR] [-- PYTEST ARGS]

It fetches the sdist with ``pip download --no-binary :all:`` (once, into ``--workdir``), replaces the
suite's ``tests/conftest.py`` by one that starts the embedded PostgreSQL and maps
``langgraph.store.postgres.PostgresStore``/``AsyncPostgresStore`` onto ``LTSTStore`` (scoped to the user
``"upstream"``, on a ``ConversationStorage``/``AsyncConversationStorage`` with the hashing embedder), and
runs ``test_store.py`` and ``test_async_store.py``. The shim drops ``ann_index_config`` (PostgresStore's
own index tuning, which LTSTStore refuses) and gives ``setup()``/``MIGRATIONS``/``_cursor()`` equivalents;
tests of PostgresStore's private helpers fail by design.
"""

from __future__ import annotations

import sys

from _upstream import EMBEDDED_SERVER, main

PACKAGE = "langgraph-checkpoint-postgres"

CONFTEST = (
    r'''
"""Shim: LangGraph's PostgresStore tests on ltst-memory's LTSTStore (written by upstream_langgraph_store.py)."""
from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row

from ltst_memory import AsyncConversationStorage, ConversationStorage, HashingEmbedder
from ltst_memory.adapters.langgraph import LTSTStore
from tests.embed_test_utils import CharacterEmbeddings  # noqa: F401

'''
    + EMBEDDED_SERVER
    + r"""

_USER = _PARAMS.get("user", "postgres")
DEFAULT_POSTGRES_URI = f"postgresql://{_USER}@{_HOST}:{_PARAMS.get('port', 5432)}/"
DEFAULT_URI = DEFAULT_POSTGRES_URI + "postgres"
VECTOR_TYPES = ["vector", "halfvec"]
USER = "upstream"


def _index(index):
    if index is None:
        return None
    return {k: v for k, v in index.items() if k != "ann_index_config"}


class PostgresStore(LTSTStore):
    MIGRATIONS: list = []
    VECTOR_MIGRATIONS: list = []

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string, *, pipeline=False, pool_config=None, index=None, ttl=None):
        storage = ConversationStorage(conn_string, embedder=HashingEmbedder(16))
        store = cls(storage, user_id=USER, index=_index(index), ttl=ttl)
        store._storage = storage
        try:
            yield store
        finally:
            store.stop_ttl_sweeper(5)
            storage.close()

    def setup(self) -> None:
        pass

    @contextmanager
    def _cursor(self, *, pipeline=False):
        with self._storage.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            yield cur


class AsyncPostgresStore(LTSTStore):
    MIGRATIONS: list = []
    VECTOR_MIGRATIONS: list = []

    @classmethod
    @asynccontextmanager
    async def from_conn_string(cls, conn_string, *, pipeline=False, pool_config=None, index=None, ttl=None):
        storage = AsyncConversationStorage(conn_string, embedder=HashingEmbedder(16))
        await storage.__aenter__()
        store = cls(storage, user_id=USER, index=_index(index), ttl=ttl)
        store._storage = storage
        try:
            yield store
        finally:
            await store.stop_ttl_sweeper(5)
            await storage.close()

    async def setup(self) -> None:
        pass

    @asynccontextmanager
    async def _cursor(self, *, pipeline=False):
        async with await AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            async with conn.cursor(row_factory=dict_row) as cur:
                yield cur

    @property
    def _dsn(self):
        return self._storage.dsn


def _escape_like_literal(value):  # PostgresStore's private helper: not part of LTSTStore
    raise NotImplementedError("PostgresStore internals")


def _namespace_match_pattern(*args, **kwargs):
    raise NotImplementedError("PostgresStore internals")


_postgres = types.ModuleType("langgraph.store.postgres")
_postgres.PostgresStore = PostgresStore
_postgres.AsyncPostgresStore = AsyncPostgresStore
_base = types.ModuleType("langgraph.store.postgres.base")
_base._escape_like_literal = _escape_like_literal
_base._namespace_match_pattern = _namespace_match_pattern
_base.PostgresStore = PostgresStore
_checkpoint = types.ModuleType("langgraph.checkpoint.postgres")
_checkpoint._ainternal = types.ModuleType("langgraph.checkpoint.postgres._ainternal")
sys.modules.update({
    "langgraph.store.postgres": _postgres,
    "langgraph.store.postgres.base": _base,
    "langgraph.checkpoint.postgres": _checkpoint,
    "langgraph.checkpoint.postgres._ainternal": _checkpoint._ainternal,
})


@pytest.fixture(scope="function")
async def conn() -> AsyncIterator[AsyncConnection[DictRow]]:
    async with await AsyncConnection.connect(DEFAULT_URI, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def fake_embeddings() -> CharacterEmbeddings:
    return CharacterEmbeddings(dims=500)
"""
)


if __name__ == "__main__":
    sys.exit(
        main(
            __doc__.splitlines()[0],
            package=PACKAGE,
            glob="langgraph_checkpoint_postgres-*",
            conftest=CONFTEST,
            modules=["tests/test_store.py", "tests/test_async_store.py"],
            workdir="ltst-upstream",
        )
    )
