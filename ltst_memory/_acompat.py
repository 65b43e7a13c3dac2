"""What the async store does differently from the sync one, as pairs of functions of the same shape.

``storage_async.py`` calls the async function of each pair; ``storage.py`` is generated from it
(:mod:`ltst_memory._unasync`), which renames the call to the sync function of the pair and drops the
``await`` (as psycopg's ``_acompat`` module serves its generated sync code).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = [
    "Started",
    "ablocking",
    "afinish",
    "agather",
    "asleep",
    "astart",
    "blocking",
    "finish",
    "gather",
    "sleep",
    "start",
]

R = TypeVar("R")


async def ablocking(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)`` in a worker thread, so the event loop stays free (a result that
    is awaitable, from a user's async callback, is awaited)."""
    value: Any = await asyncio.to_thread(function, *args, **kwargs)
    return await value if inspect.isawaitable(value) else value  # type: ignore[no-any-return]


def blocking(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)``, here: the sync store blocks its caller anyway."""
    return function(*args, **kwargs)


async def astart(function: Callable[..., R], /, *args: Any) -> asyncio.Task[R]:
    """Start ``function(*args)`` in a worker thread now and return at once; :func:`afinish` waits for
    it. The thread runs in a copy of the caller's context (``contextvars``), as ``asyncio.to_thread``."""
    return asyncio.get_running_loop().create_task(asyncio.to_thread(function, *args))


async def afinish(started: asyncio.Task[R]) -> R:
    """What the function :func:`astart` started returned (or raise what it raised), once it ended. A
    caller cancelled while it waits leaves the task running (shielded), so it can still wait for it."""
    return await asyncio.shield(started)


class Started(Generic[R]):
    """A function running in a thread of its own (:func:`start`), until :func:`finish` joins it."""

    __slots__ = ("_error", "_thread", "_value")

    def __init__(self, function: Callable[..., R], args: tuple[Any, ...]) -> None:
        context = contextvars.copy_context()
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = context.run(function, *args)
            except BaseException as exc:  # handed to the thread that joins it
                self._error = exc

        self._thread = threading.Thread(target=run, name="ltst-worker", daemon=True)
        self._thread.start()

    def result(self) -> R:
        """Wait for the function to end; what it returned, or raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]


def start(function: Callable[..., R], /, *args: Any) -> Started[R]:
    """Start ``function(*args)`` in a thread of its own now and return at once; :func:`finish` joins
    it. The thread runs in a copy of the caller's context (``contextvars``), as ``asyncio.to_thread``."""
    return Started(function, args)


def finish(started: Started[R]) -> R:
    """What the function :func:`start` started returned (or raise what it raised), once its thread ended."""
    return started.result()


async def agather(function: Callable[..., Any], calls: Sequence[tuple[Any, ...]], limit: int) -> list[Any]:
    """``function(*call)`` for every call at once, at most ``limit`` at a time: each outcome, a
    result or the exception raised, in the order of ``calls``."""
    slots = asyncio.Semaphore(max(1, min(len(calls), limit)))

    async def run(call: tuple[Any, ...]) -> Any:
        async with slots:
            return await function(*call)

    return list(await asyncio.gather(*(run(call) for call in calls), return_exceptions=True))


def gather(function: Callable[..., Any], calls: Sequence[tuple[Any, ...]], limit: int) -> list[Any]:
    """``function(*call)`` for every call at once, each in a thread (at most ``limit``): each outcome,
    a result or the exception raised, in the order of ``calls``."""
    workers = max(1, min(len(calls), limit))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ltst-parallel") as threads:
        futures = [threads.submit(function, *call) for call in calls]
        concurrent.futures.wait(futures)
    return [f.exception() or f.result() for f in futures]


async def asleep(seconds: float) -> None:
    """Wait ``seconds`` without blocking the event loop."""
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    """Wait ``seconds`` (the sync store blocks its caller)."""
    time.sleep(seconds)
