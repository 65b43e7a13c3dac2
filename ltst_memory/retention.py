"""Retention policies and their enforcement: ``cleanup_expired_data`` and a background sweeper.

A policy says how long a user's data is kept, per user and per session type:

* ``message_days``: messages older than that many days (by ``timestamp``) are deleted;
* ``context_days``: context entries not updated for that many days are deleted;
* context entries past their own ``expires_at`` are always deleted (and never returned before).

``None`` means "keep forever". The most specific policy matching a session wins: (user, type) >
(user, any type) > (any user, type) > (any user, any type); with no matching policy nothing is
deleted but expired context. Policies live in ``ltst_retention_policies`` (schema/0005_security.sql).

Enforcement happens when ``cleanup_expired_data()`` runs — call it from cron, or run a
:class:`RetentionSweeper` (sync store, thread) / :class:`AsyncRetentionSweeper` (async store, task).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._kernel import EVERY_SESSION, MAINTENANCE, MORE, Core, Op, Query, operation
from .errors import LTSTError, StoreClosedError, ValidationError
from .models import check_id

__all__ = [
    "AsyncRetentionSweeper",
    "RetentionPolicy",
    "RetentionSweeper",
    "cleanup_expired_data",
    "delete_retention_policy",
    "get_retention_policies",
    "set_retention_policy",
]

logger = logging.getLogger(__name__)

ANY = ""  # stored for "any user" / "any session type"


@dataclass
class RetentionPolicy:
    """How long data of ``user_id`` (``None``: every user) in sessions of ``session_type`` (``None``: every
    type) is kept. ``None`` days keep forever."""

    user_id: str | None = None
    session_type: str | None = None
    message_days: int | None = None
    context_days: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --------------------------------------------------------------------------- SQL

UPSERT_POLICY = """
INSERT INTO ltst_retention_policies (user_id, session_type, message_days, context_days, updated_at)
VALUES (%(user_id)s, %(session_type)s, %(message_days)s, %(context_days)s, now())
ON CONFLICT (user_id, session_type) DO UPDATE SET
    message_days = EXCLUDED.message_days, context_days = EXCLUDED.context_days, updated_at = EXCLUDED.updated_at
