"""User-scoped stores: ``storage.for_user(user_id)`` can read and write that user's data only.

A scoped store is not a second implementation of the API. It runs the operation methods of the store
it was opened from (the generator operations of :mod:`ltst_memory._ops` and of the modules bound the
same way: bulk import, recall, rehydration, ...) with

1. a copy of the store's :class:`~ltst_memory._ops.Core` whose ``scope_user`` is the user: every
   operation that filters by user takes its filter from it (:func:`ltst_memory._ops.scoped_user`), so
   the filter is part of the SQL — ``scope="all"`` and unscoped searches mean this user's rows, and
   another user's rows never reach the ranking (no yes/no oracle through errors or scores);
2. one wrapper, :func:`scoped_operation`, which before anything runs fills in / checks every
   ``user_id`` argument (omitted or ``None`` becomes the scoped user, any other user's id raises
   :class:`~ltst_memory.AccessDeniedError` before any query), and before the operation's first
   statement in each transaction sets the transaction-local ``ltst.user_id`` (the key of the Row Level
   Security policies of ``schema/0005_security.sql``) and checks in SQL, by that same user key, that no
   session the arguments name (``session_id`` / ``*_session_id`` parameters and the fields of data-class
   arguments) belongs to another user — such a session raises :class:`~ltst_memory.AccessDeniedError`,
   a missing one is left to the operation (``SessionNotFoundError``).

Results are not inspected after the fact: what an operation returns is what its SQL selected for the
user. Operations that take no user or session reference at all (``cleanup_expired_data``, statistics,
embedding workers, analytics export, key rotation) are administrative and are not exposed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import numpy as np

from ._kernel import REGISTRY, Call, Commit, Embed, Op, Parallel, Pending, Query
from .errors import AccessDeniedError, ValidationError
from .models import check_id

__all__ = ["AsyncUserScopedStorage", "UserScopedStorage", "for_user", "scope_generator", "scoped_operation"]

logger = logging.getLogger(__name__)

#: Sets the user of the current transaction (read by the RLS policies of schema/0005_security.sql).
SET_SCOPE_USER = "SELECT set_config('ltst.user_id', %(user_id)s, true)"


def set_scope_user(user_id: str, distributed: bool, *, alone: bool = False) -> Query:
    """The query that names ``user_id`` as the current transaction's user (the RLS key ``ltst.user_id``).

    On one server ``set_config(..., true)``. On a Citus cluster (``distributed``) ``SET LOCAL``, which
    Citus sends on to the workers (with ``citus.propagate_set_commands = 'local'``, set by ``ltst
    citus-prepare``); ``set_config`` is not sent on. ``SET`` takes no parameter: the value is
    dollar-quoted with a tag it does not contain."""
    if not distributed:
        return Query(SET_SCOPE_USER, {"user_id": user_id}, fetch="none", local=True, alone=alone)
    tag = "$ltst$"
    while tag in user_id or tag[:-1] in user_id:
        tag = f"$ltst{len(tag)}$"
    return Query(f"SET LOCAL ltst.user_id TO {tag}{user_id}{tag}", None, fetch="none", local=True, alone=alone)


#: The sessions among ``session_ids`` that belong to a user other than ``user_id`` (the RLS key).
SELECT_FOREIGN_SESSIONS = """
SELECT session_id FROM conversation_sessions
WHERE session_id = ANY(%(session_ids)s::text[]) AND user_id <> %(user_id)s
ORDER BY session_id LIMIT 1
"""
#: On a Citus cluster: which of ``session_ids`` are the user's (one shard answers). Session ids are
#: unique across users there too (``_ops.insert_session``), so an own session is no other user's.
SELECT_OWN_SESSIONS = """
SELECT session_id FROM conversation_sessions
WHERE user_id = %(user_id)s AND session_id = ANY(%(session_ids)s::text[])
"""

#: Data classes whose instances, passed as arguments, reference a user or a session.
_SCOPED_TYPES = ("ConversationSession", "ConversationMessage", "ConversationContext", "UserPreference",
                 "SessionRelationship")  # fmt: skip
_ROW_TYPES = frozenset(_SCOPED_TYPES)
_SESSION_FIELDS = ("session_id", "source_session_id", "target_session_id")
_MAX_DEPTH = 6


# --------------------------------------------------------------------------- what an argument / result names


def _is_session_name(name: str) -> bool:
    return name == "session_id" or name.endswith("_session_id") or name in ("session_ids",)


def _usable_id(value: object) -> bool:
    try:
        check_id("id", value)
    except ValidationError:
        return False
    return True


def _collect(value: Any, users: set[str], sessions: set[str], depth: int = 0) -> None:
    """Collect user ids and session ids named by ``value`` (data classes, mappings, sequences)."""
    if depth > _MAX_DEPTH or value is None or isinstance(value, (str, bytes, int, float, bool)):
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        user = getattr(value, "user_id", None)
        if isinstance(user, str):
            users.add(user)
        for name in _SESSION_FIELDS:
            session = getattr(value, name, None)
            if isinstance(session, str) and _usable_id(session):
                sessions.add(session)
        if type(value).__name__ in _ROW_TYPES:
            return  # a plain row: nothing nested but metadata and vectors
        for f in dataclasses.fields(value):
            if f.name not in ("metadata", "embedding", "user_id", *_SESSION_FIELDS):
                _collect(getattr(value, f.name), users, sessions, depth + 1)
        return
    if isinstance(value, Mapping):
        user = value.get("user_id")
        if isinstance(user, str):
            users.add(user)
        for key, item in value.items():
            if isinstance(key, str) and _is_session_name(key) and isinstance(item, str) and _usable_id(item):
                sessions.add(item)
            elif key not in ("metadata", "embedding", "user_id"):
                _collect(item, users, sessions, depth + 1)
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if items and isinstance(items[0], (int, float)) and not isinstance(items[0], bool):
            return  # a vector
        for item in items:
            _collect(item, users, sessions, depth + 1)


def _argument_references(arguments: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    users: set[str] = set()
    sessions: set[str] = set()
    for name, value in arguments.items():
        if name == "user_id":
            if isinstance(value, str):
                users.add(value)
        elif _is_session_name(name):
            if isinstance(value, str):
                if _usable_id(value):
                    sessions.add(value)
            elif isinstance(value, (list, tuple, set, frozenset)):
                sessions.update(v for v in value if isinstance(v, str) and _usable_id(v))
        elif (
            isinstance(value, (list, tuple))
            or dataclasses.is_dataclass(value)
            or (isinstance(value, Mapping) and name != "metadata")  # e.g. rehydrate(recall_options={...})
        ):
            _collect(value, users, sessions)
        # lazy iterables (bulk import) are checked batch by batch as the operation consumes them
    return users, sessions


# --------------------------------------------------------------------------- the wrapper


def _deny(user_id: str, what: str) -> AccessDeniedError:
    return AccessDeniedError(f"this store is scoped to user {user_id!r}; {what} belongs to another user")


def _check_sessions(user_id: str, session_ids: set[str], routed: bool = False) -> Op[None]:
    """Raise AccessDeniedError if one of ``session_ids`` belongs to another user (decided in SQL).

    ``routed`` (a Citus cluster): the user's own sessions are found first by a statement that names the
    user (one shard); only the others, if any, are looked for among every user's (every shard)."""
    if routed:
        own = yield Query(SELECT_OWN_SESSIONS, {"session_ids": sorted(session_ids), "user_id": user_id}, alone=True)
        session_ids = session_ids - {r["session_id"] for r in own}
        if not session_ids:
            return
    rows = yield Query(SELECT_FOREIGN_SESSIONS, {"session_ids": sorted(session_ids), "user_id": user_id}, alone=True)
    if rows:
        raise _deny(user_id, f"session {rows[0]['session_id']!r}")


