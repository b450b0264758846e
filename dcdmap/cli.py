"""The ``dcdmap`` command: ``dcdmap COMMAND [options]``; ``dcdmap COMMAND --help`` for each.

Bad input never ends in a traceback: errors of dcdmap's hierarchy, unreadable files and
interrupted runs print one line on stderr (``dcdmap: error: ...``) and exit non-zero
(1 for errors, 2 for usage, 130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS
from .errors import DcdmapError


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (each module of :mod:`dcdmap.commands` adds its own)."""
    lines = []
    parser = argparse.ArgumentParser(
        prog="dcdmap", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CXL Dynamic Capacity: pool, hosts and VMs, modelled and measured.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        mod = importlib.import_module(f".commands.{module_name}", __package__)
        p = sub.add_parser(name, help=mod.HELP, description=mod.DESCRIPTION,
                           epilog="examples:\n" + mod.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
        lines.append(f"  {mod.EXAMPLES.splitlines()[0].strip()}")
    parser.epilog = "examples:\n" + "\n".join(lines)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except DcdmapError as e:
        print(f"dcdmap {args.command}: error: {e}", file=sys.stderr)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"dcdmap {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"dcdmap {args.command}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
