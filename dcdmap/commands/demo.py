"""``dcdmap demo``: a tour of the engine on a million extents.

Builds a map the way a CXL host holds its extents (64-byte granular ranges of device
physical address, each translating to a host address and carrying a tag index), then
translates a million addresses in one batch and checks the answers against numpy.
"""

from __future__ import annotations

import time

import numpy as np

from .._core import ExtentMap
from ..units import format_size
from . import count


def make_extents(n: int, seed: int = 0):
    """n disjoint extents in shuffled order: 64 B – 2 MiB long, gaps of 0 – 256 KiB, 48-bit DPAs."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(1), np.log(32768), n)).astype(np.uint64) * 64
    gaps = rng.integers(0, 4097, n, dtype=np.uint64) * 64
    starts = np.cumsum(lengths + gaps, dtype=np.uint64) - lengths + (1 << 40)
    targets = rng.integers(0, 1 << 40, n, dtype=np.uint64) & ~np.uint64(63)
    labels = rng.integers(0, 16, n, dtype=np.uint32)
    order = rng.permutation(n)
    return starts[order], lengths[order], targets[order], labels[order]


HELP = "a tour of the extent engine on a million extents"
DESCRIPTION = ("Build a map of N shuffled extents, translate random addresses in one batch, "
               "and check the answers against numpy.")
EXAMPLES = """\
  dcdmap demo                              a million extents, a million translations
  dcdmap demo --extents 1e7 --queries 1e6  ten million extents
"""


def add_arguments(p) -> None:
    p.add_argument("--extents", type=count, default=1_000_000, help="extents to build (default 1e6)")
    p.add_argument("--queries", type=count, default=1_000_000, help="addresses to translate (default 1e6)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def main(args) -> int:
    tour(args.extents, args.queries, args.seed)
    return 0


def tour(n: int = 1_000_000, queries: int = 1_000_000, seed: int = 0, out=print) -> None:
    starts, lengths, targets, labels = make_extents(n, seed)
    t0 = time.perf_counter()
    m = ExtentMap.from_arrays(starts, lengths, targets, labels)
    t_build = time.perf_counter() - t0
    out(f"built {len(m):,} extents ({format_size(m.mapped_bytes, exact=False)} mapped) from shuffled arrays "
        f"in {t_build * 1e3:.0f} ms; {m.nbytes / len(m):.1f} bytes per extent")

    first = m[0]
    out(f"first extent: {first}")
    out(f"translate({first.start + 64:#x}) = {m.translate(first.start + 64):#x}")

    rng = np.random.default_rng(seed + 1)
    lo, hi = m[0].start, m[-1].end
    q = rng.integers(lo, hi, queries, dtype=np.uint64)
    t0 = time.perf_counter()
    got = m.translate_many(q, missing=0)
    t_batch = time.perf_counter() - t0

    a = m.to_arrays()               # numpy's answer, to check and to compare speed with
    t0 = time.perf_counter()
    i = np.searchsorted(a.starts, q, "right") - 1
    ok = (i >= 0) & (q < a.starts[i] + a.lengths[i])
    want = np.where(ok, a.targets[i] + (q - a.starts[i]), 0)
    t_numpy = time.perf_counter() - t0
    assert np.array_equal(got, want), "engine and numpy disagree"
    out(f"translate_many of {queries:,} random addresses ({ok.mean():.0%} mapped): "
        f"{t_batch * 1e3:.1f} ms, numpy.searchsorted {t_numpy * 1e3:.1f} ms "
        f"({t_numpy / t_batch:.1f}x), answers identical")

    gone = m.remove(first.start, first.length)
    out(f"removed {gone} bytes; {len(m):,} extents left; round trip through bytes: "
        f"{ExtentMap.from_bytes(m.to_bytes()) == m}")
