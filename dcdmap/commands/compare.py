"""``dcdmap compare``: (being written)."""
from __future__ import annotations

HELP = "(being written)"
DESCRIPTION = HELP
EXAMPLES = "  dcdmap compare\n"


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    print("dcdmap compare: not written yet")
    return 1
