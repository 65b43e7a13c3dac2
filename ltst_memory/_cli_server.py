"""``ltst server status | stop | logs``: the embedded PostgreSQL server of a data directory (docs/embedded.md)."""

from __future__ import annotations

import datetime as dt
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer

from ._cli_common import DataDirOption, JsonOption, _command, _print_json, console, err_console

__all__ = ["register"]

server_app = typer.Typer(
    name="server",
    help="The embedded PostgreSQL server: status, stop, logs (see docs/embedded.md).",
    no_args_is_help=True,
)


def _data_dir(data_dir: Path | None) -> Path:
    from .config import Settings

    return Path(Settings.from_env(data_dir=data_dir).data_dir).expanduser().resolve()


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _duration(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(seconds)))


@server_app.command()
@_command
def status(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Show the embedded server: pid, socket, holders, uptime, size.

    Also whether it runs, and whether its supervisor (which heals and stops it) runs.

    Example: ltst server status
    """
    from ._embedded import describe

    info: dict[str, Any] = describe(_data_dir(data_dir))
    if as_json:
        _print_json(info)
        return
    lines = [
        ("data directory", info["data_dir"]),
        ("server", info["status"] if info["initialised"] else "not created yet"),
    ]
    if info["running"]:
        where = f"socket {info['socket_dir']} (port {info['port']})" if info["socket_dir"] else f"port {info['port']}"
        lines += [
            ("pid", str(info["pid"])),
            ("listens on", where),
            ("dsn", info["dsn"]),
            ("uptime", _duration(info["uptime_seconds"] or 0)),
        ]
    lines.append(("size", _bytes(info["size_bytes"])))
    holders = info["holders"]
    lines.append(("holders", str(len(holders)) if holders else "none"))
    for holder in holders:
        since = holder["started"]
        started = dt.datetime.fromtimestamp(since).isoformat(timespec="seconds") if since else "?"
        lines.append(("", f"pid {holder['pid']} (since {started}) {holder['command']}"))
    lines.append(("supervisor", "running" if info["supervisor"] else "not running"))
    if info["os_user"]:
        lines.append(("runs as OS user", info["os_user"]))
    lines.append(("log", info["log"]))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        typer.echo(f"{name:<{width}}  {value}")  # plain lines: never wrapped, easy to grep


@server_app.command()
@_command
def stop(
    data_dir: DataDirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Stop it even while processes hold it (they start it again).")
    ] = False,
) -> None:
    """Stop the embedded server (refused while a live process holds it, unless --force).

    Example: ltst server stop
    """
    from ._embedded import describe, stop_server

    directory = _data_dir(data_dir)
    if not (directory / "pgdata").is_dir():
        console.print(f"no embedded server in {directory}", highlight=False)
        return
    if stop_server(directory, force=force):
        console.print(f"stopped the embedded server in {directory}", highlight=False)
        return
    holders = describe(directory)["holders"]
    err_console.print(
        f"[bold red]error:[/] {len(holders)} live process(es) hold the server in {directory} (pids "
        f"{', '.join(str(h['pid']) for h in holders)}); close their stores, or use --force (they start it again "
        "on their next call)",
        highlight=False,
    )
    raise typer.Exit(code=1)


@server_app.command()
@_command
def logs(
    data_dir: DataDirOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to show.")] = 50,
) -> None:
    """Print the last lines of the server's log (pgdata/log) and of its supervisor's.

    Example: ltst server logs -n 100
    """
    directory = _data_dir(data_dir)
    for title, path in (("server", directory / "pgdata" / "log"), ("supervisor", directory / "supervisor.log")):
        typer.echo(f"==> {title}: {path} <==")
        try:
            with open(path, errors="replace") as handle:
                tail = deque(handle, maxlen=max(lines, 0))
        except FileNotFoundError:
            typer.echo("(no log yet)")
            continue
        typer.echo("".join(tail).rstrip("\n"))


def register(app: typer.Typer) -> None:
    """Add ``ltst server`` to the ``ltst`` application."""
    app.add_typer(server_app, name="server")
