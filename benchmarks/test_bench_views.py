"""pytest-benchmark suite of the reconstruction engine (TagView, verify_views, SharingIndex,
compose, Chain): one group per operation, sizes 10^3 .. 10^6 (10^7 with DCDMAP_BENCH_LARGE=1).

    python -m pytest benchmarks/ --benchmark-only
    python -m pytest benchmarks/test_bench_views.py --benchmark-only --benchmark-group-by=group

Data: views_data.py (seeded).  What n counts, per group:

* ``tagview build shuffled``: n extents with sequence numbers, shuffled arrival order, host
  addresses disjoint (64 B .. 2 MiB, gaps 0 .. 256 KiB); one round = one TagView(...).
* ``tagview translate_many`` / ``tagview reverse_many``: a view of n extents, 10^6 queries
  (``DCDMAP_BENCH_QUERIES``): logical offsets uniform over the view / host addresses uniform
  over the host span (~39 % in gaps, ``missing=``).
* ``verify_views``: 8 hosts with n / 8 extents each (n in total) of one shared allocation,
  each host cut at its own breakpoints, with a media map per host (~2 n / 8 extents each);
  ``consistent`` and ``corrupted`` (two sequence numbers swapped on one host).
* ``sharing add_many``: n ranges over 64 hosts (mean depth 8) into an empty SharingIndex;
  ``sharing holders_many``: 10^6 addresses against an index of n ranges.
* ``compose``: two maps of n extents (VA -> GPA, GPA -> HPA).
* ``chain translate_many``: 10^6 VA addresses (~39 % unmapped) through 2 or 3 maps of n
  extents (VA -> GPA -> HPA [-> DPA]).

Every benchmark checks its result once against the layout the generator knows or a numpy
computation.  ``extra_info`` holds ``n`` and ``ops`` (operations per round).
"""
from __future__ import annotations


import numpy as np
import pytest

import data
import views_data as vd
from data import QUERIES, SIZES, LazySizeData, size_id
from dcdmap import Chain, ExtentMap, SharingIndex, TagView, compose, verify_views

HOSTS = 8
SHARING_HOSTS = 64
MISSING = data.MISSING


