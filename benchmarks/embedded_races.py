"""The embedded server under real processes and signals: races, SIGKILL recovery, stop after the last holder.

    python benchmarks/embedded_races.py --runs 100 --kills 20 --holder-kills 10

- **races**: ``--runs`` races for each of 2, 3 and 4 processes that open one fresh data directory at the
  same moment (first start, tuning restart, CREATE DATABASE), each then writing and reading
  (tests/embedded_worker.py ``race``). Counts failures, and among them raw (non-LTSTError) errors.
- **SIGKILL recovery**: ``--kills`` times, 4 writer processes write to one server; the postmaster gets
  SIGKILL. Measures the time until the server is ready again, until every writer's next acknowledged write
  (from the kill, and from the server being back), and checks that every acknowledged write is stored once.
- **stop after the last holder died**: ``--holder-kills`` times, one process holds the server and gets
  SIGKILL; measures the time until the postmaster is gone (the supervisor's idle period is
  ``LTST_EMBEDDED_IDLE_SECONDS``, 10 s by default).

Every server started is stopped at the end. Prints a summary and, with ``--json``, the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ltst_memory import HashingEmbedder
from ltst_memory import _embedded as embedded
from ltst_memory.storage import ConversationStorage

WORKER = Path(__file__).resolve().parent.parent / "tests" / "embedded_worker.py"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LTST_DATABASE_URL", "DATABASE_URL")}


def _start(mode: str, data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(data_dir), *args],
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(data_dir: Path) -> None:
    if (data_dir / "pgdata").is_dir():
        embedded.stop_server(data_dir, force=True)
    end = time.monotonic() + 30
    while embedded.supervisor_running(data_dir) and time.monotonic() < end:
        time.sleep(0.05)


def _state(data_dir: Path) -> embedded.ServerState:
    return embedded.server_state(data_dir / "pgdata")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def races(root: Path, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for processes in (2, 3, 4):
        failures = raw = 0
        examples: list[str] = []
        started = time.monotonic()
        for run in range(runs):
            data_dir = root / f"race-{processes}-{run}"
            start_at = time.time() + 1.5
            workers = [_start("race", data_dir, f"p{i}", str(start_at)) for i in range(processes)]
            for worker in workers:
                code = worker.wait(300)
                err = worker.communicate()[1]
                if code != 0:
                    failures += 1
                    raw += code == 2
                    if len(examples) < 3:
                        examples.append(err.strip()[-500:])
            left_running = _state(data_dir).running
            failures += left_running  # the last one to close must have stopped it
            _finish(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"  race {run + 1}/{runs} of {processes}: {failures} failures so far, {raw} raw", flush=True)
        result[f"{processes}_processes"] = {
            "races": runs,
            "failed_processes": failures,
            "raw_errors": raw,
            "seconds": round(time.monotonic() - started, 1),
            "examples": examples,
        }
        print(f"races of {processes}: {runs} runs, {failures} failures, {raw} raw", flush=True)
    return result


def _oks(log: Path) -> list[tuple[float, str]]:
    rows = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return [(float(r[1]), r[2]) for r in rows if len(r) == 3 and r[0] == "ok"]


def kills(root: Path, count: int, writers: int = 4) -> dict[str, Any]:
    data_dir = root / "kills"
    logs = [root / f"writer-{i}.log" for i in range(writers)]
    procs = [_start("writer", data_dir, f"w{i}", str(log)) for i, log in enumerate(logs)]
    back_after: list[float] = []
    first_write_after_kill: list[float] = []
    lag_after_back: list[float] = []
    try:
        end = time.monotonic() + 120
        while not all(len(_oks(log)) >= 3 for log in logs):
            if time.monotonic() > end:
                raise RuntimeError("writers did not start: " + "; ".join(p.stderr.read() for p in procs if p.poll()))
            time.sleep(0.05)
        for _ in range(count):
            before = _state(data_dir)
            assert before.ready and before.pid is not None
            os.kill(before.pid, signal.SIGKILL)
            killed = time.time()
            while True:
                now_state = _state(data_dir)
                if now_state.ready and now_state.pid != before.pid:
                    back = time.time()
                    break
                time.sleep(0.005)
            back_after.append(back - killed)
            for log in logs:
                while True:
                    later = [t for t, _ in _oks(log) if t > back]
                    if later:
                        first_write_after_kill.append(later[0] - killed)
                        lag_after_back.append(max(0.0, later[0] - back))
                        break
                    time.sleep(0.01)
            time.sleep(1.0)
    finally:
        for log in logs:
            Path(str(log) + ".stop").touch()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    lost = duplicated = acknowledged = 0
    with ConversationStorage(data_dir=data_dir, embedder=HashingEmbedder(64)) as store:
        for i, log in enumerate(logs):
            acked = {u for _, u in _oks(log)}
            stored = [m.message_uuid for m in store.get_messages(f"w{i}", limit=100_000)]
            acknowledged += len(acked)
            lost += len(acked - set(stored))
            duplicated += len(stored) - len(set(stored))
    _finish(data_dir)
    figures = {
        "kills": count,
        "writers": writers,
        "server_ready_after_kill_p50": round(statistics.median(back_after), 3),
        "server_ready_after_kill_p95": round(_pct(back_after, 0.95), 3),
        "next_write_after_kill_p50": round(statistics.median(first_write_after_kill), 3),
        "next_write_after_kill_p95": round(_pct(first_write_after_kill, 0.95), 3),
        "next_write_after_server_back_p50": round(statistics.median(lag_after_back), 3),
        "next_write_after_server_back_p95": round(_pct(lag_after_back, 0.95), 3),
        "next_write_after_server_back_max": round(max(lag_after_back), 3),
        "acknowledged": acknowledged,
        "lost": lost,
        "duplicated": duplicated,
    }
    print(f"SIGKILL recovery: {figures}", flush=True)
    return figures


def holder_kills(root: Path, count: int) -> dict[str, Any]:
    stops: list[float] = []
    for run in range(count):
        data_dir = root / f"holder-{run}"
        proc = _start("hold", data_dir)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
        proc.send_signal(signal.SIGKILL)
        killed = time.time()
        proc.wait()
        end = time.monotonic() + 120
        while _state(data_dir).running and time.monotonic() < end:
            time.sleep(0.05)
        stops.append(time.time() - killed)
        _finish(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    figures = {
        "holder_kills": count,
        "idle_seconds": embedded.idle_seconds(),
        "stopped_after_p50": round(statistics.median(stops), 2),
        "stopped_after_max": round(max(stops), 2),
    }
    print(f"stop after the last holder died: {figures}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="races per process count (2, 3, 4)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the postmaster under 4 writers")
    parser.add_argument("--holder-kills", type=int, default=10, help="SIGKILLs of the only holder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ltst-embedded-bench-"))
    root.chmod(0o755)  # as root the server runs as another OS user, who must traverse it
    figures: dict[str, Any] = {}
    try:
        if args.kills:
            figures["sigkill_recovery"] = kills(root, args.kills)
        if args.holder_kills:
            figures["stop_after_last_holder_died"] = holder_kills(root, args.holder_kills)
        if args.runs:
            figures["races"] = races(root, args.runs)
    finally:
        for data_dir in root.iterdir():
            if data_dir.is_dir():
                _finish(data_dir)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
