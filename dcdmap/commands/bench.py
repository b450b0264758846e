"""``dcdmap bench``: (being written)."""
from __future__ import annotations

HELP = "(being written)"
DESCRIPTION = HELP
EXAMPLES = "  dcdmap bench\n"


def add_arguments(p) -> None:
    pass


def main(args) -> int:
    print("dcdmap bench: not written yet")
    return 1
