"""What the async store does differently from the sync one, as pairs of functions of the same shape.

``storage_async.py`` calls the async function of each pair; ``storage.py`` is generated from it
(:mod:`ltst_memory._unasync`), which renames the call to the sync function of the pair and drops the
``await`` (as psycopg's ``_acompat`` module serves its generated sync code).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["ablocking", "agather", "asleep", "blocking", "gather", "sleep"]

R = TypeVar("R")


async def ablocking(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)`` in a worker thread, so the event loop stays free (a result that
    is awaitable, from a user's async callback, is awaited)."""
    value: Any = await asyncio.to_thread(function, *args, **kwargs)
    return await value if inspect.isawaitable(value) else value  # type: ignore[no-any-return]


def blocking(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)``, here: the sync store blocks its caller anyway."""
    return function(*args, **kwargs)


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
