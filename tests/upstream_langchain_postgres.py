"""Run langchain-postgres' own chat-history and PGVectorStore search tests (from its sdist) against ltst-memory.

Not part of the default test suite (it needs sources that are not in this repository); run it by hand:

    python tests/upstream_langchain_postgres.py [--workdir DIR] [-- PYTEST ARGS]

It fetches the langchain-postgres sdist with ``pip download --no-binary :all:`` (once, into ``--workdir``),
writes a ``tests/conftest.py`` that starts the embedded PostgreSQL and installs stand-in modules for
``langchain_postgres`` (langchain-postgres itself and SQLAlchemy need not be installed):
``PostgresChatMessageHistory`` becomes ``LTSTChatMessageHistory`` and ``PGVectorStore``/``AsyncPGVectorStore``
become ``LTSTVectorStore`` (scoped to the user ``"upstream"``, one collection per table name), ``PGEngine``
holds a ``ConversationStorage``/``AsyncConversationStorage``. Table management (``create_tables``,
``init_vectorstore_table``) has no counterpart and does nothing, except that a table's metadata layout
(``store_metadata``, ``metadata_columns``) decides which metadata keys are kept, as langchain-postgres' tables
do. ``langchain_postgres.v2.indexes`` and ``hybrid_search_config`` are the sdist's own modules. It runs
``v1/test_chat_histories.py``, ``v2/test_pg_vectorstore_search.py`` and ``v2/test_async_pg_vectorstore_search.py``.
"""

from __future__ import annotations

import sys

from _upstream import EMBEDDED_SERVER, main

PACKAGE = "langchain-postgres"
GLOB = "langchain_postgres-*"
MODULES = [
    "tests/unit_tests/v1/test_chat_histories.py",
    "tests/unit_tests/v2/test_pg_vectorstore_search.py",
    "tests/unit_tests/v2/test_async_pg_vectorstore_search.py",
]

