"""Render docs/images/cli.png: `ltst import`, `sessions list`, `search` and `rehydrate` on the sample export.

    LTST_DATA_DIR=$(mktemp -d) HF_HUB_OFFLINE=1 python docs/images/cli_screenshot.py
    rsvg-convert -b '#0c0c0c' docs/images/cli.svg -o docs/images/cli.png && rm docs/images/cli.svg

(rsvg-convert is Debian's librsvg2-bin.) The commands run in-process on a recording Rich console,
exactly as on a terminal 110 columns wide.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from ltst_memory import _cli_common, cli

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [
    ["import", str(ROOT / "examples" / "data" / "sample-export.jsonl")],
    ["sessions", "list", "--user", "sam"],
    ["search", "what food should we avoid?", "--user", "sam", "--limit", "3"],
    ["rehydrate", "kyoto-trip", "Where should we eat near the temple?", "--budget", "120"],
]


def main() -> None:
    console = Console(
        file=io.StringIO(), record=True, width=110, force_terminal=True, highlight=False, color_system="truecolor"
    )
    _cli_common.console = cli.console = console
    for args in COMMANDS:
        shown = " ".join(f'"{a}"' if " " in a else a for a in args).replace(str(ROOT) + "/", "")
        console.print(Text.assemble(("$ ", "bold green"), ("ltst " + shown, "bold")))
        result = CliRunner().invoke(cli.app, args)
        if result.exit_code:
            raise SystemExit(f"ltst {' '.join(args)} failed: {result.output}")
    console.save_svg(str(Path(__file__).with_name("cli.svg")), title="ltst")


if __name__ == "__main__":
    main()
