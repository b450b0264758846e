"""pytest-benchmark suite of ExtentMap: one group per operation, sizes 10^3 .. 10^6
(10^7 with DCDMAP_BENCH_LARGE=1).

    python -m pytest benchmarks/ --benchmark-only
    python -m pytest benchmarks/ --benchmark-only --benchmark-group-by=group --benchmark-sort=name

Workload: see data.py (64-byte-aligned extents of 64 B .. 2 MiB, gaps of 0 .. 256 KiB, 48-bit
addresses; queries uniform over the mapped span, ~39 % of them in gaps).  Each benchmark
checks its result once, against numpy or an invariant, so a fast wrong answer fails.

Units: the batch groups time one call over the whole input (translate_many: 10^6 queries,
``DCDMAP_BENCH_QUERIES`` to change); the scalar groups time a Python loop of 1000 calls
(divide by 1000 for a call); the mutation groups time n // 10 operations (or 1000 scalar
calls, whichever is smaller) on a fresh copy of the map each round; ``extra_info`` holds
the operation count of a round as ``ops``.
"""
from __future__ import annotations

import numpy as np
import pytest

import data
from dcdmap import ExtentMap

SCALAR_MUTATIONS = 1000     # at most this many scalar inserts/removes per round


def _scalar_batch(n_ops: int) -> int:
    return min(SCALAR_MUTATIONS, n_ops)


# ------------------------------------------------------------------ batch queries

@pytest.mark.benchmark(group="translate_many random")
def test_translate_many_random(benchmark, sized):
    m, q = sized.map, sized.queries
    benchmark.extra_info.update(n=sized.n, ops=len(q))
    out = benchmark(m.translate_many, q, missing=data.MISSING)
    assert np.array_equal(out, sized.expected)


@pytest.mark.benchmark(group="translate_many sorted")
def test_translate_many_sorted(benchmark, sized):
    m, q = sized.map, sized.sorted_queries
    benchmark.extra_info.update(n=sized.n, ops=len(q))
    out = benchmark(m.translate_many, q, missing=data.MISSING)
    assert np.array_equal(out, data.reference_translate(sized.extents, q))


# ------------------------------------------------------------------ scalar queries

@pytest.mark.benchmark(group="scalar lookup (1000 calls)")
def test_scalar_lookup(benchmark, sized):
    m, qs = sized.map, sized.scalar_queries
    benchmark.extra_info.update(n=sized.n, ops=len(qs))

    def run():
        lookup = m.lookup
        for a in qs:
            lookup(a)
    benchmark(run)
    hits = sum(m.lookup(a) is not None for a in qs)
    assert hits == int(np.count_nonzero(sized.expected[:len(qs)] != data.MISSING))


@pytest.mark.benchmark(group="scalar translate (1000 calls)")
def test_scalar_translate(benchmark, sized):
    m, qs = sized.map, sized.scalar_hits
    benchmark.extra_info.update(n=sized.n, ops=len(qs))

    def run():
        translate = m.translate
        for a in qs:
            translate(a)
    benchmark(run)
    got = np.array([m.translate(a) for a in qs], dtype=np.uint64)
    assert np.array_equal(got, data.reference_translate(sized.extents, np.array(qs, dtype=np.uint64)))


# ------------------------------------------------------------------ mutations

@pytest.mark.benchmark(group="scalar insert (<=1000 calls)")
def test_scalar_insert(benchmark, sized):
    base, extra, _ = sized.mutation
    k = _scalar_batch(len(extra))
    rows = list(zip(*(a[:k].tolist() for a in extra)))
    benchmark.extra_info.update(n=sized.n, ops=k)

    def run(m):
        insert = m.insert
        for s, ln, t, lab in rows:
            insert(s, ln, t, lab)
        return m
    m = benchmark.pedantic(run, setup=lambda: ((base.copy(),), {}), rounds=sized.rounds)
    assert len(m) == len(base) + k