class ViewSizeData(LazySizeData):
    """The data of one size, built lazily and once."""

    def rounds(self, small: int, big: int, huge: int) -> int:
        return small if self.n <= 10**5 else big if self.n <= 10**6 else huge

    # tag views
    @property
    def view_data(self) -> vd.ViewData:
        return self._get("view_data", lambda: vd.view_data(self.n))

    @property
    def view(self) -> TagView:
        v = self.view_data
        return self._get("view", lambda: TagView(v.starts, v.lengths, seqs=v.seqs))

    # cross-host
    @property
    def cross(self):
        def make():
            per = max(2, self.n // HOSTS)
            ch = vd.cross_host(HOSTS, per)
            views = [TagView(x.starts, x.lengths, seqs=x.seqs) for x in ch.views]
            media = [ExtentMap.from_arrays(*m) for m in ch.media_maps]
            rng = np.random.default_rng(data.DEFAULT_SEED + 40)
            h = int(rng.integers(HOSTS))
            bad, offset = vd.corrupt(ch.views[h], rng)
            bad_views = list(views)
            bad_views[h] = TagView(bad.starts, bad.lengths, seqs=bad.seqs)
            return views, bad_views, media, offset, HOSTS * per
        return self._get("cross", make)

    # sharing
    @property
    def sharing(self) -> vd.SharingData:
        return self._get("sharing", lambda: vd.sharing_ranges(self.n, nhosts=SHARING_HOSTS))

    @property
    def sharing_merged(self) -> list:
        s = self.sharing
        return self._get("sharing_merged",
                         lambda: vd.per_host(s.hosts, s.starts, s.starts + s.lengths, SHARING_HOSTS))

    @property
    def sharing_index(self) -> SharingIndex:
        def make():
            s = self.sharing
            idx = SharingIndex()
            idx.add_many(s.hosts, s.starts, s.lengths)
            return idx
        return self._get("sharing_index", make)

    # chains
    @property
    def stages(self) -> list:
        return self._get("stages", lambda: vd.chain_stages(self.n, stages=3))

    @property
    def stage_maps(self) -> list:
        return self._get("stage_maps", lambda: [ExtentMap.from_arrays(*s) for s in self.stages])


@pytest.fixture(scope="session", params=SIZES, ids=[size_id(n) for n in SIZES])
def vsized(request) -> ViewSizeData:
    d = ViewSizeData(request.param)
    yield d
    d.drop()


# ------------------------------------------------------------------ tag views

@pytest.mark.benchmark(group="tagview build shuffled")
def test_tagview_build_shuffled(benchmark, vsized):
    v = vsized.view_data
    benchmark.extra_info.update(n=vsized.n, ops=vsized.n)
    view = benchmark.pedantic(TagView, args=(v.starts, v.lengths), kwargs=dict(seqs=v.seqs),
                              rounds=vsized.rounds(20, 5, 3), iterations=1, warmup_rounds=0)
    s = view.segments()
    assert np.array_equal(s.logical_starts, v.logical_starts)
    assert np.array_equal(s.host_starts, v.host_starts)
    assert np.array_equal(s.lengths, v.seg_lengths)


@pytest.mark.benchmark(group="tagview translate_many")
def test_tagview_translate_many(benchmark, vsized):
    v, view = vsized.view_data, vsized.view
    q = vd.view_queries(v, QUERIES, data.DEFAULT_SEED + 32)
    benchmark.extra_info.update(n=vsized.n, ops=len(q))
    out = benchmark(view.translate_many, q)
    i = np.searchsorted(v.logical_starts, q, "right") - 1
    assert np.array_equal(out, v.host_starts[i] + (q - v.logical_starts[i]))


@pytest.mark.benchmark(group="tagview reverse_many")
def test_tagview_reverse_many(benchmark, vsized):
    v, view = vsized.view_data, vsized.view
    q = vd.host_queries(v, QUERIES, data.DEFAULT_SEED + 33)
    benchmark.extra_info.update(n=vsized.n, ops=len(q))
    out = benchmark(view.reverse_many, q, missing=MISSING)
    o = np.argsort(v.host_starts)
    expected, _ = vd.translate_numpy(v.host_starts[o], v.seg_lengths[o], v.logical_starts[o], q)
    assert np.array_equal(out, expected)


# ------------------------------------------------------------------ verify_views

@pytest.mark.benchmark(group="verify_views")
@pytest.mark.parametrize("case", ["consistent", "corrupted"])
def test_verify_views(benchmark, vsized, case):
    views, bad_views, media, offset, total = vsized.cross
    benchmark.extra_info.update(n=total, ops=total, hosts=HOSTS)
    r = benchmark.pedantic(verify_views, args=(views if case == "consistent" else bad_views, media),
                           rounds=vsized.rounds(10, 5, 2), iterations=1, warmup_rounds=0)
    if case == "consistent":
        assert r.consistent, r.reason
    else:
        assert not r.consistent and r.offset == offset, (r.offset, offset, r.reason)


# ------------------------------------------------------------------ sharing

@pytest.mark.benchmark(group="sharing add_many")
def test_sharing_add_many(benchmark, vsized):
    s = vsized.sharing
    benchmark.extra_info.update(n=vsized.n, ops=vsized.n, hosts=SHARING_HOSTS)

    def build():
        idx = SharingIndex()
        idx.add_many(s.hosts, s.starts, s.lengths)
        return idx
    idx = benchmark.pedantic(build, rounds=vsized.rounds(10, 3, 1), iterations=1, warmup_rounds=0)
    for h, (ms, me) in enumerate(vsized.sharing_merged):
        r = idx.held_by(h)
        assert np.array_equal(r.starts, ms) and np.array_equal(r.lengths, me - ms), h


@pytest.mark.benchmark(group="sharing holders_many")
def test_sharing_holders_many(benchmark, vsized):
    s, idx = vsized.sharing, vsized.sharing_index
    q = np.random.default_rng(data.DEFAULT_SEED + 50).integers(s.lo, s.hi, QUERIES, dtype=np.uint64)
    benchmark.extra_info.update(n=vsized.n, ops=len(q), hosts=SHARING_HOSTS)
    out = benchmark(idx.holders_many, q)
    assert np.array_equal(out, vd.holders_numpy(vsized.sharing_merged, q))


# ------------------------------------------------------------------ compose and chains

@pytest.mark.benchmark(group="compose")
def test_compose(benchmark, vsized):
    a, b = vsized.stages[0], vsized.stages[1]
    ma, mb = vsized.stage_maps[0], vsized.stage_maps[1]
    benchmark.extra_info.update(n=vsized.n, ops=vsized.n)
    out = benchmark.pedantic(compose, args=(ma, mb), rounds=vsized.rounds(20, 7, 3), iterations=1,
                             warmup_rounds=0)
    x = out.to_arrays()
    expected = vd.compose_numpy(a[0], a[1], a[2], a[3], b[0], b[1], b[2])
    for got, exp in zip((x.starts, x.lengths, x.targets, x.labels), expected):
        assert np.array_equal(got, exp)


@pytest.mark.benchmark(group="chain translate_many")
@pytest.mark.parametrize("nmaps", [2, 3], ids=["2maps", "3maps"])
def test_chain_translate_many(benchmark, vsized, nmaps):
    stages = vsized.stages[:nmaps]
    chain = Chain(vsized.stage_maps[:nmaps])
    q = vd.chain_queries(stages, QUERIES, data.DEFAULT_SEED + 60)
    benchmark.extra_info.update(n=vsized.n, ops=len(q), maps=nmaps)
    out = benchmark(chain.translate_many, q, missing=MISSING)
    assert np.array_equal(out, vd.chain_numpy(stages, q))
