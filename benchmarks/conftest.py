"""Fixtures of the pytest-benchmark suite (benchmarks/test_bench_extentmap.py).

Run from the repository root::

    python -m pytest benchmarks/ --benchmark-only
    DCDMAP_BENCH_LARGE=1 python -m pytest benchmarks/ --benchmark-only     # adds 10^7

The suite lives outside pytest's ``testpaths`` (``tests``, ``dcdmap``), so a plain ``pytest``
never collects it.  Sizes are powers of ten: 10^3 .. 10^6, and 10^7 with
``DCDMAP_BENCH_LARGE=1``.  Everything that is costly to build (extents, maps, queries) is
built once per size: the ``n`` fixture is session-scoped, so pytest runs all benchmarks of
one size together and drops that size's data before building the next.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
# Benchmark the working tree (the extension is built in place), and let the suite import
# data.py whichever directory pytest was started from.
for p in (str(HERE.parent), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import data  # noqa: E402
from dcdmap import ExtentMap  # noqa: E402

from data import QUERIES, SIZES, LazySizeData, size_id  # noqa: E402
SCALAR_CALLS = 1000        # scalar calls per benchmarked round (report divides by it)


class SizeData(LazySizeData):
    """Everything the benchmarks of one size share; built lazily, once."""

    @property
    def rounds(self) -> int:
        """Rounds of the benchmarks that need a fresh copy of a map per round."""
        return 20 if self.n <= 10**5 else 7 if self.n <= 10**6 else 3

    @property
    def extents(self) -> data.Extents:
        return self._get("extents", lambda: data.make_extents(self.n))

    @property
    def map(self) -> ExtentMap:
        """A map of ``extents`` built by from_arrays: read-only benchmarks share it."""
        return self._get("map", lambda: ExtentMap.from_arrays(*self.extents))

    @property
    def queries(self) -> np.ndarray:
        return self._get("queries", lambda: data.uniform_queries(self.extents, QUERIES))

    @property
    def sorted_queries(self) -> np.ndarray:
        return self._get("sorted_queries", lambda: np.sort(self.queries))

    @property
    def expected(self) -> np.ndarray:
        return self._get("expected", lambda: data.reference_translate(self.extents, self.queries))

    @property
    def scalar_queries(self) -> list:
        return self._get("scalar_queries", lambda: self.queries[:SCALAR_CALLS].tolist())

    @property
    def scalar_hits(self) -> list:
        return self._get("scalar_hits", lambda: data.hit_queries(self.extents, SCALAR_CALLS).tolist())

    @property
    def mutation(self):
        """(base map, extra extents, victim extents) for insert/remove benchmarks: the base
        map holds n extents, extra holds n // 10 others that fit between them, victims are
        n // 10 extents of the base."""
        def make():
            base, extra = data.split_for_mutation(self.n, max(1, self.n // 10))
            return ExtentMap.from_arrays(*base), extra, data.random_victims(base, max(1, self.n // 10))
        return self._get("mutation", make)

    @property
    def shuffled(self) -> data.Extents:
        return self._get("shuffled", lambda: data.shuffled(self.extents))

    @property
    def pairs_map(self) -> ExtentMap:
        return self._get("pairs_map", lambda: ExtentMap.from_arrays(*data.split_pairs(self.n)))


@pytest.fixture(scope="session", params=SIZES, ids=[size_id(n) for n in SIZES])
def sized(request) -> SizeData:
    """The data of one size; parametrizes every benchmark over SIZES."""
    d = SizeData(request.param)
    yield d
    d.drop()
