"""ExtentMap at 10^8 extents: build time, memory, and queries.  A benchmark, not a test.

    python benchmarks/scale_1e8.py                       # 10^8, from_arrays twice, ~2 min, ~7 GiB peak
    python benchmarks/scale_1e8.py --method insert_many  # the same extents, chunk by chunk
    python benchmarks/scale_1e8.py --n 1e7 --json out.json --markdown out.md

The extents are those of data.py (64-byte-aligned, 64 B .. 2 MiB, gaps 0 .. 256 KiB, 48-bit
addresses; 10^8 of them span ~2**45 bytes), generated ``--chunk`` at a time so that no
temporary array is larger than a chunk.

* ``--method from_arrays`` (default): the chunks fill four preallocated arrays (28 B per
  extent), then one ``ExtentMap.from_arrays`` call (sorted input: no sort; it allocates an
  8 B/extent array of last bytes while it validates).  The arrays are kept afterwards so
  that numpy's searchsorted can answer the same queries (the static reference) and check
  dcdmap's answers.  Expected peak: arrays 2.8 GB + lasts 0.8 GB + map 2.8 GB.
* ``--method insert_many``: the map grows by ``insert_many`` of each chunk, in address
  order; nothing else is kept, so peak memory is about one map.  It measures how the engine
  grows a large map by batches (each chunk lies after the map's end: an engine with an
  append path does O(chunk) work per batch; one that merges and rebuilds would do
  O(n^2 / chunk)).

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's high-water mark,
so it includes the generator's temporaries); current RSS comes from /proc/self/statm.
Timings are the best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import data  # noqa: E402
from dcdmap import ExtentMap  # noqa: E402

GiB = 2**30


def peak_rss() -> int:
    """High-water mark of the resident set, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Phase:
    """Wall time, CPU time (user, system) and minor page faults of a block of code: on a VM
    that backs guest memory lazily, touching fresh memory costs system time, not user time."""

    def __enter__(self):
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.user = r1.ru_utime - self.r0.ru_utime
        self.sys = r1.ru_stime - self.r0.ru_stime
        self.faults = r1.ru_minflt - self.r0.ru_minflt
        return False

    def as_dict(self) -> dict:
        return dict(wall=self.wall, user=self.user, sys=self.sys, minor_faults=self.faults)

    def __str__(self) -> str:
        return (f"{self.wall:.2f} s wall ({self.user:.2f} s user, {self.sys:.2f} s system, "
                f"{self.faults:,} page faults)")


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(repeat):
        res = None
        gc.disable()
        t0 = time.perf_counter()
        res = fn()
        t = time.perf_counter() - t0
        gc.enable()
        best = min(best, t)
    return best, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--n", default="1e8", help="extents (default 1e8)")
    ap.add_argument("--method", choices=("from_arrays", "insert_many"), default="from_arrays")
    ap.add_argument("--chunk", default="4194304", help="extents generated (and inserted) at a time")
    ap.add_argument("--queries", default="1e6")
    ap.add_argument("--scalar-queries", default="1e5")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--builds", type=int, default=2,
                    help="from_arrays builds (the first touches fresh memory; later ones reuse it)")
    ap.add_argument("--seed", type=int, default=data.DEFAULT_SEED)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args(argv)
    n = int(float(args.n))
    chunk = int(float(args.chunk))
    nq = int(float(args.queries))
    nsq = int(float(args.scalar_queries))
    out: dict = dict(n=n, method=args.method, chunk=chunk, queries=nq, scalar_queries=nsq,
                     repeat=args.repeat, seed=args.seed, loadavg_at_start=os.getloadavg(),
                     rss_at_start=current_rss(), engine=data.engine_build())

    def log(msg):
        print(msg, flush=True)

    log(f"engine build {out['engine']['sha256']} {out['engine']['built']}")
    log(f"{n:,} extents by {args.method}, chunks of {chunk:,}; load {out['loadavg_at_start'][0]:.2f}")
    arrays = None
    t0 = time.perf_counter()
    if args.method == "from_arrays":
        arrays = data.Extents(np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.uint64),
                              np.empty(n, np.uint32))
        k = 0
        for ext in data.iter_extent_chunks(n, args.seed, chunk):
            for dst, src in zip(arrays, ext):
                dst[k:k + len(ext)] = src
            k += len(ext)
        out["generate_seconds"] = time.perf_counter() - t0
        out["peak_rss_after_generate"] = peak_rss()
        log(f"generated in {out['generate_seconds']:.1f} s; peak RSS {out['peak_rss_after_generate'] / GiB:.2f} GiB")
        builds = []
        m = None
        for b in range(args.builds):
            m = None                     # free the previous map first: peak memory stays one map
            with Phase() as ph:
                m = ExtentMap.from_arrays(*arrays)
            builds.append(ph.as_dict())
            log(f"from_arrays #{b + 1}: {ph}")
        out["builds"] = builds
        out["build_seconds"] = builds[0]["wall"]
        out["build_seconds_best"] = min(x["wall"] for x in builds)
        lo, hi = data.span(arrays)
    else:
        m = ExtentMap()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        gen = build = 0.0
        lo = hi = None
        t_gen = time.perf_counter()
        for i, ext in enumerate(data.iter_extent_chunks(n, args.seed, chunk)):
            t1 = time.perf_counter()
            gen += t1 - t_gen
            m.insert_many(*ext)
            t_gen = time.perf_counter()
            build += t_gen - t1
            if lo is None:
                lo = int(ext.starts[0])
            hi = int(ext.starts[-1] + ext.lengths[-1])
            if i % 4 == 3:
                log(f"  {len(m):,} extents, {build:.1f} s in insert_many, peak RSS {peak_rss() / GiB:.2f} GiB")
            del ext
        out["generate_seconds"] = gen
        out["build_seconds"] = out["build_seconds_best"] = build
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out["builds"] = [dict(wall=build, user=None, sys=None, minor_faults=r1.ru_minflt - r0.ru_minflt,
                              note="user/sys of generation and insert_many together: "
                                   f"{r1.ru_utime - r0.ru_utime:.2f} s user, {r1.ru_stime - r0.ru_stime:.2f} s system")]
    out["peak_rss_after_build"] = peak_rss()
    out["rss_after_build"] = current_rss()
    out["len"] = len(m)
    out["nbytes"] = m.nbytes
    out["bytes_per_extent"] = m.nbytes / len(m)
    out["span"] = [lo, hi]
    log(f"built {len(m):,} extents in {out['build_seconds']:.1f} s, best {out['build_seconds_best']:.1f} s "
        f"({out['build_seconds_best'] / n * 1e9:.1f} ns/extent); nbytes {m.nbytes / GiB:.2f} GiB = "
        f"{out['bytes_per_extent']:.2f} B/extent; peak RSS {out['peak_rss_after_build'] / GiB:.2f} GiB, "
        f"RSS now {out['rss_after_build'] / GiB:.2f} GiB; span [{lo:#x}, {hi:#x})")
    assert hi < 1 << 48

    rng = np.random.default_rng(args.seed + 1)
    q = rng.integers(lo, hi, nq, dtype=np.uint64)
    qs = np.sort(q)
    for name, qq in (("random", q), ("sorted", qs)):
        t, res = best_of(lambda: m.translate_many(qq, missing=data.MISSING), args.repeat)
        out[f"translate_many_{name}_seconds"] = t
        line = f"translate_many {nq:,} {name}: {t * 1e3:.1f} ms ({t / nq * 1e9:.1f} ns/query)"
        if arrays is not None:
            ends = arrays.starts + arrays.lengths
            tn, ref = best_of(lambda: data.searchsorted_translate(arrays.starts, ends, arrays.targets, qq),
                              args.repeat)
            del ends
            ok = bool(np.array_equal(res, ref))
            out[f"numpy_searchsorted_{name}_seconds"] = tn
            out[f"translate_many_{name}_matches_numpy"] = ok
            line += f"; numpy searchsorted {tn * 1e3:.1f} ms -> {tn / t:.2f}x; matches numpy: {ok}"
        out[f"translate_many_{name}_unmapped_fraction"] = float(np.mean(res == data.MISSING))
        log(line)
        del res
    sq = q[:nsq].tolist()
    hits = q[m.contains_many(q)][:nsq].tolist()

    def lookups():
        lookup = m.lookup
        for a in sq:
            lookup(a)

    def translates():
        translate = m.translate
        for a in hits:
            translate(a)
    t, _ = best_of(lookups, args.repeat)
    out["scalar_lookup_seconds_per_call"] = t / len(sq)
    t2, _ = best_of(translates, args.repeat)
    out["scalar_translate_seconds_per_call"] = t2 / len(hits)
    log(f"scalar lookup: {t / len(sq) * 1e9:.0f} ns/call ({len(sq):,} uniform addresses); "
        f"scalar translate: {t2 / len(hits) * 1e9:.0f} ns/call ({len(hits):,} mapped addresses)")
    out["peak_rss_at_end"] = peak_rss()
    out["loadavg_at_end"] = os.getloadavg()
    log(f"peak RSS at end {out['peak_rss_at_end'] / GiB:.2f} GiB; load {out['loadavg_at_end'][0]:.2f}")
    data.write_reports(args.markdown, args.json, render(out) if args.markdown else "", out, default=None)
    return 0


