"""Bulk import with ``COPY ... FROM STDIN (FORMAT BINARY)`` and deferred (background) embedding.

:func:`import_messages` validates messages like :meth:`ConversationStorage.store_messages`, embeds
each batch with ONE embedder call (or not at all with ``defer_embedding=True``), and writes each
batch in ONE transaction: lock the batch's sessions, ``COPY`` the rows in binary (vectors included),
advance the sessions' ``next_message_index``. ``message_index`` stays dense per session and the
statement-level triggers keep ``session_summary``, ``last_activity`` and the BM25 term statistics
right (COPY fires them once per batch). Messages whose ``message_uuid`` is already stored are
skipped, so re-running an import is harmless.

Validation and the binary encoding are column-wise and hand-written (:mod:`ltst_memory._bulk_rows`),
a few microseconds per message: the time of an import is the server's (see ``docs/benchmarks.md``).
The same import through psycopg's ``copy.write_row`` (``set_types``, pgvector's binary dumper, rows
checked by ``store_messages``' validator) was measured 35-50 % slower end to end
(``benchmarks/bulk_import.py --messages 50000 --existing 20000 --workers 1 --metadata``), so the
hand-written encoder stays.

Deferred embedding stores rows with a NULL embedding at once; :class:`EmbeddingWorker` (thread) or
:class:`AsyncEmbeddingWorker` (task) claims them with ``FOR UPDATE SKIP LOCKED`` (several workers,
several processes: no row is embedded twice), embeds a batch with one call and writes the vectors;
a message the embedder rejects is set aside (:class:`DeadLetter`) and the worker moves on. Until
then :func:`search_unembedded` finds them by words (full-text ``search_tsv``).

Operations here are generators like those of :mod:`ltst_memory._ops`; besides queries and embeddings
they yield :class:`~ltst_memory._kernel.Copy`, :class:`~ltst_memory._kernel.Commit` and
:class:`~ltst_memory._kernel.Parallel`, which the stores' one executor runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Generator, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from . import _bulk_rows as bulk_rows
from . import _queries as q
from ._kernel import EVERY_SESSION, MORE, Commit, Copy, Core, Embed, Parallel, Query, operation
from ._ops import is_distributed, lock_sessions_for_write, scoped_user, session_read
from .embeddings import embedding_text
from .errors import EmbeddingError, ValidationError
from .models import ConversationMessage, check_id, check_limit, check_text

__all__ = [
    "AsyncEmbeddingWorker",
    "BulkResult",
    "DeadLetter",
    "EmbeddingWorker",
    "embed_pending",
    "import_messages",
    "pending_embeddings",
    "search_unembedded",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- SQL

COPY_MESSAGES = f"COPY conversation_messages ({', '.join(bulk_rows.COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

# The transaction's time (for messages without a timestamp), and enough work_mem for the batch: the
# statement-level triggers read the COPY's transition table, which spills to a temporary file beyond
# work_mem (4 MB by default: ~1,500 rows with a 384-d vector); keeping it in memory saves ~15 %.
TRANSACTION_NOW = "SELECT now() AS now, set_config('work_mem', %(work_mem)s, true) AS work_mem"

EXISTING_UUIDS = (
    "SELECT message_uuid, session_id FROM conversation_messages WHERE message_uuid = ANY(%(uuids)s::uuid[])"
)

CLAIM_PENDING = """
SELECT message_id, content, metadata FROM conversation_messages
WHERE embedding IS NULL AND message_id <> ALL(%(skip)s::bigint[])
ORDER BY message_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

WRITE_EMBEDDINGS = """
UPDATE conversation_messages AS m SET embedding = x.embedding
FROM unnest(%(ids)s::bigint[], %(embeddings)s::vector[]) AS x(message_id, embedding)
WHERE m.message_id = x.message_id
"""