CONFTEST = (
    r'''
"""Shim: langchain-postgres' tests on ltst-memory's adapters (written by upstream_langchain_postgres.py)."""
from __future__ import annotations

import sys
import types
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg

from ltst_memory import AsyncConversationStorage, ConversationStorage, HashingEmbedder
from ltst_memory.adapters.langchain import LTSTChatMessageHistory, LTSTVectorStore

'''
    + EMBEDDED_SERVER
    + r'''

DSN = f"postgresql://{_PARAMS.get('user', 'postgres')}@{_HOST}:{_PARAMS.get('port', 5432)}/postgres"
USER = "upstream"

_sqlalchemy = types.ModuleType("sqlalchemy")  # the tests import sqlalchemy.text for their raw-SQL helper
_sqlalchemy.text = lambda sql: sql
_sqlalchemy.RowMapping = dict
sys.modules.setdefault("sqlalchemy", _sqlalchemy)

import tests.utils as _utils  # noqa: E402

_utils.DSN = DSN
_utils.VECTORSTORE_CONNECTION_STRING = DSN

_ROOT = Path(__file__).resolve().parent.parent / "langchain_postgres"
_pkg = types.ModuleType("langchain_postgres")
_pkg.__path__ = []
_v2 = types.ModuleType("langchain_postgres.v2")
_v2.__path__ = [str(_ROOT / "v2")]  # indexes.py and hybrid_search_config.py are the sdist's own
sys.modules.update({"langchain_postgres": _pkg, "langchain_postgres.v2": _v2})
from langchain_postgres.v2.indexes import DistanceStrategy  # noqa: E402

_DISTANCES = {"COSINE_DISTANCE": "cosine", "EUCLIDEAN": "euclidean", "INNER_PRODUCT": "max_inner_product"}


class Column:
    def __init__(self, name, data_type, nullable=True):
        self.name, self.data_type, self.nullable = name, data_type, nullable


class _Conn:
    def __init__(self, conn):
        self._conn = conn

    async def execute(self, sql):
        await self._conn.execute(sql)

    async def commit(self):
        await self._conn.commit()


class _Pool:
    @asynccontextmanager
    async def connect(self):
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            yield _Conn(conn)


class PGEngine:
    """Holds the storages; table management is langchain-postgres' own and does nothing here."""

    def __init__(self):
        self.storage = ConversationStorage(DSN, embedder=HashingEmbedder(16))
        self.async_storage = None
        self.tables = {}
        self._pool = _Pool()

    @classmethod
    def from_connection_string(cls, url, **kwargs):
        return cls()

    async def _run_as_async(self, coro):
        return await coro

    async def _async(self):
        if self.async_storage is None:
            self.async_storage = AsyncConversationStorage(DSN, embedder=HashingEmbedder(16))
            await self.async_storage.__aenter__()
        return self.async_storage

    def init_vectorstore_table(self, table_name, vector_size, *, metadata_columns=(), store_metadata=True, **kw):
        self.tables[table_name] = (store_metadata, [c.name if isinstance(c, Column) else c for c in metadata_columns])

    async def ainit_vectorstore_table(self, table_name, vector_size, **kwargs):
        self.init_vectorstore_table(table_name, vector_size, **kwargs)

    _ainit_vectorstore_table = ainit_vectorstore_table

    async def adrop_table(self, table_name, **kwargs):
        pass

    async def close(self):
        self.storage.close()
        if self.async_storage is not None:
            await self.async_storage.close()


_LAYOUT = {"id_column", "content_column", "embedding_column", "metadata_json_column", "schema_name",
           "ignore_metadata_columns", "index_query_options", "metadata_columns"}  # fmt: skip


class PGVectorStore(LTSTVectorStore):
    _options: dict = {}

    @classmethod
    def _make(cls, engine, embedding_service, table_name, storage, async_storage, kwargs):
        distance = _DISTANCES[kwargs.pop("distance_strategy", DistanceStrategy.COSINE_DISTANCE).name]
        store_metadata, _ = engine.tables.get(table_name, (True, []))
        columns = kwargs.get("metadata_columns") or []  # read back: the store's columns (+ JSON if stored)
        if storage is None:
            storage, async_storage = async_storage, None
        store = cls(storage, embedding_service, collection_name=table_name, user_id=USER,
                    distance_strategy=distance, async_storage=async_storage)  # fmt: skip
        store._keep = None if store_metadata else set(columns)
        store._options = {k: v for k, v in kwargs.items() if k not in _LAYOUT}  # e.g. hybrid_search_config, k
        return store

    @classmethod
    async def create(cls, engine, embedding_service, table_name, **kwargs):
        return cls._make(engine, embedding_service, table_name, engine.storage, await engine._async(), kwargs)

    @classmethod
    def create_sync(cls, engine, embedding_service, table_name, **kwargs):
        return cls._make(engine, embedding_service, table_name, engine.storage, engine.async_storage, kwargs)

    def _prepare(self, texts, metadatas, ids):
        texts, metas, id_list = super()._prepare(texts, metadatas, ids)
        if self._keep is not None:
            metas = [{k: v for k, v in m.items() if k in self._keep} for m in metas]
        return texts, metas, id_list

    def _search_args(self, embedding, k, filter, kwargs, *, with_vectors=False):
        return super()._search_args(embedding, k, filter, {**self._options, **kwargs}, with_vectors=with_vectors)


class AsyncPGVectorStore(PGVectorStore):
    @classmethod
    async def create(cls, engine, embedding_service, table_name, **kwargs):
        return cls._make(engine, embedding_service, table_name, None, await engine._async(), kwargs)


class PostgresChatMessageHistory(LTSTChatMessageHistory):
    def __init__(self, table_name, session_id, *, sync_connection=None, async_connection=None):
        if sync_connection is not None:
            self._shim_storage = ConversationStorage(DSN, embedder=HashingEmbedder(16))
            super().__init__(self._shim_storage, session_id, user_id=USER)
        else:
            self._shim_storage = AsyncConversationStorage(DSN, embedder=HashingEmbedder(16))
            super().__init__(self._shim_storage, session_id, user_id=USER)

    async def _aensure(self) -> None:
        if isinstance(self._shim_storage, AsyncConversationStorage) and not getattr(self, "_shim_open", False):
            await self._shim_storage.__aenter__()  # the async storage opens on the test's event loop
            self._shim_open = True
        await super()._aensure()

    @staticmethod
    def create_tables(connection, table_name, /):
        pass

    @staticmethod
    def drop_table(connection, table_name, /):
        pass

    @staticmethod
    async def acreate_tables(connection, table_name, /):
        pass

    @staticmethod
    async def adrop_table(connection, table_name, /):
        pass


_pkg.Column, _pkg.PGEngine, _pkg.PGVectorStore = Column, PGEngine, PGVectorStore
_chat = types.ModuleType("langchain_postgres.chat_message_histories")
_chat.PostgresChatMessageHistory = PostgresChatMessageHistory
_async_vs = types.ModuleType("langchain_postgres.v2.async_vectorstore")
_async_vs.AsyncPGVectorStore = AsyncPGVectorStore
sys.modules.update({
    "langchain_postgres.chat_message_histories": _chat,
    "langchain_postgres.v2.async_vectorstore": _async_vs,
})
'''
)


if __name__ == "__main__":
    sys.exit(
        main(
            __doc__.splitlines()[0],
            package=PACKAGE,
            glob=GLOB,
            conftest=CONFTEST,
            modules=MODULES,
            workdir="ltst-upstream-lcp",
        )
    )
