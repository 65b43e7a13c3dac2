"""What the adapters share: running operations on a sync or async store, and JSON filters in SQL.

No framework is imported here.

Owners. Every adapter acts for one user unless asked otherwise (see :func:`open_runner`): it is given
a user-scoped store (``storage.for_user(user_id)``) or an explicit ``user_id=`` (the store is then
scoped for it), and then reads and writes only that user's rows — in SQL (``user_id = ...``) and, on a
role subject to Row Level Security, through the policies keyed by ``ltst.user_id``. ``unscoped=True``
asks by name for the administrative view: every user's rows, and writes owned by :data:`SHARED_OWNER`.

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
import math
from collections.abc import Callable, Mapping
from typing import Any

from ltst_memory import AsyncConversationStorage, ConversationStorage
from ltst_memory._ops import Op, R
from ltst_memory.errors import ConfigurationError, ValidationError

__all__ = ["SHARED_OWNER", "JsonFilter", "Opaque", "Runner", "open_runner"]

#: Owner of adapter rows written by an unscoped adapter (and of rows of unknown owner from before
#: migration 0010): a blank id, which ``check_id`` refuses, so no user-scoped store ever matches it.
SHARED_OWNER = " "


class Opaque:
    """A payload (document metadata, store values, result rows) that the user-scoped store's argument
    and result checks do not look into: adapter rows are filtered by owner in SQL, and user JSON may
    hold keys such as ``user_id`` or ``session_id`` that name nobody."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Runner:
    """Run adapter operations (generators of ``Query``/``Embed``) on a sync and/or async store."""

    #: The user the adapter acts for; ``None`` for an unscoped adapter (see :func:`open_runner`).
    user_id: str | None = None

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
        return _unwrap(self.sync._run(op(self.sync._core, *args, **kwargs)))

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
                cache.cache_of(getattr(store, "_storage", store)).invalidate([session_id])

    async def arun(self, op: Callable[..., Op[R]], *args: Any, **kwargs: Any) -> R:
        """Run ``op(core, *args, **kwargs)`` on the async store, else on the sync one (calling thread)."""
        if self.async_ is not None:
            return _unwrap(await self.async_._arun(op(self.async_._core, *args, **kwargs)))
        return _unwrap(self.sync._run(op(self.sync._core, *args, **kwargs)))  # type: ignore[union-attr]


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Opaque) else value


def open_runner(
    storage: Any,
    async_storage: Any = None,
    *,
    user_id: str | None = None,
    unscoped: bool = False,
    what: str = "this adapter",
    runner_class: type[Runner] = Runner,
) -> Runner:
    """The runner of an adapter, scoped to one user by default.

    - a user-scoped store (``storage.for_user(u)``): the adapter acts for ``u`` (a different
      ``user_id=`` raises :class:`~ltst_memory.AccessDeniedError`);
    - ``user_id=u`` with an unscoped store: the store is scoped with ``for_user(u)``;
    - ``unscoped=True`` (and no user): every user's rows, the administrative view;
    - neither: :class:`~ltst_memory.errors.ValidationError`, before anything runs.
    """
    from ltst_memory.errors import AccessDeniedError
    from ltst_memory.models import check_id
    from ltst_memory.scoped import AsyncUserScopedStorage, UserScopedStorage

    runner_class(storage, async_storage)  # type checks of the stores
    if not isinstance(unscoped, bool):
        raise ValidationError(f"unscoped must be True or False, got {unscoped!r}")
    stores = [s for s in (storage, async_storage) if s is not None]
    scoped_to = {s.user_id for s in stores if isinstance(s, (UserScopedStorage, AsyncUserScopedStorage))}
    if unscoped:
        if user_id is not None or scoped_to:
            raise ValidationError(f"{what}: unscoped=True cannot be combined with user_id= or a for_user store")
        runner = runner_class(storage, async_storage)
        runner.user_id = None
        return runner
    if len(scoped_to) > 1:
        raise ValidationError(f"{what}: the sync and async stores are scoped to different users")
    if scoped_to:
        owner = scoped_to.pop()
        if user_id is not None and user_id != owner:
            raise AccessDeniedError(f"this store is scoped to user {owner!r}; user_id {user_id!r} is another user")
    elif user_id is not None:
        owner = check_id("user_id", user_id)
    else:
        raise ValidationError(
            f"{what} needs a user: pass a store opened with storage.for_user(user_id), or user_id=..., "
            "or unscoped=True to reach every user's data"
        )
    scoped = [s if isinstance(s, (UserScopedStorage, AsyncUserScopedStorage)) else s.for_user(owner) for s in stores]
    runner = runner_class(scoped[0], scoped[1] if len(scoped) > 1 else None)
    runner.user_id = owner
    return runner


