"""dcdmap's ExtentMap against its peers, on the same data and queries, in one process.

The one implementation of the peer comparison: ``dcdmap bench`` prints its summary table,
``benchmarks/compare_peers.py`` its full report.  ::

    dcdmap bench                                                       # 10^5 extents, < 1 min
    python benchmarks/compare_peers.py --sizes 1e6 --repeat 5 \\
        --markdown benchmarks/results/compare_peers.md --json benchmarks/results/compare_peers.json

From Python (a small run: the sizes worth measuring take seconds to minutes)::

    >>> from dcdmap.bench.peers import Settings, compare
    >>> report = compare([1000], Settings(queries=2000, scalar_queries=200, repeat=1))
    >>> sorted({r["op"] for r in report.rows}) == sorted(OPS)
    True
    >>> all(r["ok"] is not False for r in report.rows)     # every answer matched numpy's
    True
    >>> print(report.table())                             # doctest: +ELLIPSIS
    extents  operation ...
    1e3      translate_many random ...

Peers (each named with its version in the output; a peer that is not installed is skipped,
and named as such):

* **numpy** -- the static limit: sorted arrays, ``i = searchsorted(starts, q, 'right') - 1``,
  the end check ``q < ends[i]`` (``i == -1`` handled), ``targets[i] + (q - starts[i])``.
  Builds are ``argsort`` + four gathers; batch insert/remove are ``np.insert``/``np.delete``
  at ``searchsorted`` positions (no validation, exact-match removal only).
* **SortedDict** (sortedcontainers) -- start -> (end, target, label); a lookup is
  ``i = sd.bisect_right(q) - 1; s = keys[i]; v = sd[s]; q < v[0]``, from a Python loop.
  The ``irange(maximum=q, reverse=True)`` idiom is measured too (it is faster).
* **ncls** (NCLS64, int64 half-open intervals) -- ``first_overlap_both(q, q + 1, arange(m))``,
  which returns (query index, interval id) for each query that hits; the translation is
  then a numpy scatter ``out[qi] = targets[id] + (q[qi] - starts[id])``.  ``q + 1`` and
  ``arange`` are made before the clock starts.  Contains is ``has_overlaps``; its scalar
  API is an iterator (``next(find_overlap(a, a + 1), None)``).
* **superintervals** (IntervalMap) -- its Python binding stores C ``int`` (32-bit)
  coordinates, so extents are given in 64-byte granules relative to the first start (exact
  for point queries, since every start and end is a multiple of 64).  Where the span does
  not fit in int32 (from ~4x10^5 extents) it runs on the longest prefix that fits, with
  queries uniform over that prefix: a smaller map, which favours it.  Translate is
  ``search_idxs_batch(g, g)`` (a list of lists) turned into indices and gathered with numpy;
  contains is ``count_batch``.  It has no delete, and add() needs a rebuild, so no mutations.
* **intervaltree** -- pure Python; built on at most ``--intervaltree-max`` extents (a prefix)
  and queried with a sample of 2x10^4 queries; its per-operation time is scaled to the
  full workload (a lower bound at larger n: its costs grow with n).

Method: every timing is the best of ``--repeat`` runs, with the cases of one operation run
round-robin (so a burst of load from another process hits all of them), the garbage
collector off while the clock runs, and any copy a mutation needs made before the clock
starts.  Two clocks: wall time (``time.perf_counter``) and the CPU time of the measuring
thread (``time.thread_time``, which counts system time such as page faults, but not time
spent waiting for a core another process holds); each is the best of the runs.  Every
result is checked against numpy (column "ok").  Ratios are peer / dcdmap time from the
same run: above 1 means dcdmap is faster.
"""
from __future__ import annotations

import gc
import importlib
import os
import platform
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .. import __version__
from .._core import ExtentMap
from . import data

INT32_MAX = 2**31 - 1
IT_QUERIES = 20_000          # intervaltree queries per measurement

#: The peers: the name their rows' ``impl`` starts with -> the module that provides them.
#: numpy is a dependency of dcdmap; the others come with ``pip install 'dcdmap[bench]'``.
PEERS = {
    "numpy": "numpy",
    "SortedDict": "sortedcontainers",
    "ncls": "ncls",
    "superintervals": "superintervals",
    "intervaltree": "intervaltree",
}
INSTALL_HINT = "pip install 'dcdmap[bench]'"


def available_peers() -> set[str]:
    """The peers whose module imports (asked on every call, so a test can hide one).

    >>> "numpy" in available_peers()
    True
    """
    have = set()
    for name, module in PEERS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        have.add(name)
    return have


@dataclass
class Settings:
    """What one comparison measures, besides its sizes (the defaults of compare_peers.py)."""

    queries: int = 10**6              # addresses per batch call (translate_many, contains_many)
    scalar_queries: int = 5 * 10**4   # calls per scalar loop (fewer if queries is smaller)
    repeat: int = 3                   # runs per case, the best is kept (slow peers: at most 2)
    seed: int = data.DEFAULT_SEED
    intervaltree_max: int = 10**5     # the largest intervaltree built (a prefix of the map)


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------

@dataclass
class Case:
    """One implementation of one operation."""

    impl: str
    fn: Callable                        # fn(state) if setup else fn()
    ops: int                            # operations one run performs
    full_ops: Optional[int] = None      # operations of the full workload (scaled if != ops)
    setup: Optional[Callable] = None    # untimed, makes the state fn works on
    check: Optional[Callable] = None    # check(result) -> bool
    max_repeat: int = 1 << 30
    note: str = ""
    partial: bool = False               # measured on a prefix of the map (a smaller map)
    best: float = float("inf")          # wall time (time.perf_counter)
    best_cpu: float = float("inf")      # CPU time of this thread (time.thread_time)
    ok: Optional[bool] = None
    result: Any = None

    def run(self) -> None:
        state = self.setup() if self.setup else None
        gc.collect()
        gc.disable()
        try:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            res = self.fn(state) if self.setup else self.fn()
            t = time.perf_counter() - t0
            c = time.thread_time() - c0
        finally:
            gc.enable()
        self.best = min(self.best, t)
        self.best_cpu = min(self.best_cpu, c)
        self.result = res


def measure(cases: list[Case], repeat: int) -> list[Case]:
    """Best of ``repeat`` runs of each case, round-robin; then check each result once."""
    for r in range(repeat):
        for c in cases:
            if r < c.max_repeat:
                c.run()
    for c in cases:
        if c.check is not None:
            c.ok = bool(c.check(c.result))
        c.result = None
    return cases


