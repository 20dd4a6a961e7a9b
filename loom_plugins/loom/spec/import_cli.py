"""``loom templates import <export.json> [--out DIR] [--scripts DIR] [--force]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_import_command(templates_subparsers: Any) -> None:
    """Register ``import`` under the ``loom templates`` sub-commands."""
    cmd = templates_subparsers.add_parser(
        "import",
        help="convert a Loom/Coopr JSON export into template files",
        description="Convert an original Loom / Cask Coopr export (all entities, or one entity) into "
        "template files. Credentials are never copied; the report lists what is left to do.",
    )
    cmd.add_argument("export", metavar="export.json", help="the JSON file exported by Loom/Coopr")
    cmd.add_argument("--out", metavar="DIR", help="where to write (default: the templates folder)")
    cmd.add_argument(
        "--scripts",
        metavar="DIR",
        help="folder with the shell automator scripts to copy (default: ./scripts beside the export)",
    )
    cmd.add_argument("--force", action="store_true", help="overwrite files that exist already")
    cmd.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    """Run the import and print its report; exit 1 if the written templates have problems."""
    from loom.settings import load_settings
    from loom.spec.importer import import_export

    out = Path(args.out or getattr(args, "templates", None) or load_settings().templates_dir)
    scripts = Path(args.scripts) if args.scripts else None
    report = import_export(Path(args.export), out, scripts_from=scripts, force=args.force)
    for line in report.lines():
        print(line)
    if report.problems:
        print(
            f"{len(report.problems)} problem(s) in {out}: fix them, then run `loom templates validate`",
            file=sys.stderr,
        )
        return 1
    print(f"{out}: imported; see 'TO DO before use' above" if report.todo else f"{out}: imported")
    return 0
