"""What the sync and async stores share: settings resolution, binding operations to methods,
and turning an instruction's cursor into its result."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._ops import Core, Op, Query
from .config import Settings
from .embeddings import Embedder, default_embedder
from .errors import ConfigurationError, StoreClosedError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def resolve_settings(
    dsn: str | None,
    data_dir: str | Path | None,
    settings: Settings | None,
    overrides: dict[str, Any],
) -> Settings:
    """Explicit arguments > ``settings`` > environment > defaults."""
    if dsn is not None and not isinstance(dsn, str):
        raise ConfigurationError(f"dsn must be a string, got {type(dsn).__name__}")
    if settings is None:
        return Settings.from_env(dsn=dsn, data_dir=data_dir, **overrides)
    given = {k: v for k, v in {"dsn": dsn, "data_dir": data_dir, **overrides}.items() if v is not None}
    from dataclasses import replace

    return replace(settings, **given) if given else settings


def make_core(settings: Settings, embedder: Embedder | None) -> Core:
    if embedder is None:
        embedder = default_embedder(settings.embedding_model)
    for attribute in ("embed", "dimension", "model_name"):
        if not hasattr(embedder, attribute):
            raise ConfigurationError(f"embedder {embedder!r} has no {attribute!r}; see ltst_memory.Embedder")
    return Core(settings=settings, embedder=embedder)


def describe(query: Query) -> str:
    first = query.sql.strip().splitlines()[0] if query.sql.strip() else ""
    return first[:80] + (f" x{len(query.many)}" if query.many is not None else "")


def result_of(cursor: Any, query: Query) -> Any:
    """The value an operation receives for ``query`` once ``cursor`` has run it (non-``many`` case)."""
    if query.fetch == "all":
        return cursor.fetchall()
    if query.fetch == "one":
        return cursor.fetchone()
    if query.fetch == "rowcount":
        return cursor.rowcount
    return None


def _signature(op: Callable[..., Any], returns: Any) -> inspect.Signature:
    sig = inspect.signature(op)
    params = list(sig.parameters.values())[1:]  # drop `core`
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sig.replace(parameters=[self_param, *params], return_annotation=returns)


def sync_method(op: Callable[Concatenate[Core, P], Op[R]]) -> Callable[Concatenate[Any, P], R]:
    """Bind operation ``op`` as a method of a sync store (which provides ``_run``)."""

    @functools.wraps(op)
    def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(op(self._core, *args, **kwargs))  # type: ignore[no-any-return]

    method.__signature__ = _signature(op, inspect.signature(op).return_annotation)  # type: ignore[attr-defined]
    del method.__wrapped__  # type: ignore[attr-defined]
    return method


def async_method(op: Callable[Concatenate[Core, P], Op[R]]) -> Callable[Concatenate[Any, P], Any]:
    """Bind operation ``op`` as a coroutine method of an async store (which provides ``_arun``)."""

    @functools.wraps(op)
    async def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._arun(op(self._core, *args, **kwargs))  # type: ignore[no-any-return]

    method.__signature__ = _signature(op, inspect.signature(op).return_annotation)  # type: ignore[attr-defined]
    del method.__wrapped__  # type: ignore[attr-defined]
    return method


def check_open(closed: bool) -> None:
    if closed:
        raise StoreClosedError("this store is closed; open a new ConversationStorage")