RETURNING user_id, session_type, message_days, context_days, created_at, updated_at
"""
DELETE_POLICY = "DELETE FROM ltst_retention_policies WHERE user_id = %(user_id)s AND session_type = %(session_type)s"
SELECT_POLICIES = """
SELECT user_id, session_type, message_days, context_days, created_at, updated_at FROM ltst_retention_policies
ORDER BY user_id, session_type
"""
SELECT_USER_POLICIES = """
SELECT user_id, session_type, message_days, context_days, created_at, updated_at FROM ltst_retention_policies
WHERE user_id = %(user_id)s ORDER BY session_type
"""

#: Retention over every user, by a SECURITY DEFINER function of schema/0009_owned_tables.sql: the same
#: sweep on the tables' owner and on a role under Row Level Security (which sees no row by itself).
CLEANUP_EXPIRED_DATA = "SELECT context, messages FROM ltst_cleanup_expired_data()"


def _policy_from_row(row: dict[str, Any]) -> RetentionPolicy:
    return RetentionPolicy(
        user_id=row["user_id"] or None,
        session_type=row["session_type"] or None,
        message_days=row["message_days"],
        context_days=row["context_days"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _days(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ValidationError(f"{name} must be a whole number of days between 0 and 1,000,000, or None")
    return value


# --------------------------------------------------------------------------- operations


@operation(group=MORE)
def set_retention_policy(
    core: Core,
    *,
    user_id: str | None = None,
    session_type: str | None = None,
    message_days: int | None = None,
    context_days: int | None = None,
) -> Op[RetentionPolicy]:
    """Set (insert or replace) the retention policy of ``user_id`` / ``session_type`` (``None``: any).

    ``message_days`` / ``context_days`` of ``None`` keep that data forever (overriding a more general
    policy). Applied by the next :func:`cleanup_expired_data`.
    """
    params = {
        "user_id": ANY if user_id is None else check_id("user_id", user_id),
        "session_type": ANY if session_type is None else check_id("session_type", session_type),
        "message_days": _days("message_days", message_days),
        "context_days": _days("context_days", context_days),
    }
    row = yield Query(UPSERT_POLICY, params, fetch="one")
    return _policy_from_row(row)


@operation(group=MORE)
def delete_retention_policy(core: Core, *, user_id: str | None = None, session_type: str | None = None) -> Op[bool]:
    """Remove the policy of exactly ``user_id`` / ``session_type``; ``True`` if there was one."""
    params = {
        "user_id": ANY if user_id is None else check_id("user_id", user_id),
        "session_type": ANY if session_type is None else check_id("session_type", session_type),
    }
    removed = yield Query(DELETE_POLICY, params, fetch="rowcount")
    return bool(removed)


@operation(group=MORE, per_user=False)
def get_retention_policies(core: Core) -> Op[list[RetentionPolicy]]:
    """Every retention policy (administrative: not exposed on user-scoped stores)."""
    rows = yield Query(SELECT_POLICIES)
    return [_policy_from_row(r) for r in rows]


@operation(group=MAINTENANCE, invalidates=EVERY_SESSION, per_user=False)
def cleanup_expired_data(core: Core) -> Op[dict[str, int]]:
    """Delete expired context and the data retention policies no longer keep, in one transaction, over
    every user (also on a role under Row Level Security: see schema/0009_owned_tables.sql).

    Returns the rows removed per kind: ``{"context": ..., "messages": ...}``.
    """
    row = yield Query(CLEANUP_EXPIRED_DATA, fetch="one")
    counts = {"context": int(row["context"]), "messages": int(row["messages"])}
    if any(counts.values()):
        logger.info(
            "retention cleanup removed %d context entries and %d messages", counts["context"], counts["messages"]
        )
    return counts


# --------------------------------------------------------------------------- sweepers


class RetentionSweeper:
    """Runs ``store.cleanup_expired_data()`` every ``interval`` seconds in a daemon thread.

    ``start()`` returns a :class:`concurrent.futures.Future` resolved (with the number of sweeps) when
    the sweeper stops; ``stop(timeout)`` asks it to stop and waits, returning whether it did. A failing
    sweep (database down) is logged and retried at the next interval; the sweeper ends by itself when
    the store is closed.
    """

    def __init__(self, store: Any, *, interval: float = 3600.0) -> None:
        if not interval > 0:
            raise ValidationError("interval must be a positive number of seconds")
        self._store = store
        self._interval = float(interval)
        self._stop = threading.Event()
        self._future: concurrent.futures.Future[int] | None = None
        self.last_result: dict[str, int] | None = None
        self.sweeps = 0

    def start(self) -> concurrent.futures.Future[int]:
        """Start sweeping (first sweep immediately); idempotent while running."""
        if self._future is not None and not self._future.done():
            return self._future
        self._stop.clear()
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._future = future
        threading.Thread(target=self._loop, args=(future,), name="ltst-retention-sweeper", daemon=True).start()
        return future

    def _loop(self, future: concurrent.futures.Future[int]) -> None:
        future.set_running_or_notify_cancel()
        try:
            while not self._stop.is_set():
                try:
                    self.last_result = self._store.cleanup_expired_data()
                    self.sweeps += 1
                except StoreClosedError:
                    break
                except LTSTError as exc:
                    logger.warning("retention sweep failed, retrying in %.0fs: %s", self._interval, exc)
                self._stop.wait(self._interval)
        except BaseException as exc:  # pragma: no cover - unexpected: report through the future
            future.set_exception(exc)
            return
        future.set_result(self.sweeps)

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop sweeping; wait up to ``timeout`` seconds for a running sweep to end. ``True`` if stopped."""
        self._stop.set()
        if self._future is None:
            return True
        try:
            self._future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True


class AsyncRetentionSweeper:
    """The asyncio twin of :class:`RetentionSweeper` for an :class:`~ltst_memory.AsyncConversationStorage`:
    ``start()`` returns an :class:`asyncio.Task`, ``await stop(timeout)`` ends it."""

    def __init__(self, store: Any, *, interval: float = 3600.0) -> None:
        if not interval > 0:
            raise ValidationError("interval must be a positive number of seconds")
        self._store = store
        self._interval = float(interval)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None
        self.last_result: dict[str, int] | None = None
        self.sweeps = 0

    def start(self) -> asyncio.Task[int]:
        """Start sweeping in the running event loop (first sweep immediately); idempotent while running."""
        if self._task is not None and not self._task.done():
            return self._task
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ltst-retention-sweeper")
        return self._task

    async def _loop(self) -> int:
        while not self._stop.is_set():
            try:
                self.last_result = await self._store.cleanup_expired_data()
                self.sweeps += 1
            except StoreClosedError:
                break
            except LTSTError as exc:
                logger.warning("retention sweep failed, retrying in %.0fs: %s", self._interval, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
        return self.sweeps

    async def stop(self, timeout: float | None = 10.0) -> bool:
        """Stop sweeping; wait up to ``timeout`` seconds. ``True`` if the sweeper ended."""
        self._stop.set()
        if self._task is None:
            return True
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)
