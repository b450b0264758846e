"""``dcdmap check``: (being written)."""
from __future__ import annotations

HELP = "(being written)"
DESCRIPTION = HELP
EXAMPLES = "  dcdmap check\n"


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    print("dcdmap check: not written yet")
    return 1
