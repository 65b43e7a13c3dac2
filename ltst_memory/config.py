"""Typed settings: explicit argument > environment > default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigurationError

__all__ = ["DEFAULT_EMBEDDING_MODEL", "Settings", "default_data_dir"]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def default_data_dir() -> Path:
    """The platform's user data directory for ltst-memory (e.g. ``~/.local/share/ltst-memory``)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("ltst-memory", appauthor=False))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything a store needs to know before it opens.

    ``dsn`` of ``None`` means "use the embedded PostgreSQL in ``data_dir``". ``read_dsn`` names a
    read replica for the operations that only read (``None``: they run on ``dsn`` too).
    """

    dsn: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    max_content_chars: int = 100_000
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    auto_migrate: bool = True
    #: IVFFlat lists probed first by searches that scan the vector index (unscoped, or scopes above
    #: ``exact_search_max_rows``; ltst_memory/hnsw.py); docs/benchmarks.md, "Vector index".
    ivfflat_probes: int = 10
    #: HNSW candidate list of searches through a large user's own index (``ltst vector-index``; HNSW by
    #: default, ltst_memory/hnsw.py) or an HNSW index a deployment builds itself; docs/benchmarks.md.
    hnsw_ef_search: int = 400
    #: Scoped searches over at most this many messages are exact (btree + full distance sort);
    #: larger scopes use the vector index with pgvector's iterative scans.
    exact_search_max_rows: int = 15_000
    #: ``ltst lexical-index`` builds a term index (ltst_memory/lexical_index.py) for the users with more
    #: messages than this: recall's BM25 leg reads it instead of scoring every match (docs/retrieval.md).
    lexical_index_min_rows: int = 1_000
    #: A streaming replica (``LTST_READ_DATABASE_URL``) for read-only operations; see docs/scaling.md.
    read_dsn: str | None = None
    #: Reads go to the primary (with a warning in the log) while the replica replays more than this many
    #: seconds behind it (``LTST_READ_MAX_LAG``), or cannot be reached.
    read_max_lag: float = 10.0
    #: How often (seconds) a store checks its replica's lag: the first read after the interval checks,
    #: on a connection of the replica pool; ten times less often while the replica is unusable. 0: every
    #: read.
    read_check_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dsn", "read_dsn"):
            check_dsn(name, getattr(self, name))

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from ``LTST_*`` / ``DATABASE_URL`` variables (a read replica from
        ``LTST_READ_DATABASE_URL``); ``overrides`` that are not ``None`` win over the environment."""
        env = os.environ
        dsn = env.get("LTST_DATABASE_URL") or env.get("DATABASE_URL") or None
        data_dir = Path(env["LTST_DATA_DIR"]).expanduser() if env.get("LTST_DATA_DIR") else default_data_dir()
        settings = cls(
            dsn=dsn,
            data_dir=data_dir,
            embedding_model=env.get("LTST_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL,
            max_content_chars=_env_int("LTST_MAX_CONTENT_CHARS", 100_000),
            pool_max_size=_env_int("LTST_POOL_MAX_SIZE", 10),
            read_dsn=env.get("LTST_READ_DATABASE_URL") or None,
            read_max_lag=_env_float("LTST_READ_MAX_LAG", 10.0),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in given:
            given["data_dir"] = Path(str(given["data_dir"])).expanduser()
        try:
            settings = replace(settings, **given)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
        if settings.max_content_chars < 1:
            raise ConfigurationError("max_content_chars must be at least 1")
        if not settings.read_max_lag >= 0 or not settings.read_check_interval >= 0:
            raise ConfigurationError("read_max_lag and read_check_interval must be numbers of seconds >= 0")
        if settings.pool_min_size < 0 or settings.pool_max_size < max(1, settings.pool_min_size):
            raise ConfigurationError("pool sizes must satisfy 0 <= pool_min_size <= pool_max_size, max >= 1")
        return settings


def check_dsn(name: str, dsn: object) -> None:
    """Raise ConfigurationError unless ``dsn`` is ``None`` or a connection string libpq can parse.

    The message never repeats the string (it may hold a password).
    """
    if dsn is None:
        return
    if not isinstance(dsn, str):
        raise ConfigurationError(f"{name} must be a string, got {type(dsn).__name__}")
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        reason = str(exc).split('"', 1)[0].split(" in URI", 1)[0].strip().rstrip(":") or "unparseable"
        raise ConfigurationError(
            f"{name} is not a valid PostgreSQL connection string ({reason}); use a URI such as "
            "postgresql://user:password@host:5432/dbname or key=value pairs"
        ) from None
