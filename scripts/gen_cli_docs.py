"""Write docs/cli.md from the commands' own --help, so the reference cannot drift.

python scripts/gen_cli_docs.py          # rewrite docs/cli.md
python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from audioguide.cli import cli

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADER = """\
# Command-line reference

Generated from `--help` by `python scripts/gen_cli_docs.py`; a test fails when it is out of
date. The JSON printed by `audioguide plan --json` is described in [plan-json.md](plan-json.md).
"""


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


def cli_reference() -> str:
    runner = CliRunner()
    parts = [HEADER]
    for path in [(), *_commands(cli)]:
        result = runner.invoke(cli, [*path, "--help"], prog_name="audioguide", terminal_width=100)
        if result.exit_code != 0:
            raise RuntimeError(f"audioguide {' '.join(path)} --help failed: {result.output}")
        title = " ".join(("audioguide", *path))
        parts.append(f"## `{title}`\n\n```\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = cli_reference()
    if "--check" in sys.argv[1:]:
        if not DOCS.is_file() or DOCS.read_text(encoding="utf-8") != text:
            print(f"{DOCS.name} is out of date: run python scripts/gen_cli_docs.py")
            return 1
        return 0
    DOCS.write_text(text, encoding="utf-8")
    print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