# --------------------------------------------------------------------------- JSON filters

_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$like", "$ilike", "$between", "$exists")
#: Deepest nesting of ``$and``/``$or``/``$not`` and nested fields a filter may have.
MAX_FILTER_DEPTH = 32
#: Most values a filter may hold (``$in`` lists included).
MAX_FILTER_VALUES = 10_000


def _check_json_value(name: str, value: Any, depth: int = 0) -> Any:
    """``value`` if it is JSON that PostgreSQL's ``jsonb`` stores, else :class:`ValidationError`."""
    from ltst_memory.models import check_text

    if depth > MAX_FILTER_DEPTH:
        raise ValidationError(f"{name} is nested deeper than {MAX_FILTER_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(name, value, allow_empty=True)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{name} must be a finite number, got {value!r}")
        return value
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{name}: JSON object keys must be strings, got {key!r}")
            check_text(f"{name} key", key, allow_empty=True)
            _check_json_value(name, item, depth + 1)
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_json_value(name, item, depth + 1)
        return value
    raise ValidationError(f"{name} must be JSON (null, bool, number, string, list, dict), got {type(value).__name__}")


def _number(op: str, value: Any) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise ValidationError(f"{op} takes a number within the range of a double, got {value!r}") from None
    if not math.isfinite(number):
        raise ValidationError(f"{op} takes a finite number, got {value!r}")
    return number