# ---------------------------------------------------------------------------------------
# The workload of one size, and its peers
# ---------------------------------------------------------------------------------------

class Workload:
    """The extents, queries and maps of one size, and the peers that will be measured."""

    def __init__(self, n: int, args: Settings, peers: set[str]):
        self.n = n
        self.args = args
        self.peers = peers
        seed = args.seed
        self.ext = data.make_extents(n, seed)
        self.q = data.uniform_queries(self.ext, args.queries, seed + 1)
        self.qs = np.sort(self.q)
        self.expected = data.reference_translate(self.ext, self.q)
        self.expected_sorted = data.reference_translate(self.ext, self.qs)
        self.ns = min(args.scalar_queries, args.queries)
        self.scalar_q = self.q[: self.ns].tolist()
        self.scalar_hits_arr = data.hit_queries(self.ext, self.ns, seed + 2)
        self.scalar_hits = self.scalar_hits_arr.tolist()
        self.map = ExtentMap.from_arrays(*self.ext)
        # Mutations: k = n // 10 extents inserted into / removed from a map of n.
        self.k = max(1, n // 10)
        self.base, self.extra = data.split_for_mutation(n, self.k, seed)
        self.victims = data.random_victims(self.base, self.k, seed + 5)
        self.base_map = ExtentMap.from_arrays(*self.base)
        self.shuffled = data.shuffled(self.ext, seed + 4)


def fmt_time(s: float) -> str:
    """A duration for people: ``fmt_time(0.0123) == '12.3 ms'``."""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_per(s: float) -> str:
    """A time per operation: ``fmt_per(6.1e-8) == '61.0 ns'``."""
    if s >= 1e-6:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e9:.1f} ns"


def versions(peers: Optional[set[str]] = None) -> dict:
    """Python's, dcdmap's and each peer's version ("not installed" for a peer that is not)."""
    from importlib.metadata import version
    peers = available_peers() if peers is None else peers
    out = {"python": platform.python_version(), "dcdmap": __version__}
    for name, module in PEERS.items():
        try:
            out[module] = version(module) if name in peers else "not installed"
        except Exception:           # importable but without metadata (a source checkout)
            out[module] = getattr(importlib.import_module(module), "__version__", "unknown")
    return out


