"""Start time of ``ltst serve`` and ``ltst mcp`` to ready: the first answered request of a fresh process.

    HF_HUB_OFFLINE=1 python benchmarks/serve_start.py [--runs 5] [--dsn URL] [--model NAME]

``ltst serve``: from spawning the process to the first ``200`` of ``GET /`` (with the token it printed).
``ltst mcp``: from spawning ``ltst mcp --user bench`` on stdio (the SDK's client, as Claude Desktop runs
it) to the answer of ``tools/list``. Without ``--dsn``, a private embedded server in a temporary
directory, started once before the runs (a warm machine: the server runs, the OS caches are hot).
Prints every run and the median per command.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import anyio
import httpx


def serve_once(extra: list[str]) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "ltst_memory.cli", "serve", "--port", "0", *extra]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
            if not found:
                raise SystemExit(f"ltst serve did not start: {line}{process.stderr.read()}")
            while True:
                try:
                    response = httpx.get(f"{found.group(1)}/", headers={"x-ltst-token": found.group(2)})
                except httpx.TransportError:
                    continue
                if response.status_code == 200:
                    return time.perf_counter() - started
                raise SystemExit(f"GET / answered {response.status_code}")
        finally:
            process.terminate()
            process.wait(timeout=30)


async def mcp_once(extra: list[str]) -> float:
    from mcp import Client, StdioServerParameters

    started = time.perf_counter()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ltst_memory.cli", "mcp", "--user", "bench", *extra], env=dict(os.environ)
    )
    async with Client(params) as client:
        await client.list_tools()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dsn")
    parser.add_argument("--model", help="embedding model (default: the database's; loaded lazily anyway)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    extra = ["--dsn", args.dsn] if args.dsn else []
    if args.model:
        extra += ["--model", args.model]
    with tempfile.TemporaryDirectory() as data_dir:
        if not args.dsn:
            os.environ["LTST_DATA_DIR"] = data_dir
            subprocess.run([sys.executable, "-m", "ltst_memory.cli", "migrate"], check=True, capture_output=True)
            holder = subprocess.Popen([sys.executable, "-c", "import ltst_memory, time; s = ltst_memory.ConversationStorage(); time.sleep(3600)"])  # noqa: E501
            time.sleep(3)  # the warm machine: the embedded server stays up between runs
        try:
            serve_once(extra)  # warm-up: bytecode and OS caches
            serve = [serve_once(extra) for _ in range(args.runs)]
            anyio.run(mcp_once, extra)
            mcp = [anyio.run(mcp_once, extra) for _ in range(args.runs)]
        finally:
            if not args.dsn:
                holder.terminate()
                holder.wait(timeout=30)
                # stop the private server before its data directory is removed
                subprocess.run([sys.executable, "-m", "ltst_memory.cli", "server", "stop"], check=False)
    for name, times in (("ltst serve", serve), ("ltst mcp", mcp)):
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<11} ready in {statistics.median(times):.2f} s median ({runs})")


if __name__ == "__main__":
    main()
