"""Server settings the library applies to the embedded PostgreSQL it starts (never to a server you own).

PostgreSQL's defaults (128 MB ``shared_buffers``, JIT on, spinning-disk page costs) are sized for a
small shared host. A conversation store reads vectors and its vector index on every search: with the
defaults a 100k-message store's vectors (~150 MB) do not fit in shared buffers and each search or
insert re-reads pages from the OS cache, and JIT compilation can add tens of milliseconds to a recall
query whose plan looks expensive. The settings here are written once with ``ALTER SYSTEM`` when the
embedded server's data directory is first set up (a marker file records it), so later changes you make
with ``ALTER SYSTEM`` are yours to keep. Set ``LTST_EMBEDDED_TUNING=0`` to leave the defaults.

For your own server, docs/design.md ("Server settings") lists the same settings as recommendations.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

#: Written in the embedded server's data directory once its settings are applied.
MARKER = "ltst-tuning-v1"

_MB = 1024 * 1024


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 4 * 1024 * _MB


def recommended_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """The settings for a machine with ``memory_bytes`` of RAM (default: this machine's)."""
    memory = memory_bytes or _physical_memory()
    shared = max(128, min(memory // 8 // _MB, 1024))
    maintenance = max(64, min(memory // 16 // _MB, 1024))
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(shared * 2, memory // 2 // _MB)}MB",
        "maintenance_work_mem": f"{maintenance}MB",
        "work_mem": "16MB",
        "jit": "off",
        "random_page_cost": "1.1",
        "max_wal_size": "2GB",
    }


def enabled() -> bool:
    return os.environ.get("LTST_EMBEDDED_TUNING", "1").strip().lower() not in ("0", "false", "no", "off")


def is_tuned(pgdata: Path) -> bool:
    return (pgdata / MARKER).exists()


def apply(admin_dsn: str, pgdata: Path) -> bool:
    """Write the recommended settings with ALTER SYSTEM and mark ``pgdata``; True if a restart is
    needed for all of them to take effect (``shared_buffers``)."""
    settings = recommended_settings()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
        row = conn.execute("SELECT count(*) FROM pg_file_settings WHERE applied IS FALSE AND error IS NULL").fetchone()
        restart = bool(row and row[0])
    try:
        (pgdata / MARKER).write_text("\n".join(f"{k} = {v}" for k, v in settings.items()) + "\n")
    except OSError as exc:  # the server owns pgdata; a marker we cannot write only means re-tuning later
        logger.warning("cannot write %s in %s: %s", MARKER, pgdata, exc)
    logger.info("embedded PostgreSQL tuned: %s", ", ".join(f"{k}={v}" for k, v in settings.items()))
    return restart