def machine() -> dict:
    """The CPU, cores, memory, OS and load average of this machine, as far as it says."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
            "loadavg_at_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------

def translate_cases(w: Workload, sorted_q: bool) -> list[Case]:
    q = w.qs if sorted_q else w.q
    expected = w.expected_sorted if sorted_q else w.expected
    m = w.map
    e = w.ext
    starts, ends, targets = e.starts, e.ends, e.targets
    nq = len(q)

    def same(x):
        return np.array_equal(x, expected)

    cases = [
        Case("dcdmap translate_many", lambda: m.translate_many(q, missing=data.MISSING), nq, check=same),
        Case("numpy searchsorted", lambda: data.searchsorted_translate(starts, ends, targets, q), nq,
             check=same),
    ]
    if "ncls" in w.peers:
        from ncls import NCLS64
        nc = NCLS64(starts.view(np.int64), ends.view(np.int64), np.arange(w.n, dtype=np.int64))
        qi = q.view(np.int64)
        qi1 = qi + 1
        qidx = np.arange(nq, dtype=np.int64)

        def ncls_translate():
            a, b = nc.first_overlap_both(qi, qi1, qidx)
            out = np.full(nq, data.MISSING)
            out[a] = targets[b] + (q[a] - starts[b])
            return out
        cases.append(Case("ncls first_overlap_both", ncls_translate, nq, check=same,
                          note="query (q, q+1) + numpy scatter"))
    if "superintervals" in w.peers:
        cases.append(superintervals_translate_case(w, q, sorted_q))
    if not sorted_q:
        cases += python_loop_translate_cases(w)
    return cases


def si_prefix(ext: data.Extents) -> tuple[int, int]:
    """(extents that fit in int32 granule coordinates, the base address)."""
    lo = int(ext.starts[0])
    limit = np.uint64(lo + INT32_MAX * data.GRANULE)
    k = int(np.searchsorted(ext.ends, limit, "right"))
    return k, lo


def si_build(ext: data.Extents, k: int, lo: int):
    from superintervals import IntervalMap
    g = np.uint64(data.GRANULE)
    s32 = ((ext.starts[:k] - np.uint64(lo)) // g).astype(np.int32)
    e32 = ((ext.ends[:k] - np.uint64(lo)) // g - np.uint64(1)).astype(np.int32)   # end-inclusive
    return IntervalMap.from_arrays(s32, e32)


def superintervals_translate_case(w: Workload, q: np.ndarray, sorted_q: bool) -> Case:
    e = w.ext
    k, lo = si_prefix(e)
    note = "int32 granule coords; search_idxs_batch(g, g) + numpy gather"
    if k < w.n:
        sub = e.take(slice(0, k))
        q = data.uniform_queries(sub, len(q), w.args.seed + 11)
        if sorted_q:
            q = np.sort(q)
        note += f"; on the first {k:,} extents (int32 limit)"
        e = sub
    im = si_build(e, k, lo)
    g32 = ((q - np.uint64(lo)) // np.uint64(data.GRANULE)).astype(np.int32)
    starts, targets = e.starts, e.targets
    nq = len(q)
    expected = data.reference_translate(e, q)

    def run():
        res = im.search_idxs_batch(g32, g32)
        idx = np.fromiter((r[0] if r else -1 for r in res), np.int64, count=nq)
        hit = idx >= 0
        out = np.full(nq, data.MISSING)
        out[hit] = targets[idx[hit]] + (q[hit] - starts[idx[hit]])
        return out
    return Case("superintervals", run, nq, check=lambda x: np.array_equal(x, expected), note=note,
                partial=k < w.n)


def it_subset(w: Workload) -> data.Extents:
    return w.ext.take(slice(0, min(w.n, w.args.intervaltree_max)))


def it_build(ext: data.Extents):
    import intervaltree
    return intervaltree.IntervalTree.from_tuples(
        zip(ext.starts.tolist(), ext.ends.tolist(), zip(ext.targets.tolist(), ext.labels.tolist())))


def sd_build(ext: data.Extents):
    from sortedcontainers import SortedDict
    return SortedDict(zip(ext.starts.tolist(),
                          zip(ext.ends.tolist(), ext.targets.tolist(), ext.labels.tolist())))


def sd_translate_loop(sd, qs):
    """translate from a Python loop: bisect_right on the keys + a value lookup."""
    br = sd.bisect_right
    keys = sd.keys()
    out = []
    append = out.append
    for a in qs:
        i = br(a) - 1
        if i >= 0:
            s = keys[i]
            v = sd[s]
            if a < v[0]:
                append(v[1] + (a - s))
                continue
        append(None)
    return out


def sd_lookup_loop(sd, qs):
    br = sd.bisect_right
    keys = sd.keys()
    out = []
    append = out.append
    for a in qs:
        i = br(a) - 1
        if i >= 0:
            s = keys[i]
            v = sd[s]
            if a < v[0]:
                append((s, v))
                continue
        append(None)
    return out


def sd_lookup_irange(sd, qs):
    irange = sd.irange
    out = []
    append = out.append
    for a in qs:
        r = None
        for s in irange(maximum=a, reverse=True):
            v = sd[s]
            if a < v[0]:
                r = (s, v)
            break
        append(r)
    return out


def it_translate_loop(tree, qs):
    at = tree.at
    out = []
    append = out.append
    for a in qs:
        r = None
        for iv in at(a):
            r = iv.data[0] + (a - iv.begin)
        append(r)
    return out


def python_loop_translate_cases(w: Workload) -> list[Case]:
    """SortedDict and intervaltree answering the batch from a Python loop (sampled, scaled)."""
    nq = len(w.q)
    cases = []
    if "SortedDict" in w.peers:
        sd = w.sd
        ns = w.ns
        sample = w.scalar_q
        exp = w.expected[:ns]

        def check(out):
            got = np.array([data.MISSING if x is None else x for x in out], dtype=np.uint64)
            return np.array_equal(got, exp)
        cases.append(Case("SortedDict (Python loop)", lambda: sd_translate_loop(sd, sample), ns,
                          full_ops=nq, check=check, max_repeat=2, note=f"{ns:,} queries, scaled"))
    if "intervaltree" not in w.peers:
        return cases
    sub = w.it_ext
    tree = w.it_tree
    iq = data.uniform_queries(sub, IT_QUERIES, w.args.seed + 12).tolist()
    iexp = data.reference_translate(sub, np.array(iq, dtype=np.uint64))

    def icheck(out):
        got = np.array([data.MISSING if x is None else x for x in out], dtype=np.uint64)
        return np.array_equal(got, iexp)
    note = f"{len(iq):,} queries, scaled"
    if len(sub) < w.n:
        note += f"; tree of the first {len(sub):,} extents"
    cases.append(Case("intervaltree (Python loop)", lambda: it_translate_loop(tree, iq), len(iq),
                      full_ops=nq, check=icheck, max_repeat=2, note=note, partial=len(sub) < w.n))
    return cases


def contains_cases(w: Workload) -> list[Case]:
    q = w.q
    e = w.ext
    m = w.map
    nq = len(q)
    expected = w.expected != data.MISSING

    def same(x):
        return np.array_equal(x, expected)

    def np_contains():
        i = np.searchsorted(e.starts, q, "right").astype(np.intp) - 1
        neg = i < 0
        i[neg] = 0
        return (q < e.ends[i]) & ~neg
    cases = [
        Case("dcdmap contains_many", lambda: m.contains_many(q), nq, check=same),
        Case("numpy searchsorted", np_contains, nq, check=same),
    ]
    if "ncls" in w.peers:
        from ncls import NCLS64
        nc = NCLS64(e.starts.view(np.int64), e.ends.view(np.int64), np.arange(w.n, dtype=np.int64))
        qi = q.view(np.int64)
        qi1 = qi + 1
        qidx = np.arange(nq, dtype=np.int64)

        def ncls_contains():
            out = np.zeros(nq, dtype=bool)
            out[nc.has_overlaps(qi, qi1, qidx)] = True
            return out
        cases.append(Case("ncls has_overlaps", ncls_contains, nq, check=same,
                          note="query (q, q+1) + numpy scatter"))
    if "superintervals" not in w.peers:
        return cases
    k, lo = si_prefix(e)
    sub, sq = e, q
    note = "int32 granule coords; count_batch(g, g) > 0"
    if k < w.n:
        sub = e.take(slice(0, k))
        sq = data.uniform_queries(sub, nq, w.args.seed + 11)
        note += f"; on the first {k:,} extents (int32 limit)"
    im = si_build(sub, k, lo)
    g32 = ((sq - np.uint64(lo)) // np.uint64(data.GRANULE)).astype(np.int32)
    sexp = data.reference_translate(sub, sq) != data.MISSING
    cases.append(Case("superintervals", lambda: np.array(im.count_batch(g32, g32)) > 0, nq,
                      check=lambda x: np.array_equal(x, sexp), note=note, partial=k < w.n))
    return cases


def scalar_cases(w: Workload, what: str) -> list[Case]:
    """Scalar lookup (uniform queries, ~39 % unmapped) or translate (mapped queries only)."""
    m = w.map
    sd = getattr(w, "sd", None)
    ns = w.ns
    e = w.ext
    if what == "lookup":
        qs = w.scalar_q
        exp = w.expected[:ns]
        exp_hit = exp != data.MISSING

        def dc():
            lookup = m.lookup
            return [lookup(a) for a in qs]

        def dc_check(out):
            return np.array_equal(np.array([x is not None for x in out]), exp_hit) and all(
                x is None or x.start <= a < x.start + x.length for x, a in zip(out, qs))

        def hit_check(out):
            return np.array_equal(np.array([x is not None for x in out]), exp_hit)
        cases = [Case("dcdmap lookup", dc, ns, check=dc_check)]
        if "SortedDict" in w.peers:
            cases += [
                Case("SortedDict bisect_right+keys[i]", lambda: sd_lookup_loop(sd, qs), ns,
                     check=hit_check, max_repeat=2),
                Case("SortedDict irange floor", lambda: sd_lookup_irange(sd, qs), ns, check=hit_check,
                     max_repeat=2),
            ]
        if "ncls" in w.peers:
            from ncls import NCLS64
            nc = NCLS64(e.starts.view(np.int64), e.ends.view(np.int64), np.arange(w.n, dtype=np.int64))

            def ncls_loop():
                fo = nc.find_overlap
                return [next(fo(a, a + 1), None) for a in qs]
            cases.append(Case("ncls find_overlap", ncls_loop, ns, check=hit_check, max_repeat=2,
                              note="next(find_overlap(a, a+1), None)"))
        if "superintervals" in w.peers:
            k, lo = si_prefix(e)
            sub = e if k == w.n else e.take(slice(0, k))
            sq = qs if k == w.n else data.uniform_queries(sub, ns, w.args.seed + 13).tolist()
            im = si_build(sub, k, lo)
            g = [(a - lo) >> 6 for a in sq]
            sexp = data.reference_translate(sub, np.array(sq, dtype=np.uint64)) != data.MISSING

            def si_loop():
                si = im.search_items
                return [si(x, x) for x in g]
            note = "search_items(g, g), int32 granule coords"
            if k < w.n:
                note += f"; first {k:,} extents"
            cases.append(Case("superintervals", si_loop, ns, max_repeat=2, note=note, partial=k < w.n,
                              check=lambda out: np.array_equal(np.array([bool(x) for x in out]), sexp)))
        if "intervaltree" in w.peers:
            tree, sub_it = w.it_tree, w.it_ext
            iq = data.uniform_queries(sub_it, IT_QUERIES, w.args.seed + 12).tolist()
            iexp = data.reference_translate(sub_it, np.array(iq, dtype=np.uint64)) != data.MISSING

            def it_loop():
                at = tree.at
                return [at(a) for a in iq]
            note = f"tree.at(a); {len(iq):,} queries"
            if len(sub_it) < w.n:
                note += f"; tree of the first {len(sub_it):,} extents"
            cases.append(Case("intervaltree", it_loop, len(iq), max_repeat=2, note=note,
                              partial=len(sub_it) < w.n,
                              check=lambda out: np.array_equal(np.array([bool(x) for x in out]), iexp)))
        return cases
    # translate: mapped addresses only (dcdmap raises UnmappedError on a miss)
    qs = w.scalar_hits
    exp = data.reference_translate(e, w.scalar_hits_arr)

    def same(out):
        return np.array_equal(np.array(out, dtype=np.uint64), exp)

    def dc():
        translate = m.translate
        return [translate(a) for a in qs]
    cases = [Case("dcdmap translate", dc, ns, check=same)]
    if "SortedDict" in w.peers:
        def sd_irange_translate():
            irange = sd.irange
            out = []
            for a in qs:
                for s in irange(maximum=a, reverse=True):
                    out.append(sd[s][1] + (a - s))
                    break
            return out
        cases += [
            Case("SortedDict bisect_right+keys[i]", lambda: sd_translate_loop(sd, qs), ns, check=same,
                 max_repeat=2),
            Case("SortedDict irange floor", sd_irange_translate, ns, check=same, max_repeat=2),
        ]
    if "intervaltree" in w.peers:
        tree, sub_it = w.it_tree, w.it_ext
        iq = data.hit_queries(sub_it, IT_QUERIES, w.args.seed + 14).tolist()
        iexp = data.reference_translate(sub_it, np.array(iq, dtype=np.uint64))
        note = f"{len(iq):,} queries"
        if len(sub_it) < w.n:
            note += f"; tree of the first {len(sub_it):,} extents"
        cases.append(Case("intervaltree", lambda: it_translate_loop(tree, iq), len(iq), max_repeat=2,
                          note=note, partial=len(sub_it) < w.n,
                          check=lambda out: np.array_equal(np.array(out, dtype=np.uint64), iexp)))
    return cases


def mutation_cases(w: Workload, what: str) -> list[Case]:
    """k = n // 10 scalar inserts into a map of n, then k scalar removes of random extents."""
    base_map, extra, victims, k = w.base_map, w.extra, w.victims, w.k
    rows = list(zip(*(a.tolist() for a in extra)))
    vrows = list(zip(victims.starts.tolist(), victims.lengths.tolist()))
    if what == "insert":
        def dc(m):
            insert = m.insert
            for s, ln, t, lab in rows:
                insert(s, ln, t, lab)
            return m

        def sd_ins(sd):
            for s, ln, t, lab in rows:
                sd[s] = (s + ln, t, lab)
            return sd
        cases = [Case("dcdmap insert", dc, k, setup=base_map.copy,
                      check=lambda m: len(m) == w.n + k and m.check_invariants() is None)]
        if "SortedDict" in w.peers:
            cases.append(Case("SortedDict setitem", sd_ins, k, setup=w.base_sd.copy, max_repeat=2,
                              check=lambda sd: len(sd) == w.n + k))
        return cases
    # remove from the map the scalar inserts left (its leaves as the inserts left them)
    after = w.map_after_inserts

    def dc_rm(m):
        remove = m.remove
        for s, ln in vrows:
            remove(s, ln)
        w.bytes_after_mutations = m.nbytes / len(m)
        return m

    def sd_rm(sd):
        for s, _ in vrows:
            del sd[s]
        return sd
    cases = [Case("dcdmap remove", dc_rm, k, setup=after.copy,
                  check=lambda m: len(m) == w.n and m.check_invariants() is None)]
    if "SortedDict" in w.peers:
        cases.append(Case("SortedDict del", sd_rm, k, setup=w.sd_after_inserts.copy, max_repeat=2,
                          check=lambda sd: len(sd) == w.n))
    return cases


