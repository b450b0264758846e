"""The ``dcdmap`` subcommands, one module each.

Every module defines ``HELP`` (one line for the command list), ``DESCRIPTION``, ``EXAMPLES``
(shown under ``--help``), ``add_arguments(parser)`` and ``main(args) -> int`` (the exit
status).  Heavy imports happen inside ``main``, so ``dcdmap --help`` stays fast.
:mod:`dcdmap.cli` collects them; errors from dcdmap's hierarchy and unreadable files are
turned into one line on stderr there, never a traceback.
"""
from __future__ import annotations

import argparse

#: Subcommand name -> module name, in the order ``dcdmap --help`` lists them.
COMMANDS = {
    "compare": "compare",
    "replay": "replay",
    "check": "check",
    "bench": "bench",
    "demo": "demo",
}


def count(text: str) -> int:
    """An argparse type: a positive int from '1000000', '1e6' or '1_000_000'."""
    try:
        value = float(text) if any(c in text for c in "eE.") else int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def size(text: str) -> int:
    """An argparse type: a byte size from '64GiB', '512M' or '1073741824'."""
    from ..errors import DcdmapError
    from ..units import parse_size
    try:
        return parse_size(text)
    except (DcdmapError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
