"""The ``dcdmap`` command.

    dcdmap demo [--extents N] [--queries N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys

from .errors import DcdmapError


def _count(text: str) -> int:
    """An int from '1000000', '1e6' or '1_000_000'."""
    try:
        value = float(text) if any(c in text for c in "eE.") else int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcdmap", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="a tour of the extent engine on a million extents",
                          description="Build a map of N shuffled extents, translate random "
                                      "addresses in one batch, compare with numpy.",
                          epilog="example: dcdmap demo --extents 1e7 --queries 1e6")
    demo.add_argument("--extents", type=_count, default=1_000_000, help="extents to build (default 1e6)")
    demo.add_argument("--queries", type=_count, default=1_000_000, help="addresses to translate (default 1e6)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from . import demo as demo_module
            demo_module.run(args.extents, args.queries, args.seed)
    except DcdmapError as e:
        print(f"dcdmap: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
