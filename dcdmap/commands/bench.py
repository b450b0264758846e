"""``dcdmap bench``: ExtentMap against its peers, and (``--suite``) the pytest-benchmark suite.

The peer comparison is :mod:`dcdmap.bench.peers`, the same code ``benchmarks/compare_peers.py``
runs, so it works from an installed dcdmap; this command prints its summary table (one row
per operation: dcdmap's time, each installed peer's time and the ratio).  ``--suite`` also
runs the pytest-benchmark suite, which only the source tree has (``benchmarks/``).

Nothing here asserts on speed: the command reports, people and the benchmark goals judge.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..errors import DcdmapError
from . import count

HELP = "time ExtentMap against numpy, SortedDict, ncls, ... and print the table"
DESCRIPTION = """\
Measure dcdmap's ExtentMap and its peers on the same seeded extents and queries, in one
process, and print one table: per operation, dcdmap's time, each peer's time and the ratio
peer / dcdmap (above 1: dcdmap is faster).  Peers: numpy searchsorted (a dependency),
sortedcontainers SortedDict, ncls, superintervals and intervaltree; a peer that is not
installed is skipped and named (pip install 'dcdmap[bench]' installs them all).

Every answer is checked against numpy's; a wrong answer from dcdmap is an error (exit 1).
The default run (10^5 extents, best of 3) takes under a minute on two cores.  --suite then
runs the pytest-benchmark suite of the source tree (benchmarks/) at the same sizes."""
EXAMPLES = """\
  dcdmap bench                                  the peer comparison at 1e5 extents (< 1 min)
  dcdmap bench --sizes 1e4,1e6 --repeat 5       two sizes, best of 5 (1e6: a few minutes)
  dcdmap bench --markdown peers.md --json peers.json
                                                also write the full report and its raw data
  dcdmap bench --sizes 1e4 --suite              then the pytest-benchmark suite at 1e4
                                                (needs the source tree's benchmarks/ folder)
"""

#: The sizes the pytest-benchmark suite has (benchmarks/data.py: 10^7 only when asked).
SUITE_SIZES = [10**3, 10**4, 10**5, 10**6, 10**7]
SUITE_FILES = ("conftest.py", "data.py", "test_bench_extentmap.py")


def size_list(text: str) -> list[int]:
    """An argparse type: extent counts separated by commas, '1e4,1e6' -> [10000, 1000000]."""
    items = [x.strip() for x in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: give extent counts separated by commas, "
                                         "e.g. 1e4,1e6")
    return [count(x) for x in items]


def add_arguments(p) -> None:
    p.add_argument("--sizes", type=size_list, default=[10**5], metavar="N[,N...]",
                   help="extent counts to measure, e.g. 1e4,1e6 (default 1e5)")
    p.add_argument("--repeat", type=count, default=3, metavar="N",
                   help="runs per measurement, the best is kept (default 3; slow peers run at most 2)")
    p.add_argument("--queries", type=count, default=10**6, metavar="N",
                   help="addresses per batch call, translate_many / contains_many (default 1e6)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed of the extents and queries (default: the benchmarks' seed)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the full report (method, machine, goals, every variant, notes)")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    p.add_argument("--suite", action="store_true",
                   help="then run the pytest-benchmark suite in the source tree's benchmarks/")


def main(args) -> int:
    # Everything that can fail fast is checked before a minute of measuring.
    for path in (args.markdown, args.json):
        if path and os.path.isdir(path):
            raise DcdmapError(f"{path} is a directory: --markdown and --json take a file name")
    suite = find_suite(args.sizes) if args.suite else None

    from ..bench.peers import OPS, Settings, compare
    from ..progress import Progress

    settings = Settings(queries=args.queries, repeat=args.repeat)
    if args.seed is not None:
        settings.seed = args.seed
    with Progress(len(args.sizes) * len(OPS), "dcdmap bench") as bar:
        report = compare(args.sizes, settings, step=lambda op: bar.advance())
    print(report.table())
    report.write(args.markdown, args.json)
    for what, path in (("report", args.markdown), ("data", args.json)):
        if path:
            print(f"Wrote the {what} to {path}.")
    wrong = report.wrong()
    if wrong:
        raise DcdmapError("dcdmap's answer differed from numpy's in "
                          + ", ".join(sorted({f"{r['op']} at {r['n']:,}" for r in wrong})))
    if suite is not None:
        sys.stdout.flush()              # our table first, then the subprocess's output
        return run_suite(*suite)
    return 0


# ------------------------------------------------------------------ the pytest-benchmark suite

def suite_candidates() -> list[Path]:
    """Where benchmarks/ may be: beside the package (an editable install or a checkout), then
    in the current directory."""
    package = Path(__file__).resolve().parent.parent
    return [package.parent / "benchmarks", Path.cwd() / "benchmarks"]


def find_suite(sizes: list[int]) -> tuple[Path, list[str], bool]:
    """(the benchmarks folder, the suite's size ids among ``sizes``, whether 10^7 is asked);
    a :class:`DcdmapError` saying what is missing if the suite cannot run."""
    folder = next((d for d in suite_candidates() if all((d / f).is_file() for f in SUITE_FILES)),
                  None)
    if folder is None:
        raise DcdmapError("--suite needs the benchmarks/ folder of a dcdmap source tree, and there "
                          "is none beside the package or in the current directory; run it from a "
                          "checkout")
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise DcdmapError("--suite needs pytest-benchmark: pip install 'dcdmap[bench]'")
    ids = [f"1e{len(str(n)) - 1}" for n in sizes if n in SUITE_SIZES]
    if not ids:
        raise DcdmapError("the benchmark suite has the sizes 1e3, 1e4, 1e5, 1e6 and 1e7 only; "
                          "give one of them in --sizes")
    return folder, ids, 10**7 in sizes


def run_suite(folder: Path, ids: list[str], large: bool) -> int:
    """Run the suite at the given size ids; its output (the benchmark tables) goes straight
    to ours.  A failed benchmark (a wrong answer) is an error."""
    cmd = [sys.executable, "-m", "pytest", str(folder), "--benchmark-only", "-q",
           "-k", " or ".join(ids), "--benchmark-columns=min,median,mean,rounds"]
    env = dict(os.environ)
    if large:
        env["DCDMAP_BENCH_LARGE"] = "1"       # the suite has 10^7 only when asked
    print(f"\nThe pytest-benchmark suite at {', '.join(ids)} (times in the unit each table names):\n"
          f"  {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    # From the repository root, so pytest finds the project's configuration.
    rc = subprocess.call(cmd, cwd=folder.parent, env=env)
    if rc != 0:
        raise DcdmapError(f"the benchmark suite failed (pytest exit status {rc}); see its output above")
    return 0