# On a Citus cluster (docs/citus.md) a row lock needs a statement answered by one shard: the users with
# pending messages first (no lock), then each user's rows are claimed and written in turn.
PENDING_USERS = """
SELECT user_id FROM conversation_messages
WHERE embedding IS NULL AND message_id <> ALL(%(skip)s::bigint[])
GROUP BY user_id ORDER BY min(message_id)
LIMIT %(limit)s
"""
CLAIM_PENDING_OF_USER = """
SELECT message_id, user_id, content, metadata FROM conversation_messages
WHERE user_id = %(user_id)s AND embedding IS NULL AND message_id <> ALL(%(skip)s::bigint[])
ORDER BY message_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
WRITE_EMBEDDINGS_OF_USER = WRITE_EMBEDDINGS + "AND m.user_id = %(user_id)s\n"

COUNT_PENDING = "SELECT count(*) AS n FROM conversation_messages WHERE embedding IS NULL"

_SEARCH_UNEMBEDDED = f"""
SELECT {q.MESSAGE_ROW_COLUMNS}, ts_rank_cd(search_tsv, query) AS rank
FROM conversation_messages, websearch_to_tsquery('english', %(query)s) AS query
WHERE embedding IS NULL AND search_tsv @@ query {{scope}}
ORDER BY rank DESC, message_id
LIMIT %(limit)s
"""
SEARCH_UNEMBEDDED_ALL = _SEARCH_UNEMBEDDED.format(scope="")
SEARCH_UNEMBEDDED_OF_USER = _SEARCH_UNEMBEDDED.format(scope="AND user_id = %(user_id)s")
SEARCH_UNEMBEDDED_IN_SESSION = _SEARCH_UNEMBEDDED.format(scope=f"AND session_id = %(session_id)s {q.owner()}")
SEARCH_UNEMBEDDED_IN_USER_SESSION = _SEARCH_UNEMBEDDED.format(
    scope="AND user_id = %(user_id)s AND session_id = %(session_id)s"
)

# --------------------------------------------------------------------------- instructions


@dataclass
class BulkResult:
    """What :func:`import_messages` did."""

    inserted: int = 0
    skipped: int = 0
    batches: int = 0
    embedded: int = 0
    deferred: int = 0
    seconds: float = 0.0
    #: Of ``seconds``: validating and encoding the rows in Python.
    encode_seconds: float = 0.0
    #: Of ``seconds``: inside ``COPY`` (the server inserting the rows, maintaining the indexes and running
    #: the statement-level triggers), encoding excluded.
    copy_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Messages handled per second."""
        return (self.inserted + self.skipped) / self.seconds if self.seconds else 0.0

    def add(self, other: BulkResult) -> None:
        """Add the counts and the encode / COPY seconds of ``other`` (``seconds`` stays this one's)."""
        for name in ("inserted", "skipped", "batches", "embedded", "deferred", "encode_seconds", "copy_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --------------------------------------------------------------------------- operations


def _chunks(items: Iterable[ConversationMessage], size: int) -> Iterable[list[ConversationMessage]]:
    batch: list[ConversationMessage] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@operation(group=MORE, bulk=True, invalidates=EVERY_SESSION)
def import_messages(
    core: Core,
    messages: Iterable[ConversationMessage],
    *,
    batch_size: int = 5_000,
    defer_embedding: bool = False,
    workers: int = 1,
) -> Generator[Any, Any, BulkResult]:
    """Bulk-store ``messages`` (any iterable, consumed lazily) with binary COPY; return a :class:`BulkResult`.

    Each batch of ``batch_size`` is embedded with one embedder call (messages that carry an
    ``embedding`` are not re-embedded) and written in one transaction; a failing batch rolls back
    alone (earlier batches stay). With ``defer_embedding=True`` messages without an embedding are
    stored with none, for :class:`EmbeddingWorker` to fill in. The sessions must exist.

    ``workers`` > 1 writes on that many connections at once (the server inserts on one CPU per
    connection): ``workers * batch_size`` messages are read at a time and split by the sessions'
    owner, so each user's messages go through one connection, in order, and concurrent transactions
    never wait for each other's session or statistics rows. Each part is written in transactions of
    up to ``batch_size`` messages. If one part fails, the parts running beside it still commit and the
    first error is raised. At most ``pool_max_size`` parts run at once.
    """
    if isinstance(messages, (str, bytes, ConversationMessage)) or not isinstance(messages, Iterable):
        raise ValidationError(
            f"import_messages expects an iterable of ConversationMessage, got {type(messages).__name__}"
        )
    batch_size = check_limit("batch_size", batch_size, minimum=1, maximum=1_000_000)
    workers = check_limit("workers", workers, minimum=1, maximum=64)
    result = BulkResult()
    started = time.perf_counter()
    if workers == 1:
        result = yield from _import_part(core, messages, batch_size, defer_embedding)
    else:
        owners: dict[str, str] = {}
        for round_ in _chunks(messages, batch_size * workers):
            unknown = {m.session_id for m in round_ if isinstance(getattr(m, "session_id", None), str)} - owners.keys()
            if unknown:
                rows = yield Query(q.SELECT_SESSION_OWNERS, {"session_ids": sorted(unknown)})
                owners.update((r["session_id"], r["user_id"]) for r in rows)
                yield Commit()
            parts = _partition_by_owner(round_, owners, workers)
            done = yield Parallel(tuple(_import_part(core, part, batch_size, defer_embedding) for part in parts))
            for part_result in done:
                result.add(part_result)
    result.seconds = time.perf_counter() - started
    logger.info(
        "bulk import: %d inserted, %d skipped in %d batches, %.2fs", result.inserted, result.skipped,
        result.batches, result.seconds,
    )  # fmt: skip
    return result


def _import_part(
    core: Core, messages: Iterable[ConversationMessage], batch_size: int, defer_embedding: bool
) -> Generator[Any, Any, BulkResult]:
    """Import ``messages`` on one connection, one transaction per batch of ``batch_size``."""
    result = BulkResult()
    started = time.perf_counter()
    for batch in _chunks(messages, batch_size):
        yield from _import_batch(core, batch, defer_embedding, result)
        yield Commit()
        result.batches += 1
    result.seconds = time.perf_counter() - started
    return result


def _partition_by_owner(
    messages: list[ConversationMessage], owners: dict[str, str], parts: int
) -> list[list[ConversationMessage]]:
    """``messages`` split into at most ``parts`` non-empty lists of similar size, all messages of one user
    (their session's owner in ``owners``; an unknown session counts as its own user) in the same list,
    in their order. Users are placed largest first, each on the list with the fewest messages so far."""
    keys = [_owner_key(m, owners) for m in messages]
    sizes: dict[str, int] = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    loads = [0] * parts
    place: dict[str, int] = {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        target = loads.index(min(loads))
        place[key] = target
        loads[target] += sizes[key]
    split: list[list[ConversationMessage]] = [[] for _ in range(parts)]
    for message, key in zip(messages, keys, strict=True):
        split[place[key]].append(message)
    return [part for part in split if part]


def _owner_key(message: Any, owners: dict[str, str]) -> str:
    session_id = getattr(message, "session_id", None)
    if not isinstance(session_id, str):
        return ""  # not a valid message: validation will reject it
    return "u:" + owners[session_id] if session_id in owners else "s:" + session_id


def _work_mem(prepared: bulk_rows.Prepared) -> str:
    """A ``work_mem`` that holds the batch's transition table (rows plus tsvectors), within 16-256 MB."""
    row = 400 + prepared.vectors.shape[1] * 4 + sum(len(c) for c in prepared.contents) * 3 // max(len(prepared), 1)
    return f"{min(max(len(prepared) * row * 3 // 2 >> 20, 16), 256)}MB"


def _import_batch(
    core: Core, batch: list[ConversationMessage], defer_embedding: bool, result: BulkResult
) -> Generator[Any, Any, None]:
    began = time.perf_counter()
    prepared = bulk_rows.prepare(core, batch)
    result.encode_seconds += time.perf_counter() - began
    missing = prepared.missing
    if missing and not defer_embedding:
        vectors = yield Embed(tuple(embedding_text(batch[i].content, batch[i].metadata) for i in missing))
        prepared.set_vectors(missing, vectors)
        result.embedded += len(missing)
    elif missing:
        result.deferred += len(missing)

    owners, next_index, existing = yield from lock_sessions_for_write(
        core, prepared.params(), [g is not None for g in prepared.given_uuids], EXISTING_UUIDS
    )
    now = (yield Query(TRANSACTION_NOW, {"work_mem": _work_mem(prepared)}, fetch="one", local=True))["now"]

    began = time.perf_counter()
    keep: list[int] = []
    indexes: list[int] = []
    seen: set[uuid.UUID] = set()
    for i, (sid, key) in enumerate(zip(prepared.session_ids, prepared.given_uuids, strict=True)):
        if key is not None:
            if key in existing or key in seen:
                result.skipped += 1
                continue
            seen.add(key)
        keep.append(i)
        indexes.append(next_index[sid])
        next_index[sid] += 1
    owner_fields = {sid: bulk_rows.text_field(owner) for sid, owner in owners.items()}
    result.encode_seconds += time.perf_counter() - began
    if keep:
        encoded = 0.0

        def clock(seconds: float) -> None:
            nonlocal encoded
            encoded += seconds

        stream = prepared.encode(keep, indexes, owner_fields, bulk_rows.timestamp_micros(now), clock)
        began = time.perf_counter()
        count = yield Copy(COPY_MESSAGES, stream)
        result.copy_seconds += time.perf_counter() - began - encoded
        result.encode_seconds += encoded
        result.inserted += count
        session_ids = sorted(owners)
        yield Query(
            q.ADVANCE_MESSAGE_INDEX,
            {"session_ids": session_ids, "next_indexes": [next_index[s] for s in session_ids]},
            fetch="none",
        )


@operation(group=MORE, per_user=False)
def embed_pending(core: Core, limit: int = 256) -> Generator[Any, Any, int]:
    """Claim up to ``limit`` messages stored without an embedding (``FOR UPDATE SKIP LOCKED``), embed
    them with one call and store the vectors; return how many were embedded (0: nothing pending).

    A message the embedder rejects is set aside: the batch is split until the rejected messages are
    alone, the others are stored, and the rejected ones keep no embedding (logged as a warning;
    :class:`EmbeddingWorker` lists them in ``dead_letters`` and stops claiming them). If the embedder
    rejects every message of the batch, that is its failure, not theirs: the error is raised."""
    outcome = yield from claim_and_embed(core, limit)
    return outcome.embedded


@dataclass(frozen=True)
class DeadLetter:
    """A message the embedder rejected: it stays stored without an embedding (``search_unembedded``
    still finds it by its words) and the worker that met it does not claim it again."""

    message_id: int
    error: str


@dataclass(frozen=True)
class EmbedOutcome:
    """What one :func:`claim_and_embed` did."""

    embedded: int
    rejected: tuple[DeadLetter, ...] = ()


def claim_and_embed(core: Core, limit: int, skip: Iterable[int] = ()) -> Generator[Any, Any, EmbedOutcome]:
    """:func:`embed_pending`, not claiming the ``skip`` message ids, returning the rejected messages too."""
    limit = check_limit("limit", limit, minimum=1, maximum=100_000)
    distributed = yield from is_distributed(core)
    if distributed:
        rows = yield from _claim_per_user(limit, sorted(skip))
    else:
        rows = yield Query(CLAIM_PENDING, {"limit": limit, "skip": sorted(skip)})
    if not rows:
        return EmbedOutcome(0)
    texts = [embedding_text(r["content"], r["metadata"]) for r in rows]
    vectors: dict[int, Any] = {}
    rejected: list[tuple[int, EmbeddingError]] = []
    yield from _embed_splitting(texts, 0, len(texts), vectors, rejected)
    if not vectors:  # nothing embeds: the embedder fails, the rows may be fine (the caller retries later)
        raise rejected[0][1]
    ids = [rows[i]["message_id"] for i in sorted(vectors)]
    if distributed:
        for user in sorted({rows[i]["user_id"] for i in vectors}):
            mine = [i for i in sorted(vectors) if rows[i]["user_id"] == user]
            params = {"ids": [rows[i]["message_id"] for i in mine], "embeddings": [vectors[i] for i in mine]}
            yield Query(WRITE_EMBEDDINGS_OF_USER, {**params, "user_id": user}, fetch="none")
    else:
        yield Query(WRITE_EMBEDDINGS, {"ids": ids, "embeddings": [vectors[i] for i in sorted(vectors)]}, fetch="none")
    letters = tuple(DeadLetter(int(rows[i]["message_id"]), str(exc)) for i, exc in rejected)
    for letter in letters:
        logger.warning("embedding: message %d set aside, the embedder rejects it: %s", letter.message_id, letter.error)
    return EmbedOutcome(len(ids), letters)


def _claim_per_user(limit: int, skip: list[int]) -> Generator[Any, Any, list[dict[str, Any]]]:
    """On a Citus cluster: claim up to ``limit`` pending messages, one user's at a time (users in the
    order of their oldest pending message)."""
    rows: list[dict[str, Any]] = []
    for user in (yield Query(PENDING_USERS, {"limit": limit, "skip": skip})):
        params = {"user_id": user["user_id"], "limit": limit - len(rows), "skip": skip}
        rows += yield Query(CLAIM_PENDING_OF_USER, params)
        if len(rows) >= limit:
            break
    return rows


def _embed_splitting(
    texts: list[str], start: int, stop: int, vectors: dict[int, Any], rejected: list[tuple[int, EmbeddingError]]
) -> Generator[Any, Any, None]:
    """Embed ``texts[start:stop]`` with one call; if the embedder fails, embed each half the same way, down
    to single texts, which are ``rejected`` with their error. ``vectors`` receives the rest by index."""
    try:
        embedded = yield Embed(tuple(texts[start:stop]), in_transaction=True)  # the claim's locks stay held
    except EmbeddingError as exc:
        if stop - start == 1:
            rejected.append((start, exc))
            return
        middle = (start + stop) // 2
        yield from _embed_splitting(texts, start, middle, vectors, rejected)
        yield from _embed_splitting(texts, middle, stop, vectors, rejected)
        return
    for offset, vector in enumerate(embedded):
        vectors[start + offset] = vector


@operation(group=MORE, per_user=False)
def pending_embeddings(core: Core) -> Generator[Any, Any, int]:
    """How many stored messages still wait for their embedding."""
    row = yield Query(COUNT_PENDING, fetch="one")
    return int(row["n"])


@operation(group=MORE)
def search_unembedded(
    core: Core,
    query: str,
    session_id: str | None = None,
    limit: int = 10,
    *,
    user_id: str | None = None,
) -> Generator[Any, Any, list[tuple[ConversationMessage, float]]]:
    """Messages still waiting for their embedding that match ``query``'s words (full text, English
    stemming), as ``(message, rank)`` best first; same scopes as ``search_messages``."""
    check_text("query", query, max_chars=core.settings.max_content_chars)
    params: dict[str, Any] = {"query": query, "limit": check_limit("limit", limit, minimum=1, maximum=1_000)}
    if session_id is not None:
        params["session_id"] = check_id("session_id", session_id)
    user_id = scoped_user(core, user_id)
    if user_id is not None:
        params["user_id"] = user_id
    sql = (
        SEARCH_UNEMBEDDED_IN_USER_SESSION
        if session_id is not None and user_id is not None
        else SEARCH_UNEMBEDDED_IN_SESSION
        if session_id is not None
        else SEARCH_UNEMBEDDED_OF_USER
        if user_id is not None
        else SEARCH_UNEMBEDDED_ALL
    )
    search = Query(sql, params, row=q.scored_message_row)  # rows: (message, rank)
    if session_id is None:
        hits: list[tuple[ConversationMessage, float]] = yield search
    else:
        hits = yield from session_read(core, params["session_id"], search)
    return hits


# --------------------------------------------------------------------------- background workers


class EmbeddingWorker:
    """A thread that embeds messages stored with ``defer_embedding=True``.

    ``future = worker.start()`` returns a :class:`concurrent.futures.Future` resolved with the total
    number of messages embedded when the worker stops; ``worker.stop(timeout)`` asks it to stop after
    the current batch and waits. Several workers (threads or processes) can run at once: rows are
    claimed with ``FOR UPDATE SKIP LOCKED``. A message the embedder rejects goes to
    :attr:`dead_letters` (with the error) and is not claimed again by this worker; the rest of its
    batch is stored. When the embedder fails on a whole batch, the failure is logged and retried after
    ``poll_interval``; the claimed rows are released by the rollback.
    """

    def __init__(self, store: Any, *, batch_size: int = 256, poll_interval: float = 0.5) -> None:
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._future: concurrent.futures.Future[int] | None = None
        self.embedded = 0
        #: The messages the embedder rejected, with its error, in the order met.
        self.dead_letters: list[DeadLetter] = []

    def run_once(self) -> int:
        """Embed one batch now (in the caller's thread); return how many messages were embedded."""
        skip = [letter.message_id for letter in self.dead_letters]
        outcome: EmbedOutcome = self._store._run(claim_and_embed(self._store._core, self._batch_size, skip))
        self.dead_letters.extend(outcome.rejected)
        self.embedded += outcome.embedded
        return outcome.embedded

    def _loop(self) -> None:
        assert self._future is not None
        try:
            while not self._stop.is_set():
                try:
                    done = self.run_once()
                except Exception:
                    if self._store.closed:
                        break
                    logger.exception("embedding worker: batch failed; retrying")
                    done = 0
                if done == 0:
                    self._stop.wait(self._poll_interval)
        except BaseException as exc:  # pragma: no cover - defensive
            self._future.set_exception(exc)
            return
        self._future.set_result(self.embedded)

    def start(self) -> concurrent.futures.Future[int]:
        """Start the worker thread (idempotent) and return its future."""
        if self._future is not None and not self._future.done():
            return self._future
        self._stop.clear()
        self._future = concurrent.futures.Future()
        threading.Thread(target=self._loop, name="ltst-embedding-worker", daemon=True).start()
        return self._future

    def stop(self, timeout: float | None = 10.0) -> int:
        """Stop after the current batch, wait up to ``timeout`` seconds; return messages embedded."""
        self._stop.set()
        if self._future is not None:
            return self._future.result(timeout=timeout)
        return self.embedded


class AsyncEmbeddingWorker:
    """The asyncio counterpart of :class:`EmbeddingWorker`: ``start()`` returns an :class:`asyncio.Task`."""

    def __init__(self, store: Any, *, batch_size: int = 256, poll_interval: float = 0.5) -> None:
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[int] | None = None
        self.embedded = 0
        #: The messages the embedder rejected, with its error, in the order met.
        self.dead_letters: list[DeadLetter] = []

    async def run_once(self) -> int:
        """Embed one batch now; return how many messages were embedded."""
        skip = [letter.message_id for letter in self.dead_letters]
        outcome: EmbedOutcome = await self._store._arun(claim_and_embed(self._store._core, self._batch_size, skip))
        self.dead_letters.extend(outcome.rejected)
        self.embedded += outcome.embedded
        return outcome.embedded

    async def _loop(self) -> int:
        while not self._stop.is_set():
            try:
                done = await self.run_once()
            except Exception:
                if self._store.closed:
                    break
                logger.exception("embedding worker: batch failed; retrying")
                done = 0
            if done == 0:
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._poll_interval)
        return self.embedded

    def start(self) -> asyncio.Task[int]:
        """Start the worker task (idempotent) and return it."""
        if self._task is None or self._task.done():
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="ltst-embedding-worker")
        return self._task

    async def stop(self, timeout: float | None = 10.0) -> int:
        """Stop after the current batch, wait up to ``timeout`` seconds; return messages embedded."""
        self._stop.set()
        if self._task is not None:
            return await asyncio.wait_for(self._task, timeout)
        return self.embedded