@pytest.mark.benchmark(group="scalar remove (<=1000 calls)")
def test_scalar_remove(benchmark, sized):
    base, _, victims = sized.mutation
    k = _scalar_batch(len(victims))
    rows = list(zip(victims.starts[:k].tolist(), victims.lengths[:k].tolist()))
    benchmark.extra_info.update(n=sized.n, ops=k)

    def run(m):
        remove = m.remove
        for s, ln in rows:
            remove(s, ln)
        return m
    m = benchmark.pedantic(run, setup=lambda: ((base.copy(),), {}), rounds=sized.rounds)
    assert len(m) == len(base) - k


@pytest.mark.benchmark(group="insert_many (n/10 into n)")
def test_insert_many(benchmark, sized):
    base, extra, _ = sized.mutation
    benchmark.extra_info.update(n=sized.n, ops=len(extra))

    def run(m):
        m.insert_many(*extra)
        return m
    m = benchmark.pedantic(run, setup=lambda: ((base.copy(),), {}), rounds=sized.rounds)
    assert len(m) == len(base) + len(extra)


@pytest.mark.benchmark(group="remove_many (n/10 from n)")
def test_remove_many(benchmark, sized):
    base, _, victims = sized.mutation
    benchmark.extra_info.update(n=sized.n, ops=len(victims))

    def run(m):
        return m.remove_many(victims.starts, victims.lengths)
    gone = benchmark.pedantic(run, setup=lambda: ((base.copy(),), {}), rounds=sized.rounds)
    assert gone == int(victims.lengths.sum())


# ------------------------------------------------------------------ whole-map operations

@pytest.mark.benchmark(group="from_arrays (shuffled)")
def test_from_arrays(benchmark, sized):
    sh = sized.shuffled
    benchmark.extra_info.update(n=sized.n, ops=len(sh))
    m = benchmark.pedantic(ExtentMap.from_arrays, args=tuple(sh), rounds=sized.rounds)
    assert m == sized.map


@pytest.mark.benchmark(group="to_arrays")
def test_to_arrays(benchmark, sized):
    m = sized.map
    benchmark.extra_info.update(n=sized.n, ops=len(m))
    out = benchmark(m.to_arrays)
    assert np.array_equal(out.starts, sized.extents.starts)
    assert np.array_equal(out.lengths, sized.extents.lengths)


@pytest.mark.benchmark(group="coalesce (n/2 merges)")
def test_coalesce(benchmark, sized):
    pairs = sized.pairs_map
    benchmark.extra_info.update(n=sized.n, ops=len(pairs))
    merges = benchmark.pedantic(lambda m: m.coalesce(), setup=lambda: ((pairs.copy(),), {}),
                                rounds=sized.rounds)
    assert merges >= len(pairs) // 2


@pytest.mark.benchmark(group="find_free (1000 calls, 64 KiB, align 4 KiB)")
def test_find_free(benchmark, sized):
    m = sized.map
    lo = sized.queries[:1000].tolist()
    benchmark.extra_info.update(n=sized.n, ops=len(lo))

    def run():
        find_free = m.find_free
        return [find_free(64 << 10, 4096, a) for a in lo]
    found = benchmark(run)
    assert all(f is not None and f >= a and f % 4096 == 0 for f, a in zip(found, lo))
    assert not m.contains_many(np.array(found, dtype=np.uint64)).any()


@pytest.mark.benchmark(group="overlapping (1000 calls, 1 MiB windows)")
def test_overlapping(benchmark, sized):
    m = sized.map
    starts = (sized.queries[:1000] & ~np.uint64(63)).tolist()
    benchmark.extra_info.update(n=sized.n, ops=len(starts))

    def run():
        overlapping = m.overlapping
        return [overlapping(s, 1 << 20) for s in starts]
    res = benchmark(run)
    e = sized.extents
    s0 = starts[0]
    i = np.flatnonzero((e.starts < np.uint64(s0 + (1 << 20))) & (e.ends > np.uint64(s0)))
    assert np.array_equal(res[0].starts, e.starts[i])
