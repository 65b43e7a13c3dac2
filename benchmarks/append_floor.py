"""What each requirement of an append costs, from a chat-log row to the store's statement.

    python benchmarks/append_floor.py --data-dir /tmp/copy-of-peers100k [--n 300] [--rounds 4] [--words-ab]

``--data-dir``: an embedded data directory holding a loaded store (``peers.py``'s data set, say); work on
a copy: it appends to it and creates scratch tables (``floor_*``). Alternating in one process, one
prepared statement each, autocommit, ``synchronous_commit`` as the server has it, sessions drawn at
random as in ``peers.py`` (the chat logs get as many sessions as the store holds, keyed by uuid, with an
index on it, as langchain-postgres's ``PostgresChatMessageHistory`` makes its table):

1. ``chat log``: langchain-postgres's row (a session uuid, the message as JSONB);
2. ``+ vector``: the same table with a ``vector(384)`` column, bound in binary;
3. ``+ words``: and a stored ``tsvector`` of the content (``to_tsvector('english', ...)``) with its GIN index;
4. ``message row``: the store's row into a table of ``conversation_messages``'s columns (its generated
   ``search_tsv``, its CHECK constraints) with only its primary key, the session's owner and next index
   read from the session row (no lock, no update);
5. ``+ session``: that row (into a second such table) with the session's index reserved as the store
   does (the session row's ``UPDATE`` of ``next_message_index`` and ``last_activity``) and the foreign
   key to the session;
6. ``store``: the store's statement (``_queries.INSERT_MESSAGE``: also the summary, the pending BM25 row,
   and ``conversation_messages``'s eight indexes), the BM25 fold after every 64th message id included;
7. with ``--words-ab``, ``store, sql``: the same with the message's words computed by migration 0002's
   ``LANGUAGE sql`` ``ltst_search_tsv`` rather than 0020's PL/pgSQL (the function is swapped before each
   of the two and left as 0020 has it).

Each round a ``CHECKPOINT`` first (the appends then pay the full-page images of the pages they touch
first, as on a server that checkpoints every few minutes). Prints p50 per round, the median of the
rounds, and the WAL each append wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from _common import PeersModelEmbedder, unit_vectors
from ltst_memory.schema import migration_files
from pgvector.psycopg import register_vector

from ltst_memory import ConversationStorage
from ltst_memory import _queries as q
from ltst_memory._uuid7 import uuid7

SETUP = """
DROP TABLE IF EXISTS floor_chat, floor_chat_vec, floor_chat_words, floor_rows, floor_rows_session;
CREATE TABLE floor_chat (id serial PRIMARY KEY, session_id uuid NOT NULL, message jsonb NOT NULL,
                         created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON floor_chat (session_id);
CREATE TABLE floor_chat_vec (LIKE floor_chat INCLUDING ALL, embedding vector(384));
CREATE TABLE floor_chat_words (LIKE floor_chat_vec INCLUDING ALL, content text NOT NULL,
                               words tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED);
CREATE INDEX ON floor_chat_words USING gin (words);
CREATE TABLE floor_rows (LIKE conversation_messages INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS);
ALTER TABLE floor_rows ADD PRIMARY KEY (message_id);
CREATE TABLE floor_rows_session (LIKE floor_rows INCLUDING ALL);
ALTER TABLE floor_rows_session ADD FOREIGN KEY (session_id, user_id)
    REFERENCES conversation_sessions (session_id, user_id);
"""
FILL_CHATS = """
INSERT INTO {table} (session_id, message{extra})
SELECT md5(s.session_id)::uuid,
       jsonb_build_object('type', 'human', 'data', jsonb_build_object('content', m.content)){values}
FROM conversation_messages AS m JOIN conversation_sessions AS s USING (session_id)
"""
CHAT = "INSERT INTO floor_chat (session_id, message) VALUES (%(sid)s, %(message)s::jsonb)"
CHAT_VEC = (
    "INSERT INTO floor_chat_vec (session_id, message, embedding) VALUES (%(sid)s, %(message)s::jsonb, %(embedding)b)"
)
CHAT_WORDS = (
    "INSERT INTO floor_chat_words (session_id, message, embedding, content)"
    " VALUES (%(sid)s, %(message)s::jsonb, %(embedding)b, %(content)s)"
)
_ROW_VALUES = """
    (message_id, message_uuid, session_id, user_id, role, content, message_type, message_index, metadata, embedding,
     relevance_score, is_context_message, "timestamp")
    SELECT nextval(pg_get_serial_sequence('conversation_messages', 'message_id')), %(message_uuid)s, %(session_id)s,
           s.user_id, %(role)s, %(content)s, %(message_type)s, s.message_index, %(metadata)s::jsonb,
           %(embedding)b::vector, %(relevance_score)s, %(is_context_message)s,
           coalesce(%(timestamp)s::timestamptz, now())
    FROM session AS s
    RETURNING message_id
"""
ROW = (
    "WITH session AS (SELECT user_id, next_message_index AS message_index FROM conversation_sessions"
    " WHERE session_id = %(session_id)s)\nINSERT INTO floor_rows" + _ROW_VALUES
)
ROW_SESSION = (
    "WITH session AS (UPDATE conversation_sessions"
    " SET next_message_index = next_message_index + 1, last_activity = GREATEST(last_activity, now())"
    " WHERE session_id = %(session_id)s RETURNING user_id, next_message_index - 1 AS message_index)"
    "\nINSERT INTO floor_rows_session" + _ROW_VALUES
)
STORE = q.INSERT_MESSAGE.replace("/*owner*/", "")
# --words-ab: the store's statement again with the message's words computed by 0002's LANGUAGE sql
# ltst_search_tsv (which PostgreSQL inlines, re-parsing its body, every statement) and by 0020's PL/pgSQL.
WORDS_SQL = """
CREATE OR REPLACE FUNCTION ltst_search_tsv(speaker text, content text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT setweight(to_tsvector('english'::regconfig, coalesce(speaker, '')), 'A')
                 || to_tsvector('english'::regconfig, content) $$
"""
WORDS_PLPGSQL = dict(migration_files())["0020_words_function.sql"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--words-ab", action="store_true", help="also the store's statement with 0002's LANGUAGE sql words function"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 500)
    with (
        ConversationStorage(data_dir=args.data_dir, embedder=PeersModelEmbedder()) as store,
        psycopg.connect(store.pool.conninfo, autocommit=True) as conn,
    ):
        register_vector(conn)
        conn.execute(SETUP)
        conn.execute(FILL_CHATS.format(table="floor_chat", extra="", values=""))
        conn.execute(FILL_CHATS.format(table="floor_chat_vec", extra=", embedding", values=", m.embedding"))
        conn.execute(
            FILL_CHATS.format(table="floor_chat_words", extra=", embedding, content", values=", m.embedding, m.content")
        )
        conn.execute("ANALYZE floor_chat, floor_chat_vec, floor_chat_words")
        sessions = [r[0] for r in conn.execute("SELECT session_id FROM conversation_sessions ORDER BY 1")]
        chat_ids = [
            uuid.UUID(bytes=bytes.fromhex(r[0]))
            for r in conn.execute("SELECT md5(session_id) FROM conversation_sessions ORDER BY 1")
        ]

        def chat_values(i: int) -> dict[str, Any]:
            k = int(rng.integers(len(sessions)))
            content = f"new words about the weather and a dog {i}"
            return {
                "sid": chat_ids[k],
                "message": json.dumps({"type": "human", "data": {"content": content}}),
                "embedding": vectors[i % 500],
                "content": content,
            }

        def row_values(i: int) -> dict[str, Any]:
            return {
                "message_uuid": uuid7(),  # (as the store assigns them)
                "session_id": sessions[int(rng.integers(len(sessions)))],
                "role": "human",
                "content": f"new words about the weather and a dog {i}",
                "message_type": "message",
                "metadata": "{}",
                "embedding": vectors[i % 500],
                "relevance_score": 0.0,
                "is_context_message": False,
                "timestamp": None,
            }

        def fold(row: Any) -> None:
            if row[0] % q.FOLD_EVERY == 0:
                conn.execute(q.FOLD_TERM_PENDING, prepare=True).fetchone()

        variants: list[tuple[str, str, Callable[[int], dict[str, Any]], Callable[[Any], None] | None]] = [
            ("chat log", CHAT, chat_values, None),
            ("+ vector", CHAT_VEC, chat_values, None),
            ("+ words", CHAT_WORDS, chat_values, None),
            ("message row", ROW, row_values, None),
            ("+ session", ROW_SESSION, row_values, None),
            ("store", STORE, row_values, fold),
        ]
        if args.words_ab:
            variants.append(("store, sql", STORE, row_values, fold))
        p50: dict[str, list[float]] = {name: [] for name, *_ in variants}
        wal: dict[str, list[float]] = {name: [] for name, *_ in variants}
        for r in range(args.rounds):
            conn.execute("CHECKPOINT")
            # (with --words-ab the two store arms swap places every other round: the first after the
            # CHECKPOINT pays most of the store's full-page images)
            order = variants[:-2] + variants[-2:][::-1] if args.words_ab and r % 2 else variants
            for name, statement, values, after in order:
                if args.words_ab and name.startswith("store"):
                    conn.execute(WORDS_SQL if name == "store, sql" else WORDS_PLPGSQL)
                start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                samples = []
                for i in range(args.n):
                    params = values(i)
                    t = time.perf_counter()
                    cur = conn.execute(statement, params, prepare=True)
                    if after is not None:
                        after(cur.fetchone())
                    samples.append(time.perf_counter() - t)
                end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                written = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0]  # type: ignore[index]
                p50[name].append(float(np.percentile(samples, 50)) * 1000)
                wal[name].append(float(written) / args.n)
            print(
                f"round {r}: "
                + ", ".join(f"{name} {p50[name][-1]:.3f}" for name, *_ in variants)
                + f"  (p50 ms; load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
        chat = float(np.median(p50["chat log"]))
        print("\nmedian of the rounds (p50 ms, x the chat log, WAL bytes per append):")
        for name, *_ in variants:
            value = float(np.median(p50[name]))
            print(f"  {name:12s} {value:.3f} ms  {value / chat:.2f}x  {np.median(wal[name]):,.0f} B")
        conn.execute("DROP TABLE floor_chat, floor_chat_vec, floor_chat_words, floor_rows, floor_rows_session")
        if args.words_ab:
            conn.execute(WORDS_PLPGSQL)  # as migration 0020 leaves it


if __name__ == "__main__":
    main()