class JsonFilter:
    """Compile a MongoDB-style filter on a ``jsonb`` column into SQL text plus parameters.

    Keys are field names (``"a"``; with ``dotted=True`` ``"a.b"`` is the path ``a`` → ``b``, as in
    langchain-postgres; with ``nested=True`` a nested dict without ``$`` operators matches sub-fields,
    as LangGraph's ``InMemoryStore`` does); values are a literal (JSON equality) or a dict of operators
    ``$eq $ne $gt $gte $lt $lte $in $nin $like $ilike $between $exists``; ``$and``/``$or`` take a list
    of filters and ``$not`` a filter or a list of filters (none of them may match). The SQL contains
    only generated placeholders (``%(f0)s``); user data goes in the parameters. Comparisons of numbers
    are numeric, of strings textual; a value of another type never matches a range operator, nor a
    non-string one ``$like``. Anything else — an unknown operator, a value that is not JSON (NaN, an
    object), a NUL or lone surrogate in a key or value, a number beyond a double for a range, nesting
    deeper than :data:`MAX_FILTER_DEPTH` — raises :class:`ValidationError` before any query runs.
    """

    def __init__(self, column: str, prefix: str = "f", *, nested: bool = False, dotted: bool = False) -> None:
        self._column = column
        self._prefix = prefix
        self._nested = nested
        self._dotted = dotted
        self.params: dict[str, Any] = {}

    def _param(self, value: Any) -> str:
        if len(self.params) >= MAX_FILTER_VALUES:
            raise ValidationError(f"a filter may hold at most {MAX_FILTER_VALUES} values")
        name = f"{self._prefix}{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"

    @staticmethod
    def _text(value: Any) -> str:
        try:
            return json.dumps(_check_json_value("filter value", value), allow_nan=False)
        except RecursionError:
            raise ValidationError(f"filter value is nested deeper than {MAX_FILTER_DEPTH} levels") from None

    def _json(self, value: Any) -> str:
        return self._param(self._text(value)) + "::jsonb"

    def compile(self, filter: Mapping[str, Any] | None) -> str:
        """SQL boolean expression for ``filter`` (``TRUE`` when it is empty)."""
        if filter is None:
            return "TRUE"
        if not isinstance(filter, Mapping):
            raise ValidationError(f"a filter must be a dict, got {type(filter).__name__}")
        if not filter:
            return "TRUE"
        return self._all(filter, [], 0)

    def _all(self, filter: Mapping[str, Any], path: list[str], depth: int) -> str:
        if depth > MAX_FILTER_DEPTH:
            raise ValidationError(f"a filter may be nested at most {MAX_FILTER_DEPTH} levels deep")
        parts = [self._one(key, value, path, depth) for key, value in filter.items()]
        return "(" + " AND ".join(parts) + ")" if parts else "TRUE"

    def _one(self, key: str, value: Any, path: list[str], depth: int) -> str:
        from ltst_memory.models import check_text

        if not isinstance(key, str):
            raise ValidationError(f"filter keys must be strings, got {key!r}")
        check_text("filter key", key)
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ValidationError(f"{key} takes a non-empty list of filters")
            joiner = " AND " if key == "$and" else " OR "
            return "(" + joiner.join(self._all(_mapping(v), path, depth + 1) for v in value) + ")"
        if key == "$not":
            if isinstance(value, list):
                if not value:
                    raise ValidationError("$not takes a filter or a non-empty list of filters")
                return "(" + " AND ".join(f"(NOT {self._all(_mapping(v), path, depth + 1)})" for v in value) + ")"
            return f"(NOT {self._all(_mapping(value), path, depth + 1)})"
        if key.startswith("$"):
            raise ValidationError(f"unknown filter operator {key!r}")
        field = [*path, *(key.split(".") if self._dotted else [key])]
        if self._dotted and not all(field):
            raise ValidationError(f"filter key {key!r} has an empty part between dots")
        if isinstance(value, Mapping) and value and all(isinstance(k, str) and k.startswith("$") for k in value):
            return "(" + " AND ".join(self._operator(field, op, arg) for op, arg in value.items()) + ")"
        if isinstance(value, Mapping) and self._nested and value:
            return self._all(value, field, depth + 1)
        return self._operator(field, "$eq", value)

    def _operator(self, field: list[str], op: str, arg: Any) -> str:
        target = f"({self._column} #> {self._param(field)}::text[])"
        text = f"({self._column} #>> {self._param(field)}::text[])"
        if op == "$eq":
            if arg is None or isinstance(arg, (str, int, float, bool)):  # containment: served by the GIN index
                document: Any = _check_json_value("filter value", arg)
                for name in reversed(field):
                    document = {name: document}
                return f"{self._column} @> {self._json(document)}"
            return f"{target} = {self._json(arg)}"
        if op == "$ne":
            return f"{target} IS DISTINCT FROM {self._json(arg)}"
        if op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple)):
                raise ValidationError(f"{op} takes a list")
            values = [self._text(v) for v in arg]
            test = f"{target} = ANY({self._param(values)}::jsonb[])"
            return test if op == "$in" else f"NOT coalesce({test}, false)"
        if op == "$exists":
            if not isinstance(arg, bool):
                raise ValidationError(f"$exists takes true or false, got {arg!r}")
            return f"({target} IS NOT NULL) = {self._param(arg)}"
        if op in ("$like", "$ilike"):
            if not isinstance(arg, str):
                raise ValidationError(f"{op} takes a string pattern, got {arg!r}")
            _check_json_value("filter value", arg)
            sign = "LIKE" if op == "$like" else "ILIKE"
            return f"(jsonb_typeof({target}) = 'string' AND {text} {sign} {self._param(arg)}::text)"
        if op == "$between":
            if not isinstance(arg, (list, tuple)) or len(arg) != 2:
                raise ValidationError(f"$between takes a list of two values [low, high], got {arg!r}")
            return "(" + self._compare(field, ">=", op, arg[0]) + " AND " + self._compare(field, "<=", op, arg[1]) + ")"
        if op in _COMPARE:
            return self._compare(field, _COMPARE[op], op, arg)
        raise ValidationError(f"unknown filter operator {op!r}; the operators are {', '.join(_OPERATORS)}")

    def _compare(self, field: list[str], sign: str, op: str, arg: Any) -> str:
        target = f"({self._column} #> {self._param(field)}::text[])"
        text = f"({self._column} #>> {self._param(field)}::text[])"
        if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
            raise ValidationError(f"{op} takes a number or a string, got {arg!r}")
        if isinstance(arg, str):
            _check_json_value("filter value", arg)
            return f"(jsonb_typeof({target}) = 'string' AND {text} {sign} {self._param(arg)}::text)"
        return f"(jsonb_typeof({target}) = 'number' AND {text}::float8 {sign} {self._param(_number(op, arg))})"


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a filter dict, got {type(value).__name__}")
    return value