def render(o: dict) -> str:
    L = [f"# ExtentMap at {o['n']:,} extents ({o['method']})", "",
         "Method: see benchmarks/scale_1e8.py (data of data.py, best of "
         f"{o['repeat']}, seed {o['seed']}; load average {o['loadavg_at_start'][0]:.2f} at start, "
         f"{o['loadavg_at_end'][0]:.2f} at end; engine build {o['engine']['sha256']}, "
         f"{o['engine']['built']}).", "",
         "| measure | value |", "|---|---|",
         f"| build ({o['method']}, chunks of {o['chunk']:,}) | first {o['build_seconds']:.2f} s, best "
         f"{o['build_seconds_best']:.2f} s ({o['build_seconds_best'] / o['n'] * 1e9:.1f} ns/extent) |",
         *[f"| build #{i + 1} | " + (f"{b['wall']:.2f} s wall, {b['user']:.2f} s user, {b['sys']:.2f} s system, "
                                    f"{b['minor_faults']:,} page faults |" if b.get('user') is not None
                                    else f"{b['wall']:.2f} s; {b['minor_faults']:,} page faults; {b['note']} |")
           for i, b in enumerate(o["builds"])],
         f"| data generation | {o['generate_seconds']:.2f} s |",
         f"| nbytes / len | {o['bytes_per_extent']:.2f} B/extent ({o['nbytes'] / GiB:.2f} GiB) |",
         f"| peak RSS after build | {o['peak_rss_after_build'] / GiB:.2f} GiB |",
         f"| RSS after build | {o['rss_after_build'] / GiB:.2f} GiB |"]
    for name in ("random", "sorted"):
        t = o[f"translate_many_{name}_seconds"]
        row = f"| translate_many {o['queries']:,} {name} | {t * 1e3:.1f} ms ({t / o['queries'] * 1e9:.1f} ns/query)"
        if f"numpy_searchsorted_{name}_seconds" in o:
            tn = o[f"numpy_searchsorted_{name}_seconds"]
            row += (f"; numpy searchsorted {tn * 1e3:.1f} ms, {tn / t:.2f}x; "
                    f"same answers: {o[f'translate_many_{name}_matches_numpy']}")
        L.append(row + " |")
    L.append(f"| scalar lookup (Python loop) | {o['scalar_lookup_seconds_per_call'] * 1e9:.0f} ns/call |")
    L.append(f"| scalar translate (Python loop) | {o['scalar_translate_seconds_per_call'] * 1e9:.0f} ns/call |")
    L.append(f"| peak RSS at end | {o['peak_rss_at_end'] / GiB:.2f} GiB |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