@functools.cache
def _signature_of(op: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(op)


def scoped_operation(op: Callable[..., Op[Any]], user_id: str, origin: Any = None) -> Callable[..., Op[Any]]:
    """``op`` restricted to ``user_id`` (see the module docstring); same arguments, same result.

    ``origin`` is the unscoped store's core: where whether the tables are distributed is looked up
    once (on a Citus cluster the owner slot of each statement that names a session is filled with the
    user: see :func:`_drive`)."""
    signature = _signature_of(op)
    has_user_parameter = "user_id" in signature.parameters

    def wrapped(core: Any, *args: Any, **kwargs: Any) -> Op[Any]:
        bound = signature.bind_partial(core, *args, **kwargs)
        if has_user_parameter and bound.arguments.get("user_id") is None:
            bound.arguments["user_id"] = user_id
        arguments = {k: v for k, v in bound.arguments.items() if k != "core"}
        return (yield from _drive(op(*bound.args, **bound.kwargs), arguments, user_id, origin))

    return wrapped


def _drive(inner: Op[Any], arguments: Mapping[str, Any], user_id: str, origin: Any = None) -> Op[Any]:
    """Run operation generator ``inner`` (called with ``arguments``) within the scope of ``user_id``.

    On a Citus cluster (``origin``, the unscoped store's core, says whether its tables are distributed)
    every statement that names a session has its owner slot (``ltst_memory._queries.owner``) filled with
    the user: one shard answers it. (Every session an operation names is the user's or does not exist:
    checked before its first statement.)"""
    users, sessions = _argument_references(arguments)
    distributed: bool | None = None if origin is not None else False
    for other in sorted(users - {user_id}):
        raise _deny(user_id, f"user_id {other!r}")
    lazies = [v for v in arguments.values() if isinstance(v, _Recording)]
    in_transaction = False
    checked: set[str] = set()
    result: Any = None
    while True:
        try:
            instruction = inner.send(result)
        except StopIteration as stop:
            return stop.value
        if not isinstance(instruction, (Embed, Call, Pending)):
            if distributed is None:
                distributed = yield from _is_distributed(origin)
            if not in_transaction:
                in_transaction = True
                yield set_scope_user(user_id, bool(distributed), alone=True)
            pending = (sessions | _drain(user_id, lazies)) - checked
            if pending:
                yield from _check_sessions(user_id, pending, routed=distributed)
                checked |= pending
            if type(instruction).__name__ == "Commit":  # multi-transaction operations (bulk import)
                in_transaction = False
            elif isinstance(instruction, Parallel):  # bulk import's workers, each on its own connection
                yield Commit()  # the checks above ran in a transaction of their own
                in_transaction = False
                instruction = Parallel(tuple(_drive(op, {}, user_id, origin) for op in instruction.ops))
            elif distributed and isinstance(instruction, Query):
                instruction = _with_owner(instruction, user_id)
        result = yield instruction


def _is_distributed(core: Any) -> Op[bool]:
    from ._ops import is_distributed  # (a cycle at import time)

    return (yield from is_distributed(core))


def _with_owner(query: Query, user_id: str) -> Query:
    from ._ops import with_owner  # (a cycle at import time)

    return with_owner(query, user_id)


def scope_generator(generator: Op[Any], user_id: str, origin: Any = None) -> Op[Any]:
    """An operation generator that was already called (as adapters do: ``store._run(op(core, ...))``),
    restricted to ``user_id``. Its arguments are read from the generator before it starts. Stricter than
    :func:`scoped_operation`, which can fill in arguments: a ``user_id`` argument left ``None`` is refused,
    and so is an operation that names no user or session at all (it would act on every user)."""
    if not inspect.isgenerator(generator) or inspect.getgeneratorstate(generator) != inspect.GEN_CREATED:
        raise AccessDeniedError("a user-scoped store runs only operation generators that have not started yet")
    frame = generator.gi_frame
    if frame is None:  # a generator that has finished
        raise AccessDeniedError("a user-scoped store runs only operation generators that have not started yet")
    code = generator.gi_code
    count = code.co_argcount + code.co_kwonlyargcount
    names = code.co_varnames[: count + bool(code.co_flags & inspect.CO_VARARGS)]
    arguments = {n: frame.f_locals[n] for n in names if n != "core" and n in frame.f_locals}
    if "user_id" in arguments and arguments["user_id"] is None:
        raise AccessDeniedError(f"{code.co_name} was called without user_id on a user-scoped store; pass user_id")
    users, sessions = _argument_references(arguments)
    if not users and not sessions and not any(n == "user_id" or _is_session_name(n) for n in arguments):
        raise AccessDeniedError(f"{code.co_name} names no user or session: not available on a user-scoped store")
    return _drive(cast("Op[Any]", generator), arguments, user_id, origin)


def _drain(user_id: str, lazies: list[_Recording]) -> set[str]:
    """Sessions named by the items lazy iterables (generators handed to bulk import) yielded so far.

    Such iterables cannot be inspected up front without consuming them; an operation consumes a
    batch before its first statement on it, so the batch is checked at that statement, inside the
    transaction that writes it.
    """
    users: set[str] = set()
    sessions: set[str] = set()
    for lazy in lazies:
        _collect(lazy.drain(), users, sessions)
    for other in sorted(users - {user_id}):
        raise _deny(user_id, f"user_id {other!r}")
    return sessions


class _Recording:
    """Wraps a lazy iterable and remembers the items consumed since the last :meth:`drain`."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterator = iter(iterable)
        self._seen: list[Any] = []

    def __iter__(self) -> _Recording:
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        self._seen.append(item)
        return item

    def drain(self) -> list[Any]:
        seen, self._seen = self._seen, []
        return seen


# --------------------------------------------------------------------------- discovering operations


def _references_user(op: Callable[..., Any]) -> bool:
    for name, parameter in list(inspect.signature(op).parameters.items())[1:]:
        if name == "user_id" or _is_session_name(name):
            return True
        if any(t in str(parameter.annotation) for t in _SCOPED_TYPES):
            return True
    return False


def scoped_methods(storage_cls: type) -> dict[str, tuple[Any, Callable[..., Op[Any]]]]:
    """``{name: (method, operation)}`` of the operations a scoped store of ``storage_cls`` exposes: those
    declared ``per_user`` (ltst_memory/_kernel.py)."""
    return {d.name: (getattr(storage_cls, d.name), d.function) for d in REGISTRY.values() if d.per_user}


# --------------------------------------------------------------------------- the scoped stores


class _ScopedBase:
    _is_async = False

    def __init__(self, storage: Any, user_id: str) -> None:
        self._storage = storage
        self._user_id = check_id("user_id", user_id)
        self._scoped_core = dataclasses.replace(storage._core, scope_user=self._user_id)

    def _invoke(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the declared operation ``name`` through the store, restricted to this user: on the
        scoped core, through :func:`scoped_operation`, never answered from the cache (a write still
        invalidates it)."""
        declared = REGISTRY[name]
        function = scoped_operation(declared.function, self._user_id, self._storage._core)
        return self._storage._invoke(
            declared, self._scoped_core, _record(args), _record_kwargs(kwargs), function=function, cached=False
        )

    @property
    def user_id(self) -> str:
        """The user this store is restricted to."""
        return self._user_id

    @property
    def embedder(self) -> Any:
        """The embedder of the underlying store."""
        return self._storage.embedder

    @property
    def _core(self) -> Any:
        """The store's core with ``scope_user`` set: operations run on it filter by this user."""
        return self._scoped_core

    def _run(self, op: Op[Any]) -> Any:
        """Run an operation generator (as adapters do) within this user's scope: see :func:`scope_generator`."""
        return self._storage._run(scope_generator(op, self._user_id, self._storage._core))

    async def _arun(self, op: Op[Any]) -> Any:
        return await self._storage._arun(scope_generator(op, self._user_id, self._storage._core))

    @property
    def closed(self) -> bool:
        """Whether the underlying store is closed."""
        return bool(self._storage.closed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} user_id={self._user_id!r} on {self._storage.dsn}>"

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(self._storage, name):
            raise AttributeError(
                f"{name!r} is not available on a user-scoped store (it is administrative or names no "
                "user); call it on the unscoped store"
            )
        raise AttributeError(name)


class UserScopedStorage(_ScopedBase):
    """A :class:`~ltst_memory.ConversationStorage` restricted to one user (``storage.for_user(id)``).

    It has every per-user method of the store — sessions, messages, search, context, preferences,
    relationships, and the methods other modules add the same way — with the same signatures; a
    ``user_id`` argument defaults to the scoped user. Another user's id or session raises
    :class:`~ltst_memory.AccessDeniedError` and returns no data.
    """


class AsyncUserScopedStorage(_ScopedBase):
    """The asyncio twin of :class:`UserScopedStorage` (``async_storage.for_user(id)``)."""

    _is_async = True


def _make_method(name: str, method: Any, is_async: bool) -> Any:
    if is_async:

        async def scoped_async(self: _ScopedBase, *args: Any, **kwargs: Any) -> Any:
            return await self._invoke(name, args, kwargs)

        function: Any = scoped_async
    else:

        def scoped_sync(self: _ScopedBase, *args: Any, **kwargs: Any) -> Any:
            return self._invoke(name, args, kwargs)

        function = scoped_sync
    function.__name__ = function.__qualname__ = name
    function.__doc__ = method.__doc__
    function.__signature__ = _scoped_signature(method)
    return function


def _record(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_wrap_lazy(a) for a in args)


def _record_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: _wrap_lazy(v) for k, v in kwargs.items()}


