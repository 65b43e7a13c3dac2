"""``ltst serve`` (the local web inspector) and ``ltst mcp`` (the MCP server): docs/inspector.md."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from typing import Annotated

import typer

from ._cli_common import DataDirOption, DsnOption, ModelOption, _command, _store, err_console

__all__ = ["register"]

logger = logging.getLogger(__name__)


def _missing(extra: str, exc: ImportError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc.name} is not installed: pip install 'ltst-memory[{extra}]'")
    return typer.Exit(code=1)


def _listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free port chosen by the system)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


@_command
def serve(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 0,
    token: Annotated[
        str | None, typer.Option("--token", help="The access token (default: a new random one, printed).")
    ] = None,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    model: ModelOption = None,
) -> None:
    """Open the web inspector on 127.0.0.1: users, sessions, messages, recall, rehydrate, edits.

    Prints the address with its access token; requests without the token are refused.

    Example: ltst serve --port 8765
    """
    started = time.perf_counter()
    try:
        import uvicorn

        from .inspector import create_app
    except ImportError as exc:
        raise _missing("serve", exc) from None
    secret = token or secrets.token_urlsafe(24)
    with _store(dsn, data_dir, model) as store:
        sock = _listen(port)
        chosen = sock.getsockname()[1]
        app = create_app(store, token=secret)
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        err_console.print(
            f"ltst inspector ready in {time.perf_counter() - started:.2f} s: "
            f"http://127.0.0.1:{chosen}/?token={secret}",
            soft_wrap=True,
        )
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()


@_command
def mcp(
    user: Annotated[str, typer.Option("--user", help="The one user this server reads and writes (required).")],
    transport: Annotated[
        str, typer.Option("--transport", help="stdio (for Claude Desktop, Cursor) or http (streamable HTTP).")
    ] = "stdio",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port for --transport http.")] = 8766,
    dsn: DsnOption = None,
    data_dir: DataDirOption = None,
    model: ModelOption = None,
) -> None:
    """Run the MCP server of one user's memory (stdio, or streamable HTTP on 127.0.0.1/mcp).

    Example: ltst mcp --user alice
    """
    if transport not in ("stdio", "http"):
        from .errors import ValidationError

        raise ValidationError(f"--transport must be stdio or http, got {transport!r}")
    try:
        import mcp.server.mcpserver  # noqa: F401

        from .mcp_server import build_server
    except ImportError as exc:
        raise _missing("mcp", exc) from None
    with _store(dsn, data_dir, model) as store:
        server = build_server(store, user)
        logger.info("ltst mcp ready for user %r (%s)", user, transport)
        if transport == "stdio":
            err_console.print(f"ltst mcp ready: user {user!r} on stdio", soft_wrap=True)
            server.run("stdio")
        else:
            err_console.print(f"ltst mcp ready: user {user!r} on http://127.0.0.1:{port}/mcp", soft_wrap=True)
            server.run("streamable-http", host="127.0.0.1", port=port)


def register(app: typer.Typer) -> None:
    """Add ``ltst serve`` and ``ltst mcp`` to the ``ltst`` application."""
    app.command(name="serve")(serve)
    app.command(name="mcp")(mcp)
