"""Seeded data for dcdmap's benchmarks, shared by the pytest-benchmark suites,
``compare_peers.py`` and ``scale_1e8.py``.

The workload itself (extents, queries, the numpy reference, the report writer) lives in the
package, :mod:`dcdmap.bench.data`, so that ``dcdmap bench`` runs it from an installed
dcdmap too; it is re-exported here under the names the scripts and suites use.  What only
the suites need (their sizes, size ids and lazily built per-size data) is defined below.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from dcdmap.bench.data import (
    BASE, DEFAULT_SEED, GRANULE, MAX_GAP_GRANULES, MAX_LEN_GRANULES, MISSING, NUM_LABELS,
    TARGET_BASE, Extents, engine_build, hit_queries, iter_extent_chunks, make_extents,
    random_victims, reference_translate, searchsorted_translate, shuffled, span,
    split_for_mutation, split_pairs, uniform_queries, write_reports,
)

__all__ = [
    # the workload, re-exported from dcdmap.bench.data
    "BASE", "DEFAULT_SEED", "GRANULE", "MAX_GAP_GRANULES", "MAX_LEN_GRANULES", "MISSING",
    "NUM_LABELS", "TARGET_BASE", "Extents", "engine_build", "hit_queries", "iter_extent_chunks",
    "make_extents", "random_victims", "reference_translate", "searchsorted_translate", "shuffled",
    "span", "split_for_mutation", "split_pairs", "uniform_queries", "write_reports",
    # the suites' own
    "LARGE", "SIZES", "QUERIES", "size_id", "LazySizeData",
]
# ---------------------------------------------------------------------------------------------
# What only the suites share (the scripts use the workload above)
# ---------------------------------------------------------------------------------------------

LARGE = os.environ.get("DCDMAP_BENCH_LARGE", "") not in ("", "0")
SIZES = [10**3, 10**4, 10**5, 10**6] + ([10**7] if LARGE else [])
QUERIES = int(float(os.environ.get("DCDMAP_BENCH_QUERIES", "1e6")))   # per translate_many call


def size_id(n: int) -> str:
    """A benchmark id for a power of ten: 1000 -> "1e3"."""
    return f"1e{len(str(n)) - 1}"


class LazySizeData:
    """The data of one size, each piece built on first use and kept until ``drop()``."""

    def __init__(self, n: int):
        self.n = n
        self._cache: dict = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def drop(self) -> None:
        """Forget everything built for this size (and the shared extent cache)."""
        self._cache.clear()
        make_extents.cache_clear()