def _wrap_lazy(value: Any) -> Any:
    """Lazy iterables (generators, deques, ...) are recorded so their items can be checked as consumed."""
    if isinstance(value, (str, bytes, bytearray, Mapping, list, tuple, set, frozenset, np.ndarray)):
        return value
    if dataclasses.is_dataclass(value) or not isinstance(value, Iterable):
        return value
    return _Recording(value)


def _scoped_signature(method: Any) -> inspect.Signature:
    signature = inspect.signature(method)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == "user_id" and parameter.default is inspect.Parameter.empty:
            later = list(signature.parameters.values())[len(parameters) + 1 :]
            if all(p.default is not inspect.Parameter.empty or p.kind is p.VAR_KEYWORD for p in later):
                parameter = parameter.replace(default=None)
        parameters.append(parameter)
    return signature.replace(parameters=parameters)


@functools.cache
def _scoped_class(storage_cls: type, is_async: bool) -> type:
    base = AsyncUserScopedStorage if is_async else UserScopedStorage
    namespace = {name: _make_method(name, m, is_async) for name, (m, _) in scoped_methods(storage_cls).items()}
    namespace["__doc__"] = base.__doc__
    namespace["__module__"] = __name__
    return type(base.__name__, (base,), namespace)


def for_user(self: Any, user_id: str) -> UserScopedStorage | AsyncUserScopedStorage:
    """A view of this store restricted to ``user_id``: same per-user methods, same signatures; any
    other user's id or session raises :class:`~ltst_memory.AccessDeniedError` and returns no data.
    Each transaction sets ``ltst.user_id`` for the Row Level Security policies (docs/security.md)."""
    is_async = hasattr(self, "_arun")
    scoped: UserScopedStorage | AsyncUserScopedStorage = _scoped_class(cast(type, type(self)), is_async)(self, user_id)
    return scoped
