"""dcdmap's ExtentMap against its peers, on the same data and queries, in one process.

    python benchmarks/compare_peers.py                                 # 10^3 .. 10^6, 4-5 min
    python benchmarks/compare_peers.py --sizes 1e6 --repeat 5 \\
        --markdown benchmarks/results/compare_peers.md --json benchmarks/results/compare_peers.json

A thin script: the measurements live in the package, :mod:`dcdmap.bench.peers` (whose
docstring says how each peer is called and how the timing is done), so that ``dcdmap bench``
runs the same comparison from an installed dcdmap.  This script prints the progress lines and
the full Markdown report, and writes it (``--markdown``) and its data (``--json``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Benchmark the working tree (the extension is built in place), whatever the current directory.
for _p in (str(HERE.parent), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from dcdmap.bench.data import DEFAULT_SEED  # noqa: E402
from dcdmap.bench.peers import (  # noqa: E402
    Case, Settings, compare, fmt_per, fmt_time, machine, measure,
)

# views_goals.py measures the same way: it imports these from here.
__all__ = ["Case", "fmt_per", "fmt_time", "machine", "measure", "main"]


def parse_sizes(s: str) -> list[int]:
    return [int(float(x)) for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6", help="extent counts, e.g. 1e3,1e6")
    ap.add_argument("--queries", default="1e6", help="batch queries per translate_many call")
    ap.add_argument("--scalar-queries", default="5e4", help="calls per scalar-loop measurement")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept); slow peers run at most 2")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--intervaltree-max", default="1e5", help="largest intervaltree built")
    ap.add_argument("--markdown", metavar="FILE")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    settings = Settings(queries=int(float(args.queries)), scalar_queries=int(float(args.scalar_queries)),
                        repeat=args.repeat, seed=args.seed,
                        intervaltree_max=int(float(args.intervaltree_max)))

    def log(msg):
        print(msg, flush=True)

    report = compare(parse_sizes(args.sizes), settings, log=log)
    print()
    print(report.render())
    print(f"(total {fmt_time(report.meta['seconds'])})")
    report.write(args.markdown, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
