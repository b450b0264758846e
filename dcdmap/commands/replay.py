"""``dcdmap replay``: (being written)."""
from __future__ import annotations

HELP = "(being written)"
DESCRIPTION = HELP
EXAMPLES = "  dcdmap replay\n"


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    print("dcdmap replay: not written yet")
    return 1
