"""What the by-hand upstream runners (``tests/upstream_*.py``) share: fetching a package's sdist, the
conftest block that starts the embedded PostgreSQL, and running the sdist's tests with pytest."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: Conftest lines (with their own imports) that start an embedded PostgreSQL for the run, stop it at
#: exit, and leave its connection parameters in ``_PARAMS`` and a quoted socket host in ``_HOST``.
EMBEDDED_SERVER = r"""
import atexit as _atexit
import shutil as _shutil
import tempfile as _tempfile
from pathlib import Path as _Path
from urllib.parse import quote as _quote

from psycopg.conninfo import conninfo_to_dict as _conninfo_to_dict

from ltst_memory._connection import acquire_embedded as _acquire, release_embedded as _release

_DATA = _Path(_tempfile.mkdtemp(prefix="ltst-upstream-pg-"))
_PARAMS = _conninfo_to_dict(_acquire(_DATA))
_HOST = _quote(str(_PARAMS.get("host", "localhost")), safe="")


def _stop() -> None:
    if _DATA.exists():
        _release(_DATA)
        _shutil.rmtree(_DATA, ignore_errors=True)


_atexit.register(_stop)


def pytest_unconfigure(config) -> None:
    _stop()
"""


def fetch(workdir: Path, package: str, glob: str) -> Path:
    """The extracted sdist of ``package`` (``glob`` matches its folder), downloaded once into ``workdir``."""
    found = sorted(workdir.glob(f"{glob}/tests"))
    if found:
        return found[-1].parent
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(workdir), package],
        check=True,
    )
    archive = sorted(workdir.glob(f"{glob}.tar.gz"))[-1]
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return sorted(workdir.glob(f"{glob}/tests"))[-1].parent


def main(description: str, *, package: str, glob: str, conftest: str, modules: list[str], workdir: str) -> int:
    """Parse ``[--workdir DIR] [-- PYTEST ARGS]``, fetch the sdist, write ``conftest`` as its
    ``tests/conftest.py`` and run ``modules`` with pytest; return pytest's exit code."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / workdir)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = fetch(args.workdir, package, glob)
    (root / "tests" / "conftest.py").write_text(conftest, encoding="utf-8")
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto",
        "--rootdir", str(root), "-q", "-rf", *modules, *args.pytest_args,
    ]  # fmt: skip
    return subprocess.run(command, cwd=root, check=False).returncode
