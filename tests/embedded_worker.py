"""A user's process on the embedded server, run as a real process by tests/test_embedded_server.py and
benchmarks/embedded_races.py: ``python tests/embedded_worker.py MODE DATA_DIR [ARGS]``.

Modes:

- ``race DATA_DIR TAG START_AT``: wait until the wall clock reads ``START_AT``, open a store, write three
  messages, read them back, close. Exit 0; 1 with a typed error (LTSTError); 2 with any other (raw) error.
- ``writer DATA_DIR TAG OUT``: open a store and write messages until ``OUT.stop`` exists, retrying a
  DatabaseUnavailableError with the same message (its uuid makes the retry idempotent). ``OUT`` gets a line
  ``ok TIME UUID`` per acknowledged write and ``err TIME TYPE`` per failed attempt.
- ``hold DATA_DIR``: open a store, print ``ready``, sleep until killed.
- ``reopen DATA_DIR OUT``: open a store, print ``ready``; on a line on stdin, open a second store in this
  process (the first still open) and write ``ok`` or the error's type to ``OUT``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

for _name in ("LTST_DATABASE_URL", "DATABASE_URL", "LTST_READ_DATABASE_URL"):
    os.environ.pop(_name, None)

from ltst_memory import (  # noqa: E402 - after the environment is cleared
    ConversationMessage,
    ConversationSession,
    ConversationStorage,
    DatabaseUnavailableError,
    HashingEmbedder,
    LTSTError,
)


def _store(data_dir: str) -> ConversationStorage:
    return ConversationStorage(data_dir=data_dir, embedder=HashingEmbedder(64), pool_max_size=4)


def race(data_dir: str, tag: str, start_at: float) -> int:
    time.sleep(max(0.0, start_at - time.time()))
    try:
        with _store(data_dir) as store:
            store.create_session(ConversationSession(session_id=tag, user_id="u"))
            for i in range(3):
                store.store_message(ConversationMessage(session_id=tag, role="human", content=f"{tag} {i}"))
            got = [m.content for m in store.get_messages(tag)]
            if got != [f"{tag} {i}" for i in range(3)]:
                print(f"WRONG read back {got}", file=sys.stderr)
                return 1
    except LTSTError as exc:
        print(f"TYPED {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:  # what the user must never see
        print(f"RAW {type(exc).__module__}.{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def writer(data_dir: str, tag: str, out: str) -> int:
    stop = Path(out + ".stop")
    with _store(data_dir) as store, open(out, "a", buffering=1) as log:
        store.create_session(ConversationSession(session_id=tag, user_id="u"))
        log.write(f"open {time.time()}\n")
        i = 0
        while not stop.exists():
            message = ConversationMessage(
                session_id=tag, role="human", content=f"{tag} {i}", message_uuid=str(uuid.uuid4())
            )
            while True:
                try:
                    stored = store.store_message(message)
                    break
                except DatabaseUnavailableError:
                    log.write(f"err {time.time()} DatabaseUnavailableError\n")
                    time.sleep(0.05)
            log.write(f"ok {time.time()} {stored.message_uuid}\n")
            i += 1
            time.sleep(0.02)
    return 0


def hold(data_dir: str) -> int:
    with _store(data_dir):
        print("ready", flush=True)
        while True:
            time.sleep(60)


def reopen(data_dir: str, out: str) -> int:
    with _store(data_dir):
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            with _store(data_dir) as second:
                second.versions()
            result = "ok"
        except LTSTError as exc:
            result = f"typed {type(exc).__name__}"
        except BaseException as exc:
            result = f"raw {type(exc).__name__}: {exc}"
        Path(out).write_text(result)
    return 0


def main(argv: list[str]) -> int:
    mode, data_dir, *rest = argv
    if mode == "race":
        return race(data_dir, rest[0], float(rest[1]))
    if mode == "writer":
        return writer(data_dir, rest[0], rest[1])
    if mode == "hold":
        return hold(data_dir)
    if mode == "reopen":
        return reopen(data_dir, rest[0])
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
