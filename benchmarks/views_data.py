"""Seeded data for the reconstruction-engine benchmarks (``views_goals.py`` and
``test_bench_views.py``): tag views, cross-host views with media maps, sharing ranges, and
translation chains.  Everything is a function of ``(n, seed)`` through
``numpy.random.default_rng``; the extent shapes follow ``data.py`` (64-byte granules,
lengths 64 B .. 2 MiB log-uniform, gaps 0 .. 256 KiB, addresses below 2**48).

Besides the inputs, each generator returns what the engine should compute, worked out with
numpy alone (the expected layout), so the benchmarks can check every result.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

import data

G = data.GRANULE
U64 = np.uint64
HOST_BASE = 1 << 46            # host address spaces (each host has its own)
MEDIA_BASE = 1 << 44           # device media addresses
HPA_BASE = 1 << 45             # second stage of a chain
DPA_BASE = 1 << 43             # third stage of a chain


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's np.unique hashes, which is several times slower here)."""
    x = np.sort(x)
    if x.shape[0] < 2:
        return x
    keep = np.empty(x.shape[0], bool)
    keep[0] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def distinct_sorted(rng: np.random.Generator, lo: int, hi: int, k: int) -> np.ndarray:
    """k distinct integers of [lo, hi), sorted (uint64)."""
    pop = hi - lo
    if k > pop:
        raise ValueError(f"cannot draw {k} distinct values from {pop}")
    if k == 0:
        return np.empty(0, np.uint64)
    if pop <= 4 * k:
        return np.sort(rng.choice(pop, k, replace=False).astype(np.uint64)) + U64(lo)
    out = sorted_unique(rng.integers(lo, hi, k + k // 16 + 16, dtype=np.uint64))
    while out.shape[0] < k:
        out = sorted_unique(np.concatenate([out, rng.integers(lo, hi, k - out.shape[0] + 16, dtype=np.uint64)]))
    if out.shape[0] > k:
        out = np.sort(rng.choice(out, k, replace=False))
    return out


def cut(rng: np.random.Generator, lo: int, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, lo + size) cut at n - 1 distinct random granule-aligned breakpoints: (starts,
    lengths) of the n pieces, in address order."""
    g = size // G
    bps = distinct_sorted(rng, 1, g, n - 1) * U64(G)
    starts = np.empty(n, np.uint64)
    starts[0] = 0
    starts[1:] = bps
    lengths = np.empty(n, np.uint64)
    lengths[:-1] = np.diff(starts)
    lengths[-1] = U64(size) - starts[-1]
    return starts + U64(lo), lengths


def log_uniform_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """n lengths, 64 B .. 2 MiB, log-uniform in granules (as data.py)."""
    lg = np.floor(np.exp(rng.uniform(0.0, np.log(data.MAX_LEN_GRANULES + 1), n)))
    return np.clip(lg, 1, data.MAX_LEN_GRANULES).astype(np.uint64) * U64(G)


def scatter(rng: np.random.Generator, lengths: np.ndarray, base: int) -> np.ndarray:
    """Start addresses for extents of ``lengths``: laid out from ``base`` in a random order,
    with random gaps of 0 .. 256 KiB (granules) between them; returned in the input order."""
    n = lengths.shape[0]
    order = rng.permutation(n)
    gaps = rng.integers(0, data.MAX_GAP_GRANULES, n, endpoint=True, dtype=np.uint64) * U64(G)
    ln = lengths[order]
    ends = np.cumsum(gaps + ln, dtype=np.uint64) + U64(base)
    out = np.empty(n, np.uint64)
    out[order] = ends - ln
    assert n == 0 or int(ends[-1]) < 1 << 48
    return out


def exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    if x.shape[0]:
        out[0] = 0
        np.cumsum(x[:-1], out=out[1:])
    return out


# ---------------------------------------------------------------------------------------
# tag views
# ---------------------------------------------------------------------------------------

class ViewData(NamedTuple):
    """One host's extents in arrival order, and the layout a view of them must have."""

    starts: np.ndarray          # arrival order
    lengths: np.ndarray
    seqs: np.ndarray            # sequence numbers (a permutation of 0..n-1)
    logical_starts: np.ndarray  # expected layout, in sequence (logical) order
    host_starts: np.ndarray
    seg_lengths: np.ndarray


def view_data(n: int, seed: int = data.DEFAULT_SEED) -> ViewData:
    """n shareable extents: host addresses disjoint and 64-byte granular (data.make_extents:
    lengths 64 B .. 2 MiB, gaps 0 .. 256 KiB), sequence numbers a random permutation of the
    host-address order, arrival order another random permutation."""
    e = data.make_extents(n, seed)
    rng = np.random.default_rng(seed + 100)
    seq_of = rng.permutation(n).astype(np.uint64)     # extent i (host order) has number seq_of[i]
    arrival = rng.permutation(n)
    host = np.empty(n, np.uint64)
    host[seq_of] = e.starts
    lens = np.empty(n, np.uint64)
    lens[seq_of] = e.lengths
    return ViewData(e.starts[arrival], e.lengths[arrival], seq_of[arrival],
                    exclusive_cumsum(lens), host, lens)


def view_queries(v: ViewData, m: int, seed: int) -> np.ndarray:
    """m logical offsets uniform over the view (all mapped)."""
    size = int(v.logical_starts[-1] + v.seg_lengths[-1])
    return np.random.default_rng(seed).integers(0, size, m, dtype=np.uint64)


def host_queries(v: ViewData, m: int, seed: int) -> np.ndarray:
    """m host addresses uniform over [lowest start, highest end): about 39 % in gaps."""
    lo = int(v.host_starts.min())
    hi = int((v.host_starts + v.seg_lengths).max())
    return np.random.default_rng(seed).integers(lo, hi, m, dtype=np.uint64)


class InterleaveData(NamedTuple):
    starts: np.ndarray          # arrival order
    lengths: np.ndarray
    seqs: np.ndarray
    strips: np.ndarray          # strip starts in sequence order
    chunk: int
    strip_len: int


def interleave_data(n: int, seed: int = data.DEFAULT_SEED, strip_len: int = 1 << 18,
                    chunk: int = 1 << 16) -> InterleaveData:
    """n strips of strip_len bytes (disjoint, random gaps), interleaved by chunk, with
    sequence numbers and a random arrival order."""
    rng = np.random.default_rng(seed + 200)
    lens = np.full(n, strip_len, np.uint64)
    starts = scatter(rng, lens, HOST_BASE)            # in sequence order
    arrival = rng.permutation(n)
    return InterleaveData(starts[arrival], lens, arrival.astype(np.uint64), starts, chunk, strip_len)


def interleave_translate(d: InterleaveData, offsets: np.ndarray) -> np.ndarray:
    """The famfs formula, in numpy: chunk c = o / chunk, strip c % n, stripe c / n."""
    n = U64(d.strips.shape[0])
    ch = U64(d.chunk)
    c = offsets // ch
    return d.strips[(c % n).astype(np.intp)] + (c // n) * ch + offsets % ch


# ---------------------------------------------------------------------------------------
# cross-host views
# ---------------------------------------------------------------------------------------

class CrossHost(NamedTuple):
    """hosts views of one shared allocation of `size` bytes, and each host's media map."""

    size: int
    views: list                 # ViewData per host
    media_maps: list            # (host starts, lengths, media targets) per host
    media_starts: np.ndarray    # the allocation's own logical -> media layout (logical order)
    media_targets: np.ndarray


def media_at(ch: CrossHost, offsets: np.ndarray) -> np.ndarray:
    """Where the allocation's logical offsets live on the media (the truth every host must see)."""
    i = np.searchsorted(ch.media_starts, offsets, "right") - 1
    return ch.media_targets[i] + (offsets - ch.media_starts[i])


def cross_host(hosts: int, n: int, seed: int = data.DEFAULT_SEED, mean_len: int = 128 << 10,
               media_pieces: Optional[int] = None) -> CrossHost:
    """One shared allocation of n * mean_len bytes.

    * the media: the allocation cut at ``media_pieces`` (default n) random breakpoints, the
      pieces scattered over the device (random order and gaps);
    * host h: the allocation cut at its own n - 1 random granule-aligned breakpoints; its
      extents are scattered over its own host address space (random order and gaps, base
      ``HOST_BASE + h * 2**40``), sequence numbers = logical order, arrival order random;
    * host h's media map (host address -> media address): the host's extents cut wherever
      the media layout breaks, so ~2n extents per host.
    """
    rng = np.random.default_rng(seed + 300)
    size = n * mean_len
    mp = n if media_pieces is None else media_pieces
    m_starts, m_lens = cut(rng, 0, size, mp)
    m_targets = scatter(rng, m_lens, MEDIA_BASE)
    views, maps = [], []
    for h in range(hosts):
        ls, lens = cut(rng, 0, size, n)
        host = scatter(rng, lens, HOST_BASE + h * (1 << 40))
        arrival = rng.permutation(n)
        views.append(ViewData(host[arrival], lens[arrival], arrival.astype(np.uint64), ls, host, lens))
        p = sorted_unique(np.concatenate([ls, m_starts]))
        plen = np.diff(np.append(p, U64(size)))
        k = np.searchsorted(ls, p, "right") - 1
        j = np.searchsorted(m_starts, p, "right") - 1
        maps.append((host[k] + (p - ls[k]), plen, m_targets[j] + (p - m_starts[j])))
    return CrossHost(size, views, maps, m_starts, m_targets)


def corrupt(v: ViewData, rng: np.random.Generator) -> tuple[ViewData, int]:
    """v with the sequence numbers of two random extents swapped, and the first logical
    offset whose media changes (the logical start of the smaller of the two numbers)."""
    n = v.seqs.shape[0]
    i, j = sorted(int(x) for x in rng.choice(n, 2, replace=False))
    seqs = v.seqs.copy()
    pi = int(np.flatnonzero(seqs == U64(i))[0])
    pj = int(np.flatnonzero(seqs == U64(j))[0])
    seqs[pi], seqs[pj] = U64(j), U64(i)
    return v._replace(seqs=seqs), int(v.logical_starts[i])


# ---------------------------------------------------------------------------------------
# sharing
# ---------------------------------------------------------------------------------------

class SharingData(NamedTuple):
    hosts: np.ndarray           # uint64, 0 .. nhosts - 1
    starts: np.ndarray
    lengths: np.ndarray
    lo: int                     # [lo, hi): where the ranges live
    hi: int


def sharing_ranges(n: int, seed: int = data.DEFAULT_SEED, nhosts: int = 64, depth: float = 8.0) -> SharingData:
    """n ranges (host uniform in 0..nhosts-1, length 64 B .. 2 MiB log-uniform, start a
    uniform granule) over a span sized so that on average ``depth`` ranges cover a byte."""
    rng = np.random.default_rng(seed + 400)
    lengths = log_uniform_lengths(rng, n)
    span_g = max(int(int(lengths.sum()) / G / depth), data.MAX_LEN_GRANULES)
    starts = U64(HOST_BASE) + rng.integers(0, span_g, n, dtype=np.uint64) * U64(G)
    hosts = rng.integers(0, nhosts, n, dtype=np.uint64)
    hi = int((starts + lengths).max())
    return SharingData(hosts, starts, lengths, HOST_BASE, hi)


def merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of half-open ranges as sorted disjoint (starts, ends); touching ranges merge."""
    if starts.shape[0] == 0:
        return starts[:0].copy(), ends[:0].copy()
    o = np.argsort(starts, kind="stable")
    s, e = starts[o], ends[o]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.shape[0], bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], s.shape[0]) - 1
    return s[first], reach[last]


def subtract(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint ranges a minus sorted disjoint ranges b."""
    (as_, ae), (bs, be) = a, b
    if as_.shape[0] == 0 or bs.shape[0] == 0:
        return as_.copy(), ae.copy()
    pts = sorted_unique(np.concatenate([as_, ae, bs, be]))
    x = pts[:-1]
    ia = np.searchsorted(as_, x, "right") - 1
    in_a = (ia >= 0) & (x < ae[np.maximum(ia, 0)])
    ib = np.searchsorted(bs, x, "right") - 1
    in_b = (ib >= 0) & (x < be[np.maximum(ib, 0)])
    keep = in_a & ~in_b
    s, e = x[keep], pts[1:][keep]
    return merge(s, e)


def union2(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    return merge(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))


def per_host(hosts: np.ndarray, starts: np.ndarray, ends: np.ndarray, nhosts: int) -> list:
    """For each host, its ranges merged: [(starts, ends)] (sorted by host, then merged)."""
    o = np.argsort(hosts, kind="stable")
    hs = hosts[o]
    bounds = np.searchsorted(hs, np.arange(nhosts + 1, dtype=np.uint64))
    s, e = starts[o], ends[o]
    return [merge(s[bounds[h]:bounds[h + 1]], e[bounds[h]:bounds[h + 1]]) for h in range(nhosts)]


def holders_numpy(merged: list, q: np.ndarray) -> np.ndarray:
    """Holder bitmasks from per-host merged ranges: one searchsorted per host, OR-ing bits."""
    out = np.zeros(q.shape[0], np.uint64)
    for h, (s, e) in enumerate(merged):
        if s.shape[0] == 0:
            continue
        i = np.searchsorted(s, q, "right") - 1
        hit = (i >= 0) & (q < e[np.maximum(i, 0)])
        out |= hit.astype(np.uint64) << U64(h)
    return out


def coverage_numpy(merged: list) -> list:
    """c[k] = bytes held by exactly k hosts (k = 0..64; c[0] = 0), by a sweep over every
    host's merged ranges."""
    s = np.concatenate([m[0] for m in merged])
    e = np.concatenate([m[1] for m in merged])
    pts = np.concatenate([s, e])
    delta = np.concatenate([np.ones(s.shape[0], np.int64), -np.ones(e.shape[0], np.int64)])
    o = np.argsort(pts, kind="stable")
    pts, delta = pts[o], delta[o]
    depth = np.cumsum(delta)
    seg = np.diff(pts)                    # bytes between event k and k + 1 are at depth[k]
    d = depth[:-1]
    c = np.bincount(d, weights=seg.astype(np.float64), minlength=65) if d.shape[0] else np.zeros(65)
    # exact integer sums (float weights lose bytes above 2**53): sum per depth with numpy ints
    out = [0] * 65
    for k in np.flatnonzero(c):
        if k:
            out[int(k)] = int(seg[d == k].sum(dtype=np.uint64))
    return out


# ---------------------------------------------------------------------------------------
# compose and chains
# ---------------------------------------------------------------------------------------

def chain_stages(n: int, seed: int = data.DEFAULT_SEED, stages: int = 3) -> list[tuple]:
    """``stages`` maps of n extents each, as (starts, lengths, targets, labels) in address order:

    * VA -> GPA: data.make_extents(n) (VA with gaps, GPA packed from data.TARGET_BASE);
    * each later stage cuts the whole span of the previous stage's image (gaps included) at
      n - 1 random granule-aligned breakpoints and scatters the pieces (random order and gaps)
      over the next address space (HPA, then DPA).

    So every address the first stage maps is mapped by every stage."""
    e = data.make_extents(n, seed)
    rng = np.random.default_rng(seed + 500)
    out = [(e.starts, e.lengths, e.targets, e.labels)]
    lo = int(e.targets.min())
    hi = int((e.targets + e.lengths).max())
    bases = [HPA_BASE, DPA_BASE, MEDIA_BASE]
    for k in range(1, stages):
        s, ln = cut(rng, lo, hi - lo, n)
        t = scatter(rng, ln, bases[(k - 1) % len(bases)])
        out.append((s, ln, t, np.zeros(n, np.uint32)))
        lo = int(t.min())
        hi = int((t + ln).max())
    return out


def chain_queries(stages: list, m: int, seed: int) -> np.ndarray:
    """m VA addresses uniform over the first stage's span (about 39 % unmapped)."""
    s, ln = stages[0][0], stages[0][1]
    return np.random.default_rng(seed).integers(int(s[0]), int(s[-1] + ln[-1]), m, dtype=np.uint64)


def translate_numpy(starts, lengths, targets, q, missing=data.MISSING):
    """One stage by searchsorted (starts sorted): translated, or ``missing``."""
    i = np.searchsorted(starts, q, "right").astype(np.intp) - 1
    neg = i < 0
    i[neg] = 0
    hit = (q < starts[i] + lengths[i]) & ~neg
    return np.where(hit, targets[i] + (q - starts[i]), missing), hit


def chain_numpy(stages: list, q: np.ndarray) -> np.ndarray:
    """numpy searchsorted applied stage by stage; a miss at any stage gives data.MISSING."""
    x = q
    ok = np.ones(q.shape[0], bool)
    for s, ln, t, _ in stages:
        x, hit = translate_numpy(s, ln, t, x)
        ok &= hit
    return np.where(ok, x, data.MISSING)


def compose_numpy(a_starts, a_lengths, a_targets, a_labels, b_starts, b_lengths, b_targets):
    """a then b, vectorised: each extent of a is cut wherever an extent of b starts or ends
    inside its image; pieces b does not map are dropped.  a and b sorted by start; the
    result is (starts, lengths, targets, labels) sorted by start.

    The searches run in target order (a's extents sorted by target first, when they are not
    already): numpy's searchsorted is several times faster on sorted keys, and the result is
    then sorted back by start."""
    if a_labels is None:
        a_labels = np.zeros(a_starts.shape[0], np.uint32)
    reorder = a_targets.shape[0] > 1 and bool(np.any(a_targets[1:] < a_targets[:-1]))
    if reorder:
        oa = np.argsort(a_targets)
        a_starts, a_lengths, a_targets, a_labels = a_starts[oa], a_lengths[oa], a_targets[oa], a_labels[oa]
    b_ends = b_starts + b_lengths
    cuts = sorted_unique(np.concatenate([b_starts, b_ends]))
    t0 = a_targets
    t1 = a_targets + a_lengths
    lo = np.searchsorted(cuts, t0, "right")
    hi = np.searchsorted(cuts, t1, "left")
    cnt = (hi - lo + 1).astype(np.intp)
    na = a_starts.shape[0]
    ai = np.repeat(np.arange(na), cnt)
    first = np.cumsum(cnt) - cnt
    k = np.arange(ai.shape[0]) - first[ai]
    x = np.where(k == 0, t0[ai], cuts[np.minimum(lo[ai] + k - 1, cuts.shape[0] - 1)])
    is_last = k == cnt[ai] - 1
    nxt = np.empty_like(x)
    nxt[:-1] = x[1:]
    if x.shape[0]:
        nxt[-1] = 0
    xend = np.where(is_last, t1[ai], nxt)
    j = np.searchsorted(b_starts, x, "right").astype(np.intp) - 1
    neg = j < 0
    j[neg] = 0
    ok = (x < b_ends[j]) & ~neg
    start = (a_starts[ai] + (x - t0[ai]))[ok]
    out = (start, (xend - x)[ok], (b_targets[j] + (x - b_starts[j]))[ok], a_labels[ai][ok])
    if reorder:
        o = np.argsort(start)
        out = tuple(v[o] for v in out)
    return out


def verify_numpy(segs: list, media_maps: list) -> tuple[bool, Optional[int]]:
    """verify_views in numpy: compose each host's view (logical, lengths, host) with its media
    map (sorted by host address) with compose_numpy, then evaluate every host at every
    breakpoint of any host (starts and ends); (consistent, first differing offset)."""
    comp = []
    for (ls, hs, ln), (ms, ml, mt) in zip(segs, media_maps):
        c = compose_numpy(ls, ln, hs, None, ms, ml, mt)
        comp.append(c)
    end = max(int(c[0][-1] + c[1][-1]) for c in comp if c[0].shape[0])
    pts = sorted_unique(np.concatenate([np.concatenate([c[0], c[0] + c[1]]) for c in comp]))
    pts = pts[pts < U64(end)]
    ref, ref_hit = translate_numpy(comp[0][0], comp[0][1], comp[0][2], pts)
    bad = ~ref_hit
    for c in comp[1:]:
        got, hit = translate_numpy(c[0], c[1], c[2], pts)
        bad |= ~hit | (got != ref)
    if not bad.any():
        return True, None
    return False, int(pts[int(np.argmax(bad))])
