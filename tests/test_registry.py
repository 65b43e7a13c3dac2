"""The registry of operations (ltst_memory/_kernel.py) is the one declaration of both stores' API."""

from __future__ import annotations

import inspect

import pytest

from ltst_memory import AsyncConversationStorage, ConversationStorage, _codegen, _unasync
from ltst_memory._executor import read_only_operations
from ltst_memory._kernel import REGISTRY
from ltst_memory.scoped import _references_user, scoped_methods

#: Public members of the stores that run no declared operation: opening and closing, properties,
#: the user-scoped view and the cache's local counters.
NOT_OPERATIONS = {
    "close",
    "closed",
    "connect",
    "open",
    "migrate",
    "versions",
    "settings",
    "embedder",
    "dsn",
    "read_dsn",
    "pool",
    "primary",
    "for_user",
    "cache_stats",
    "clear_cache",
}
STORES = (ConversationStorage, AsyncConversationStorage)


@pytest.mark.parametrize("kind", sorted(_codegen.FILES))
def test_generated_store_methods_are_current(kind: str) -> None:
    assert _codegen.generate(kind) == _codegen.FILES[kind].read_text(), "run: python -m ltst_memory._codegen"


def test_the_sync_store_is_generated_from_the_async_one() -> None:
    sync_text = _codegen.FILES["sync"].read_text()
    assert sync_text.startswith(_unasync.HEADER)  # says that it is generated, and from what
    assert "async " not in sync_text and "await " not in sync_text and "# ASYNC" not in sync_text
    assert _unasync.unasync(_codegen.FILES["async"].read_text()) != _codegen.FILES["async"].read_text()


def test_unasync_keeps_the_sync_branch_drops_keywords_and_maps_names() -> None:
    source = """class AsyncConversationStorage:
    \"\"\"The store (asyncio API).\"\"\"

    if True:  # ASYNC

        async def connect(self) -> None:
            await self._open()

    async def __aenter__(self) -> AsyncConversationStorage:
        if True:  # ASYNC: opens here
            await self.connect()
        else:
            self.opened = True

        async with AsyncExitStack() as stack:  # an AsyncExitStack
            await stack.aclose()
        return self
"""
    expected = """class ConversationStorage:
    \"\"\"The store (synchronous API).\"\"\"


    def __enter__(self) -> ConversationStorage:
        self.opened = True

        with ExitStack() as stack:  # an ExitStack
            stack.close()
        return self
"""
    assert _unasync.rewrite_tokens(_unasync.drop_async_blocks(source)) == expected


@pytest.mark.parametrize("store", STORES, ids=lambda c: c.__name__)
def test_every_public_member_comes_from_the_registry(store: type) -> None:
    public = {name for name in dir(store) if not name.startswith("_")}
    assert public - NOT_OPERATIONS == set(REGISTRY), "a store method that is not a declared operation"
    assert NOT_OPERATIONS - {"connect", "open"} <= public


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_both_stores_have_the_method_with_the_operations_parameters(name: str) -> None:
    declared = REGISTRY[name]
    sync_method, async_method = (getattr(store, name) for store in STORES)
    sync_sig, async_sig = inspect.signature(sync_method), inspect.signature(async_method)
    assert list(sync_sig.parameters.values()) == list(async_sig.parameters.values())
    assert list(sync_sig.parameters.values())[1:] == declared.parameters  # self, then the operation's
    assert sync_sig.return_annotation == async_sig.return_annotation == declared.returns
    assert not sync_sig.return_annotation.startswith("Op[")  # the real type, as help() shows it
    assert inspect.iscoroutinefunction(async_method) and not inspect.iscoroutinefunction(sync_method)
    assert inspect.getdoc(sync_method) == inspect.getdoc(async_method) == inspect.getdoc(declared.function)


def test_declarations_agree_with_what_the_operations_take() -> None:
    for name, declared in REGISTRY.items():
        # a per-user operation names a user or a session; an administrative one names neither
        assert declared.per_user == _references_user(declared.function), name
        assert not (declared.read_only and declared.invalidates is not None), f"{name}: reads only, invalidates"
        assert not declared.cached or declared.read_only, f"{name}: cached but not read-only"
    assert set(scoped_methods(ConversationStorage)) == {n for n, d in REGISTRY.items() if d.per_user}
    read_only = {d.name for d in REGISTRY.values() if d.read_only}
    assert {q.rpartition(".")[2] for q in read_only_operations()} == read_only


async def test_async_store_migrates_and_shows_its_pool(astore: AsyncConversationStorage) -> None:
    from psycopg_pool import AsyncConnectionPool

    assert await astore.migrate() == []  # the schema is current
    assert isinstance(astore.pool, AsyncConnectionPool)
    async with astore.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM ltst_migrations")
        row = await cursor.fetchone()
    assert row is not None and row[0] > 0


def test_a_typed_use_of_both_stores_passes_mypy_strict() -> None:
    """The generated methods carry real types: a type checker checks calls and results (and would
    reject ``x: int = store.get_session(...)``)."""
    from pathlib import Path

    from mypy import api

    usage = Path(__file__).parent / "typing" / "usage.py"
    report, errors, status = api.run(["--strict", "--follow-imports=silent", "--no-incremental", str(usage)])
    assert status == 0, report + errors


def test_every_exported_name_is_in_the_api_reference() -> None:
    import re
    from pathlib import Path

    import ltst_memory

    reference = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    headed = set(re.findall(r"^##+ `?([A-Za-z_][A-Za-z0-9_]*)`?", reference, flags=re.M))
    missing = [n for n in ltst_memory.__all__ if n not in headed]
    assert not missing, f"exported but not in docs/api.md: {missing} (run `ltst api-docs`)"