def it_mutation_rows(w: Workload) -> list[dict]:
    """intervaltree addi / remove on its subsample, one run each (a copy costs a rebuild)."""
    import intervaltree
    ns = min(w.n, w.args.intervaltree_max)
    if ns < w.n:
        base, extra = data.split_for_mutation(ns, max(1, ns // 10), w.args.seed)
    else:
        base, extra = w.base, w.extra
    victims = data.random_victims(base, len(extra), w.args.seed + 5)
    tree = it_build(base)
    rows = list(zip(*(a.tolist() for a in extra)))
    gc.disable()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for s, ln, t, lab in rows:
        tree.addi(s, s + ln, (t, lab))
    t_ins = time.perf_counter() - t0
    c_ins = time.thread_time() - c0
    vr = list(zip(victims.starts.tolist(), victims.ends.tolist(), victims.targets.tolist(),
                  victims.labels.tolist()))
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for s, e, t, lab in vr:
        tree.remove(intervaltree.Interval(s, e, (t, lab)))
    t_rm = time.perf_counter() - t0
    c_rm = time.thread_time() - c0
    gc.enable()
    ok = len(tree) == len(base)
    note = "1 run" + (f"; tree of {ns:,}, {len(extra):,} ops, per-op scaled" if ns < w.n else "")
    return [
        dict(op="scalar insert", impl="intervaltree addi", per_op=t_ins / len(rows),
             cpu_per_op=c_ins / len(rows), ops=w.k, ok=ok,
             note=note),
        dict(op="scalar remove", impl="intervaltree remove", per_op=t_rm / len(vr),
             cpu_per_op=c_rm / len(vr), ops=w.k, ok=ok,
             note=note),
    ]


def batch_mutation_cases(w: Workload, what: str) -> list[Case]:
    base_map, extra, victims, k = w.base_map, w.extra, w.victims, w.k
    b = w.base
    if what == "insert_many":
        def dc(m):
            m.insert_many(*extra)
            return m

        def np_insert():
            o = np.argsort(extra.starts)
            xs = extra.take(o)
            pos = np.searchsorted(b.starts, xs.starts)
            return data.Extents(*(np.insert(a, pos, x) for a, x in zip(b, xs)))
        expect_starts = np.sort(np.concatenate([b.starts, extra.starts]))
        return [
            Case("dcdmap insert_many", dc, k, setup=base_map.copy,
                 check=lambda m: np.array_equal(m.to_arrays().starts, expect_starts)),
            Case("numpy argsort+searchsorted+insert", np_insert, k,
                 check=lambda x: np.array_equal(x.starts, expect_starts),
                 note="4 arrays, no overlap check"),
        ]
    vs = victims.starts

    def dc(m):
        m.remove_many(victims.starts, victims.lengths)
        w.bytes_after_batch = m.nbytes / len(m)
        return m

    def np_delete():
        pos = np.searchsorted(b.starts, vs)
        return data.Extents(*(np.delete(a, pos) for a in b))
    expect_starts = np.setdiff1d(b.starts, vs)
    return [
        Case("dcdmap remove_many", dc, k, setup=w.map_after_insert_many.copy,
             check=lambda m: np.array_equal(m.to_arrays().starts,
                                            np.sort(np.concatenate([expect_starts, extra.starts])))),
        Case("numpy searchsorted+delete", np_delete, k,
             check=lambda x: np.array_equal(x.starts, expect_starts),
             note="4 arrays, exact matches only"),
    ]


def build_cases(w: Workload) -> list[Case]:
    sh = w.shuffled
    n = w.n
    e = w.ext

    def np_sort():
        o = np.argsort(sh.starts)
        return data.Extents(sh.starts[o], sh.lengths[o], sh.targets[o], sh.labels[o])
    cases = [
        Case("dcdmap from_arrays", lambda: ExtentMap.from_arrays(*sh), n, check=lambda m: m == w.map),
        Case("numpy argsort + 4 gathers", np_sort, n, check=lambda x: np.array_equal(x.starts, e.starts)),
    ]
    if "SortedDict" in w.peers:
        cases.append(Case("SortedDict(zip(...))", lambda: sd_build(sh), n, max_repeat=2,
                          check=lambda sd: len(sd) == n, note="includes tolist()"))
    if "ncls" in w.peers:
        from ncls import NCLS64
        cases.append(Case("ncls NCLS64", lambda: NCLS64(sh.starts.view(np.int64),
                                                        (sh.starts + sh.lengths).view(np.int64),
                                                        np.arange(n, dtype=np.int64)),
                          n, check=lambda x: len(x) == n))
    if "superintervals" in w.peers:
        from superintervals import IntervalMap
        k, lo = si_prefix(e)
        # superintervals on the same shuffled extents (the int32 prefix of them if needed)
        keep = sh.take(np.flatnonzero(sh.starts < (e.starts[k - 1] + np.uint64(1))))
        g = np.uint64(data.GRANULE)
        s32 = ((keep.starts - np.uint64(lo)) // g).astype(np.int32)
        e32 = ((keep.starts + keep.lengths - np.uint64(lo)) // g - np.uint64(1)).astype(np.int32)
        note = "int32 granule coords"
        if k < n:
            note += f"; {k:,} extents, per-extent time scaled"
        cases.append(Case("superintervals from_arrays", lambda: IntervalMap.from_arrays(s32, e32), k,
                          full_ops=n, note=note, check=lambda x: len(x) == k))
    if "intervaltree" in w.peers:
        sub = w.it_ext
        ssub = data.shuffled(sub, w.args.seed + 15)
        note = "from_tuples"
        if len(sub) < n:
            note += f"; {len(sub):,} extents, per-extent time scaled (lower bound)"
        cases.append(Case("intervaltree", lambda: it_build(ssub), len(sub), full_ops=n, max_repeat=1,
                          check=lambda t: len(t) == len(sub), note=note))
    return cases


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------

OPS = ["translate_many random", "translate_many sorted", "contains_many random", "scalar lookup",
       "scalar translate", "scalar insert", "scalar remove", "insert_many", "remove_many",
       "from_arrays (shuffled)"]


def rows_from(op: str, n: int, cases: list[Case]) -> list[dict]:
    out = []
    for c in cases:
        full = c.full_ops or c.ops
        per = c.best / c.ops
        out.append(dict(n=n, op=op, impl=c.impl, seconds=per * full, per_op=per, ops=full,
                        cpu_per_op=c.best_cpu / c.ops,
                        measured_ops=c.ops, scaled=full != c.ops, partial=c.partial, ok=c.ok,
                        note=c.note))
    return out


def run_size(n: int, args: Settings, log: Callable[[str], None], peers: set[str],
             step: Optional[Callable[[str], None]] = None) -> tuple[list[dict], dict]:
    """Measure every operation at n extents: (rows, extras).  ``log`` gets a line per
    operation; ``step(op)``, if given, is called as each operation is done (a progress bar)."""
    t_start = time.perf_counter()
    w = Workload(n, args, peers)
    log(f"\n== n = {n:,} extents ({fmt_time(time.perf_counter() - t_start)} to generate) ==")
    if "SortedDict" in peers:
        w.sd = sd_build(w.ext)
        w.base_sd = sd_build(w.base)
    if "intervaltree" in peers:
        w.it_ext = it_subset(w)
        w.it_tree = it_build(w.it_ext)
    rows: list[dict] = []
    extra: dict = {}

    def do(op, cases):
        t0 = time.perf_counter()
        measure(cases, args.repeat)
        r = rows_from(op, n, cases)
        rows.extend(r)
        log(f"  {op:<24} " + "  ".join(f"{x['impl'].split()[0]}={fmt_per(x['per_op'])}"
                                       f"/{fmt_per(x['cpu_per_op'])}" for x in r)
            + f"   [{fmt_time(time.perf_counter() - t0)}]")
        if step is not None:
            step(op)

    do("translate_many random", translate_cases(w, False))
    do("translate_many sorted", translate_cases(w, True))
    do("contains_many random", contains_cases(w))
    do("scalar lookup", scalar_cases(w, "lookup"))
    do("scalar translate", scalar_cases(w, "translate"))
    do("scalar insert", mutation_cases(w, "insert"))
    # the state the removes start from: the scalar inserts applied once
    w.map_after_inserts = w.base_map.copy()
    for s, ln, t, lab in zip(*(a.tolist() for a in w.extra)):
        w.map_after_inserts.insert(s, ln, t, lab)
    if "SortedDict" in peers:
        w.sd_after_inserts = w.base_sd.copy()
        for s, ln, t, lab in zip(*(a.tolist() for a in w.extra)):
            w.sd_after_inserts[s] = (s + ln, t, lab)
    do("scalar remove", mutation_cases(w, "remove"))
    for r in it_mutation_rows(w) if "intervaltree" in peers else []:
        r.update(n=n, seconds=r["per_op"] * r["ops"], measured_ops=None, scaled=True,
                 partial=w.n > w.args.intervaltree_max)
        rows.append(r)
    w.map_after_insert_many = w.base_map.copy()
    w.map_after_insert_many.insert_many(*w.extra)
    do("insert_many", batch_mutation_cases(w, "insert_many"))
    do("remove_many", batch_mutation_cases(w, "remove_many"))
    do("from_arrays (shuffled)", build_cases(w))
    extra["bytes_per_extent_from_arrays"] = w.map.nbytes / len(w.map)
    extra["bytes_per_extent_after_scalar_mutations"] = w.bytes_after_mutations
    extra["bytes_per_extent_after_batch_mutations"] = w.bytes_after_batch
    extra["mutation_ops"] = w.k
    extra["loadavg_after"] = os.getloadavg()
    extra["seconds"] = time.perf_counter() - t_start
    log(f"  memory: {extra['bytes_per_extent_from_arrays']:.1f} B/extent from_arrays, "
        f"{extra['bytes_per_extent_after_scalar_mutations']:.1f} after {w.k:,} scalar inserts + removes, "
        f"{extra['bytes_per_extent_after_batch_mutations']:.1f} after insert_many + remove_many"
        f"   [{fmt_time(extra['seconds'])} for this size, load {extra['loadavg_after'][0]:.2f}]")
    # ratios against dcdmap, per operation
    for op in {r["op"] for r in rows}:
        dc = [r for r in rows if r["op"] == op and r["impl"].startswith("dcdmap")]
        for r in rows:
            if r["op"] == op and dc:
                r["ratio"] = r["per_op"] / dc[0]["per_op"]
                r["cpu_ratio"] = r["cpu_per_op"] / dc[0]["cpu_per_op"]
    return rows, extra


def find(rows, n, op, impl_prefix):
    for r in rows:
        if r["n"] == n and r["op"] == op and r["impl"].startswith(impl_prefix):
            return r
    return None


def evaluate_goals(rows: list[dict], extras: dict, args) -> list[dict]:
    n = 10**6
    goals = []

    def goal(text, values, target, test, unit=""):
        """values: (wall, cpu) or None; met is judged on both (see render)."""
        if values is None:
            goals.append(dict(goal=text, value=None, cpu_value=None, target=target, met=None,
                              met_wall=None, met_cpu=None, unit=unit))
            return
        wall, cpu = values
        goals.append(dict(goal=text, value=wall, cpu_value=cpu, target=target, unit=unit,
                          met_wall=test(wall), met_cpu=test(cpu), met=test(wall) and test(cpu)))

    def ratio(op, peer):
        a, b = find(rows, n, op, "dcdmap"), find(rows, n, op, peer)
        if a is None or b is None:
            return None
        return b["per_op"] / a["per_op"], b["cpu_per_op"] / a["cpu_per_op"]

    def per(op):
        r = find(rows, n, op, "dcdmap")
        return None if r is None else (r["per_op"] * 1e6, r["cpu_per_op"] * 1e6)

    def add_ratio(text, op, peer, target):
        goal(text, ratio(op, peer), f">= {target}x", lambda v: v >= target, "x")

    add_ratio("translate_many 10^6 random vs numpy searchsorted", "translate_many random", "numpy", 3)
    add_ratio("translate_many 10^6 random vs ncls", "translate_many random", "ncls", 6)
    add_ratio("translate_many 10^6 sorted vs numpy searchsorted (sorted)", "translate_many sorted", "numpy", 2)
    for op in ("scalar lookup", "scalar translate"):
        goal(f"{op}: time per call (Python loop)", per(op), "<= 1 µs", lambda v: v <= 1.0, "µs")
        add_ratio(f"{op} vs SortedDict (bisect_right + keys[i] + value)", op, "SortedDict bisect", 7)
        add_ratio(f"{op} vs SortedDict (irange floor, the faster idiom)", op, "SortedDict irange", 7)
    for op, lim, what in (("scalar insert", 1.0, "of 10^5 extents into a map of 10^6 (Python loop)"),
                          ("scalar remove", 1.0, "of 10^5 random extents from a map of 1.1x10^6 (Python loop)"),
                          ("insert_many", 0.3, "of 10^5 extents into a map of 10^6"),
                          ("remove_many", 0.3, "of 10^5 random extents from a map of 1.1x10^6")):
        goal(f"{op} {what}: time per extent", per(op), f"<= {lim} µs", lambda v, lim=lim: v <= lim, "µs")
    v = ratio("from_arrays (shuffled)", "numpy")
    goal("from_arrays 10^6 shuffled vs numpy argsort + 4 gathers (dcdmap time / numpy time)",
         None if v is None else (1 / v[0], 1 / v[1]), "<= 1.5x", lambda x: x <= 1.5, "x")
    ex = extras.get(n)
    for key, text in (("bytes_per_extent_from_arrays", "memory after from_arrays"),
                      ("bytes_per_extent_after_scalar_mutations",
                       "memory after 10^5 random scalar inserts + 10^5 removes")):
        v = None if ex is None else ex[key]
        goal(f"{text}: nbytes / len", None if v is None else (v, v), "<= 40 B", lambda x: x <= 40, "B")
    if args.queries != 10**6:
        for g in goals[:3]:
            g["goal"] += f" (measured with {args.queries:,} queries)"
    return goals


def render(rows, extras, goals, meta) -> str:
    L = []
    L.append("# dcdmap ExtentMap vs peers")
    L.append("")
    L.append("## Method")
    L.append("")
    L.append("`python benchmarks/compare_peers.py` runs every implementation on the same extents and "
             "queries in one process. Peers: numpy (searchsorted on sorted arrays: the static limit), "
             "sortedcontainers SortedDict, ncls NCLS64, superintervals IntervalMap, intervaltree; how "
             "each is called is in the script's docstring and the notes below.")
    L.append("")
    L.append("Workload (benchmarks/data.py): extents with 64-byte-aligned starts and lengths, lengths "
             "64 B - 2 MiB log-uniform, gaps 0 - 256 KiB, 48-bit addresses; queries uniform over "
             "[first start, last end) (about 39 % unmapped: translate_many uses `missing=`, scalar "
             "translate uses mapped addresses only, scalar lookup uses the uniform ones). "
             f"Mutations: n/10 extents inserted into a map of n, then n/10 random extents removed. "
             f"Seed {meta['args']['seed']}, {meta['args']['queries']:,} batch queries, "
             f"{meta['args']['scalar_queries']:,} scalar calls, best of {meta['args']['repeat']}.")
    L.append("")
    L.append("Every timing is the best of the runs, cases of one operation run round-robin, GC off while "
             "the clock runs, copies made before it starts; ratio = peer time / dcdmap time from the "
             "same run (> 1: dcdmap faster). Two clocks: wall (`perf_counter`) and the measuring "
             "thread's CPU time (`thread_time`, system time included), each the best of the runs; "
             "on a shared machine the CPU time is the steadier of the two. `ok` = the result "
             "matched numpy's.")
    L.append("")
    L.append("## Machine")
    L.append("")
    mc = meta["machine"]
    L.append(f"{mc['cpu']}, {mc['cores']} cores, {mc['memory']}, {mc['os']}; "
             + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
             + f". Engine build {meta['engine']['sha256']} ({meta['engine']['built']})"
             + f". Load average at start {mc['loadavg_at_start'][0]:.2f}"
             + (" (another process was using CPU: numbers are noisier)"
                if mc["loadavg_at_start"][0] > 0.5 else "") + ".")
    if meta.get("skipped"):
        L.append("")
        L.append(f"Not installed, so not measured: {', '.join(meta['skipped'])} ({INSTALL_HINT}).")
    L.append("")
    L.append("## Caveats")
    L.append("")
    for c in meta["caveats"]:
        L.append(f"* {c}")
    L.append("")
    L.append("## Goals (at 10^6 extents)")
    L.append("")
    L.append("Each goal is judged on wall-clock time and on CPU time (the measuring thread's "
             "`time.thread_time`, which a busy machine does not inflate); **yes** needs both, "
             "*CPU only* means the code meets it but the shared machine's wall clock did not.")
    L.append("")
    L.append("| goal | wall | CPU | target | met |")
    L.append("|---|---|---|---|---|")
    for g in goals:
        if g["value"] is None:
            L.append(f"| {g['goal']} | n/a | n/a | {g['target']} | not measured |")
            continue
        met = ("**yes**" if g["met"] else "*CPU only*" if g["met_cpu"] else
               "*wall only*" if g["met_wall"] else "**NO**")
        L.append(f"| {g['goal']} | {g['value']:.2f} {g['unit']} | {g['cpu_value']:.2f} {g['unit']} | "
                 f"{g['target']} | {met} |")
    L.append("")
    L.append("## Results")
    for n in sorted({r["n"] for r in rows}):
        ex = extras[n]
        L.append("")
        L.append(f"### {n:,} extents")
        L.append("")
        L.append(f"Memory: {ex['bytes_per_extent_from_arrays']:.1f} B/extent after from_arrays, "
                 f"{ex['bytes_per_extent_after_scalar_mutations']:.1f} after {ex['mutation_ops']:,} scalar "
                 f"inserts + {ex['mutation_ops']:,} removes, {ex['bytes_per_extent_after_batch_mutations']:.1f} "
                 "after insert_many + remove_many (numpy's four arrays: 28 B/extent). "
                 f"Load average after: {ex['loadavg_after'][0]:.2f}.")
        L.append("")
        L.append("| operation | implementation | time (ops) | per op | CPU per op | ratio vs dcdmap "
                 "(wall / CPU) | ok | note |")
        L.append("|---|---|---|---|---|---|---|---|")
        for op in OPS:
            for r in [r for r in rows if r["n"] == n and r["op"] == op]:
                ok = "" if r["ok"] is None else ("yes" if r["ok"] else "**NO**")
                ratio = r.get("ratio")
                rs = "" if ratio is None else ("1" if r["impl"].startswith("dcdmap") else
                                               f"{ratio:.2f}x / {r['cpu_ratio']:.2f}x")
                scaled = " (scaled)" if r["scaled"] else ""
                L.append(f"| {op} | {r['impl']} | {fmt_time(r['seconds'])}{scaled} ({r['ops']:,}) | "
                         f"{fmt_per(r['per_op'])} | {fmt_per(r['cpu_per_op'])} | {rs} | {ok} | {r['note']} |")
    L.append("")
    return "\n".join(L)


CAVEATS = [
    "2 shared cores: another process (a compiler, a test run) may have been running; that is why "
    "every number is a best-of and ratios come from one round-robin run.",
    "numpy's batch insert/delete do no validation and delete exact matches only; dcdmap's check "
    "alignment, overlap, and cut straddling extents.",
    "ncls is queried with half-open [q, q+1) intervals; first_overlap_both returns only the "
    "queries that hit, so its translate adds a numpy scatter into a full output array "
    "(timed); q+1 and arange() are built before the clock.",
    "superintervals' Python binding has int32 coordinates: extents are in 64-byte granules and, "
    "from ~4x10^5 extents, only a prefix that fits int32 is used (a smaller map: it favours "
    "superintervals). Its batch calls return Python lists; the list-to-array conversion is "
    "timed as part of translate.",
    "intervaltree is pure Python: it is built on at most --intervaltree-max extents and queried "
    "with a 2x10^4 sample; per-op times are scaled to the full workload and are lower bounds "
    "at larger n. Its mutations are one run each.",
    "SortedDict and intervaltree answer the batch rows from a Python loop over a sample "
    "(--scalar-queries), scaled; the scalar rows are per call, loop overhead included.",
    "Memory of the peers is not measured; numpy's four arrays are the static reference (28 B/extent).",
]


def compare(sizes: list[int], settings: Optional[Settings] = None, *,
            log: Optional[Callable[[str], None]] = None,
            step: Optional[Callable[[str], None]] = None) -> "Report":
    """Measure dcdmap and every installed peer at each size; the :class:`Report` of the run.

    ``log(line)`` receives the progress lines ``compare_peers.py`` prints (a header, then one
    line per operation); ``step(op)`` is called as each operation of a size is done, so
    ``len(sizes) * len(OPS)`` times in all.  Peers that are not installed are skipped and
    listed in ``report.meta["skipped"]``.
    """
    settings = Settings() if settings is None else settings
    log = log or (lambda line: None)
    peers = available_peers()
    args = settings
    meta = dict(args=dict(sizes=list(sizes), queries=args.queries, scalar_queries=args.scalar_queries,
                          repeat=args.repeat, seed=args.seed, intervaltree_max=args.intervaltree_max),
                machine=machine(), versions=versions(peers), engine=data.engine_build(),
                caveats=CAVEATS, started=time.strftime("%Y-%m-%d %H:%M:%S"),
                skipped=[name for name in PEERS if name not in peers])
    log(f"dcdmap from {meta['engine']['path']} (build {meta['engine']['sha256']}, "
        f"{meta['engine']['built']}); {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        f"load {meta['machine']['loadavg_at_start'][0]:.2f}")
    t0 = time.perf_counter()
    rows: list[dict] = []
    extras: dict = {}
    for n in sizes:
        r, ex = run_size(n, args, log, peers, step)
        rows += r
        extras[n] = ex
        data.make_extents.cache_clear()
    goals = evaluate_goals(rows, extras, args)
    meta["seconds"] = time.perf_counter() - t0
    return Report(rows, extras, goals, meta)


@dataclass
class Report:
    """The results of one :func:`compare` run: every measured row, per-size extras (memory,
    load), the goals at 10^6 extents and the run's metadata (machine, versions, build)."""

    rows: list
    extras: dict
    goals: list
    meta: dict

    def render(self) -> str:
        """The full Markdown report (method, machine, caveats, goals, every row and note)."""
        return render(self.rows, self.extras, self.goals, self.meta)

    def payload(self) -> dict:
        """What ``--json`` writes."""
        return dict(meta=self.meta, goals=self.goals, rows=self.rows,
                    extras={str(k): v for k, v in self.extras.items()})

    def write(self, markdown: Optional[str] = None, json_path: Optional[str] = None) -> None:
        """Write the Markdown report and/or the JSON data, where asked."""
        data.write_reports(markdown, json_path, self.render(), self.payload())

    def wrong(self) -> list[dict]:
        """dcdmap's rows whose answer did not match numpy's (a bug, not a slow peer)."""
        return [r for r in self.rows if r["impl"].startswith("dcdmap") and r["ok"] is False]

    def table(self) -> str:
        """The summary ``dcdmap bench`` prints: one row per size and operation, dcdmap's time per
        operation, then each peer's (its fastest variant) and the ratio peer / dcdmap."""
        peers = [p for p in PEERS if any(r["impl"].split()[0] == p for r in self.rows)]
        head = ["extents", "operation", "dcdmap"] + peers
        body = []      # per line: size, op, dcdmap's time, then (time, ratio, marks) or None per peer
        for n in sorted(self.extras):
            for op in OPS:
                rows = [r for r in self.rows if r["n"] == n and r["op"] == op]
                dc = [r for r in rows if r["impl"].startswith("dcdmap")]
                if not dc:
                    continue
                line: list = [size_label(n), op, fmt_per(dc[0]["per_op"]) + mark(dc[0])]
                for p in peers:
                    mine = [r for r in rows if r["impl"].split()[0] == p]
                    best = min(mine, key=lambda r: r["per_op"]) if mine else None
                    line.append(best and (fmt_per(best["per_op"]), fmt_ratio(best["ratio"]), mark(best)))
                body.append(line)
        # A peer's times and ratios are aligned each on their own within its column.
        parts = [[max((len(x[i][k]) for x in body if x[i]), default=0) for k in range(3)]
                 for i in range(len(head))]
        cells = [x[:3] + ["-" if c is None else
                          f"{c[0].rjust(w[0])} {c[1].rjust(w[1])}{c[2].ljust(w[2])}"
                          for c, w in zip(x[3:], parts[3:])] for x in body]
        widths = [max(len(x[i]) for x in [head] + cells) for i in range(len(head))]

        def fmt(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        meta = self.meta
        a = meta["args"]
        notes = [f"Time per operation, wall clock, best of {a['repeat']} (batch calls: "
                 f"{a['queries']:,} queries each; scalar calls: from a Python loop).  Ratio = peer "
                 "time / dcdmap time from the same run: above 1, dcdmap is faster.  A peer's "
                 "fastest variant is shown; '-': not measured for that peer."]
        if any(r["scaled"] or r.get("partial") for r in self.rows):
            notes.append("* measured on a sample or a prefix of the map, then scaled: a lower bound "
                         "for the peer (--markdown FILE writes the notes of every row).")
        if any(r["ok"] is False for r in self.rows):
            notes.append("! the answer differed from numpy's.")
        notes.append("Memory: " + ", ".join(
            f"{self.extras[n]['bytes_per_extent_from_arrays']:.1f} bytes per extent at {size_label(n)}"
            for n in sorted(self.extras)) + " after from_arrays (numpy's four arrays: 28).")
        if meta["skipped"]:
            notes.append(f"Skipped, not installed: {', '.join(meta['skipped'])} "
                         f"(to compare with them: {INSTALL_HINT}).")
        mc = meta["machine"]
        notes.append(f"dcdmap {meta['versions']['dcdmap']}, engine build {meta['engine']['sha256']}; "
                     f"{mc['cpu'] or 'unknown CPU'}, {mc['cores']} cores, load "
                     f"{mc['loadavg_at_start'][0]:.2f} at the start; {fmt_time(meta['seconds'])} in all.")
        width = max(72, min(100, len(fmt(head))))
        out = [fmt(head)] + [fmt(x) for x in cells] + [""]
        out += [textwrap.fill(x, width, subsequent_indent="  ") for x in notes]
        return "\n".join(out)


def size_label(n: int) -> str:
    """``1e5`` for a power of ten, else the count with separators."""
    return f"1e{len(str(n)) - 1}" if n >= 10 and str(n).strip("0") == "1" else f"{n:,}"


def fmt_ratio(r: float) -> str:
    """A ratio with about three significant digits: 0.77x, 4.30x, 26.8x, 142x."""
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def mark(row: dict) -> str:
    """The table's footnote marks of a row: ! a wrong answer, * scaled or on a prefix."""
    return ("!" if row["ok"] is False else "") + ("*" if row["scaled"] or row.get("partial") else "")
