"""Versioned SQL migrations of ltst-memory (``NNNN_name.sql``, applied in order by :mod:`ltst_memory.migrate`)."""

from __future__ import annotations

from importlib import resources

__all__ = ["migration_files"]


def migration_files() -> list[tuple[str, str]]:
    """``(name, sql)`` for every migration shipped with the package, in the order they apply."""
    files = [f for f in resources.files(__name__).iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]
