"""What the adapters share: running operations on a sync or async store, and JSON filters in SQL.

No framework is imported here.

Sync and async. Every adapter takes a :class:`~ltst_memory.ConversationStorage` or an
:class:`~ltst_memory.AsyncConversationStorage` as its first argument (and optionally the other kind
as ``async_storage=`` / ``storage=``):

- sync methods run on the sync store; with only an async store they raise ConfigurationError
  (a sync call cannot wait for the event loop it is called from);
- async methods run on the async store when there is one (real asyncio I/O, no thread pool); with
  only a sync store they run the sync path directly on the calling thread — one short transaction,
  no hidden thread pool — which blocks the event loop for its duration. Pass an async store for
  servers that must never block.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ltst_memory import AsyncConversationStorage, ConversationStorage
from ltst_memory._ops import Op, R
from ltst_memory.errors import ConfigurationError, ValidationError

__all__ = ["JsonFilter", "Runner"]


class Runner:
    """Run adapter operations (generators of ``Query``/``Embed``) on a sync and/or async store."""

    def __init__(self, storage: Any, async_storage: Any = None) -> None:
        from ltst_memory.scoped import AsyncUserScopedStorage, UserScopedStorage

        if isinstance(storage, (AsyncConversationStorage, AsyncUserScopedStorage)):
            if async_storage is not None:
                raise ConfigurationError("pass the AsyncConversationStorage once (as the first argument)")
            self.sync: ConversationStorage | None = None
            self.async_: AsyncConversationStorage | None = storage
        elif isinstance(storage, (ConversationStorage, UserScopedStorage)):
            if async_storage is not None and not isinstance(
                async_storage, (AsyncConversationStorage, AsyncUserScopedStorage)
            ):
                raise ConfigurationError("async_storage must be an AsyncConversationStorage")
            self.sync = storage
            self.async_ = async_storage
        else:
            raise ConfigurationError(
                f"expected a ConversationStorage or AsyncConversationStorage, got {type(storage).__name__}"
            )

    @property
    def embedder(self) -> Any:
        """The embedder of the store (sync one first)."""
        return (self.sync or self.async_).embedder  # type: ignore[union-attr]

    def run(self, op: Callable[..., Op[R]], *args: Any, **kwargs: Any) -> R:
        """Run ``op(core, *args, **kwargs)`` on the sync store, in one transaction."""
        if self.sync is None:
            raise ConfigurationError(
                "this adapter was given only an AsyncConversationStorage: use the async methods "
                "(a*), or pass a ConversationStorage as well"
            )
        return self.sync._run(op(self.sync._core, *args, **kwargs))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the sync store's public ``method`` (so its cache bookkeeping applies)."""
        if self.sync is None:
            raise ConfigurationError("this adapter was given only an AsyncConversationStorage: use the a* methods")
        return getattr(self.sync, method)(*args, **kwargs)

    async def acall(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the async store's public ``method``, else the sync store's on the calling thread."""
        if self.async_ is not None:
            return await getattr(self.async_, method)(*args, **kwargs)
        return getattr(self.sync, method)(*args, **kwargs)

    def invalidate(self, session_id: str) -> None:
        """Drop cached answers about ``session_id`` after an adapter operation changed it."""
        from ltst_memory import cache

        for store in (self.sync, self.async_):
            if store is not None:
                cache.cache_of(store).invalidate([session_id])

    async def arun(self, op: Callable[..., Op[R]], *args: Any, **kwargs: Any) -> R:
        """Run ``op(core, *args, **kwargs)`` on the async store, else on the sync one (calling thread)."""
        if self.async_ is not None:
            return await self.async_._arun(op(self.async_._core, *args, **kwargs))
        return self.sync._run(op(self.sync._core, *args, **kwargs))  # type: ignore[union-attr]


# --------------------------------------------------------------------------- JSON filters

_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class JsonFilter:
    """Compile a MongoDB-style filter on a ``jsonb`` column into SQL text plus parameters.

    Keys are field names (``"a"``; with ``nested=True`` a nested dict without ``$`` operators matches
    sub-fields, as LangGraph's ``InMemoryStore`` does); values are a literal (equality) or a dict of
    operators ``$eq $ne $gt $gte $lt $lte $in $nin $exists``; ``$and``/``$or`` take a list of filters and
    ``$not`` a filter. The SQL contains only generated placeholders (``%(f0)s``); user data goes in
    the parameters. Comparisons of numbers are numeric, of strings textual; a value of another type
    never matches a range operator.
    """

    def __init__(self, column: str, prefix: str = "f", *, nested: bool = False) -> None:
        self._column = column
        self._prefix = prefix
        self._nested = nested
        self.params: dict[str, Any] = {}

    def _param(self, value: Any) -> str:
        name = f"{self._prefix}{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    def _json(self, value: Any) -> str:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"filter value {value!r} is not JSON: {exc}") from None
        return self._param(text) + "::jsonb"

    def compile(self, filter: Mapping[str, Any] | None) -> str:
        """SQL boolean expression for ``filter`` (``TRUE`` when it is empty)."""
        if not filter:
            return "TRUE"
        if not isinstance(filter, Mapping):
            raise ValidationError(f"a filter must be a dict, got {type(filter).__name__}")
        return self._all(filter, [])

    def _all(self, filter: Mapping[str, Any], path: list[str]) -> str:
        parts = [self._one(key, value, path) for key, value in filter.items()]
        return "(" + " AND ".join(parts) + ")" if parts else "TRUE"

    def _one(self, key: str, value: Any, path: list[str]) -> str:
        if not isinstance(key, str):
            raise ValidationError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ValidationError(f"{key} takes a non-empty list of filters")
            joiner = " AND " if key == "$and" else " OR "
            return "(" + joiner.join(self._all(_mapping(v), path) for v in value) + ")"
        if key == "$not":
            return f"(NOT {self._all(_mapping(value), path)})"
        if key.startswith("$"):
            raise ValidationError(f"unknown filter operator {key!r}")
        field = [*path, key]
        if isinstance(value, Mapping) and value and all(isinstance(k, str) and k.startswith("$") for k in value):
            return "(" + " AND ".join(self._operator(field, op, arg) for op, arg in value.items()) + ")"
        if isinstance(value, Mapping) and self._nested:
            return self._all(value, field)
        return self._operator(field, "$eq", value)

    def _operator(self, field: list[str], op: str, arg: Any) -> str:
        target = f"({self._column} #> {self._param(field)}::text[])"
        text = f"({self._column} #>> {self._param(field)}::text[])"
        if op == "$eq":
            if arg is None or isinstance(arg, (str, int, float, bool)):  # containment: served by the GIN index
                document: Any = arg
                for name in reversed(field):
                    document = {name: document}
                return f"{self._column} @> {self._json(document)}"
            return f"{target} = {self._json(arg)}"
        if op == "$ne":
            return f"{target} IS DISTINCT FROM {self._json(arg)}"
        if op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple)):
                raise ValidationError(f"{op} takes a list")
            values = [json.dumps(v, allow_nan=False) for v in arg]
            test = f"{target} = ANY({self._param(values)}::jsonb[])"
            return test if op == "$in" else f"NOT coalesce({test}, false)"
        if op == "$exists":
            return f"({target} IS NOT NULL) = {self._param(bool(arg))}"
        if op in _COMPARE:
            sign = _COMPARE[op]
            if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
                raise ValidationError(f"{op} takes a number or a string, got {arg!r}")
            if isinstance(arg, str):
                return f"(jsonb_typeof({target}) = 'string' AND {text} {sign} {self._param(arg)}::text)"
            return f"(jsonb_typeof({target}) = 'number' AND {text}::float8 {sign} {self._param(float(arg))})"
        raise ValidationError(f"unknown filter operator {op!r}")


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a filter dict, got {type(value).__name__}")
    return value
