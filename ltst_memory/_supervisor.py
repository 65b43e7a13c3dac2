"""``python -m ltst_memory._supervisor DATA_DIR``: the supervisor of one embedded PostgreSQL server.

Started, detached, by the first process that starts the server (ltst_memory/_embedded.py). It starts the
server again if it dies while a process holds it, stops it once no process has held it for
``LTST_EMBEDDED_IDLE_SECONDS`` (10 s by default), then exits. It writes to ``DATA_DIR/supervisor.log``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ._embedded import supervise


def main(argv: list[str]) -> int:
    """Supervise the server of ``argv[0]`` until it is stopped."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m ltst_memory._supervisor DATA_DIR\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    supervise(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
