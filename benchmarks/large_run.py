"""The orchestrator at scale: 64 hosts and ~10^6 extents in flight.  A benchmark, not a test.

    python benchmarks/large_run.py --duration 60000            # a smoke test, ~15 s
    python benchmarks/large_run.py                             # 1 h, 10^6 extents in flight: ~7 min
    python benchmarks/large_run.py --no-logs                   # the same without the logs: ~6 min
    python benchmarks/large_run.py --extents-in-flight 5e5     # choose extent_max for a target peak
    python benchmarks/large_run.py --duration 240000 --profile out.prof   # where the time goes
    python benchmarks/large_run.py --duration 240000 --perf    # engine / numpy / Python split (perf)

Results and what they mean: docs/performance.md, "Large run".

**The workload** is the ``large`` preset of :mod:`dcdmap.workload` (64 hosts, a 16 TiB pool,
1 h of simulated time, VMs, app, shared and untagged jobs, migrations, kexecs) with smaller
extents: ``extent_max`` 40 MiB instead of 256 MiB (extents are log-uniform over
[2 MiB, extent_max]), which takes ``Workload.summary()["peak_extents"]`` from ~2.5·10^5 to
~10^6 for seed 1.  Any other preset knob can be set with ``--knob NAME=VALUE``;
``--extents-in-flight N`` bisects ``extent_max`` (in multiples of ``extent_align``) for a
peak close to N instead.  ``--duration`` shortens the run (the pool then fills less: fewer
extents in flight).

**The run** is ``Orchestrator(workload, Config(merge=False, max_pending=...))``: merge=False
offers the extents as drawn (no joining of DPA-adjacent extents), and ``max_pending`` is far
above Linux's 100 records per More chain (an allocation of 64 GiB in extents of up to
40 MiB is a chain of thousands of records, which a real v11 kernel would drop): the hosts
model a kernel with a larger limit.  Default placement first-fit, one appliance, no VM
presentation (``--presentation`` sets one).

**Reported**: generation time, run time, events/s, extents offered, ``Report.peak_extents``
(extents accepted at once over all heads), peak RSS (``ru_maxrss``) and RSS over the run:
a background thread reads /proc/self/statm every 0.5 s and ``Orchestrator.run(progress=)``
(called every 1024 events) records how far the run is, so RSS is given at 25/50/75/100 % of
the events.  The sizes of the run's logs (``Orchestrator.actions``, ``Host.log``,
``Device.log``) are counted at the end: they grow with the run.

**Where the time goes** (two tools, separate runs: each slows or perturbs the run):

* ``--profile FILE``: the run under cProfile; prints the top functions by tottime and a
  split of tottime by where the function lives (model: dcdmap/orchestrator.py, dcdmap/cxl,
  dcdmap/present; numpy; stdlib; builtins).  The engine's functions are Cython 3
  ``cython_function_or_method`` objects, which cProfile does not report: their time is in
  the tottime of the Python function that called them.
* ``--perf``: ``perf record`` sampling this process during the run (``-F 499``, no call
  graphs); self time by shared object: dcdmap/_core's extension modules (the engine), numpy's
  (and its BLAS / random modules), libpython (the interpreter running the Python model and
  the stdlib), libc, the kernel; plus the top symbols.  Needs ``perf`` on the PATH and
  ``perf_event_paranoid`` <= 2 (this VM: 2).

``--no-logs`` runs with ``Config(logs=False)``: the devices and hosts keep no logs (by
default they keep one entry per extent released, for replay and ``write_qmp``).

``--floor-ledger`` is an experiment for a dcdmap before commit 21e56e5, whose orchestrator
searched for first fit from the region base (hours at 10^6 extents in flight): the
ledgers are wrapped so that each ``find_free`` starts from a remembered lower bound of the
answer for that size (the same answers: ``--check-floor`` plays the same workload both
ways and compares every action; ``--sample-plain K`` also makes and times the plain call
every K-th time, for an estimate of what it would have cost).  Commit 21e56e5 put the same
search in the orchestrator (``_Ledger.first_fit``); there the option refuses to run.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import os
import pstats
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
try:                                 # the dcdmap on the path (PYTHONPATH, an install) first
    import dcdmap
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import dcdmap

from dcdmap import ExtentMap  # noqa: E402
from dcdmap.orchestrator import Config, Orchestrator  # noqa: E402
from dcdmap.units import MiB, parse_size  # noqa: E402
from dcdmap.workload import PRESETS, generate  # noqa: E402

GiB = 1 << 30
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss() -> int:
    """High-water mark of the resident set, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def source_version() -> Dict[str, Any]:
    """Which dcdmap ran: its path, a hash of its Python sources, and the git commit (and
    whether dcdmap/ differs from it) of the checkout it lives in, if any."""
    root = Path(dcdmap.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    out: Dict[str, Any] = {"path": str(root), "py_sha256": h.hexdigest()[:16]}
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(root.parent), *a], capture_output=True,
                                        text=True, timeout=30).stdout.strip()
        out["git_head"] = git("rev-parse", "HEAD") or None
        out["git_dirty"] = bool(git("status", "--porcelain", "--", "dcdmap")) if out["git_head"] else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def engine_build() -> dict:
    """Every extension module of dcdmap._core (this run measures more than the extent map)."""
    from dcdmap.bench.data import engine_build as build
    return build(modules=())


# ------------------------------------------------------------------------------ the workload

def parse_knob(text: str) -> tuple:
    """``NAME=VALUE``: an int, a float, a size ("64MiB") or a pair ("1GiB,64GiB")."""
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"--knob wants NAME=VALUE, not {text!r}")

    def one(v: str) -> Any:
        for conv in (int, float):
            try:
                return conv(v)
            except ValueError:
                pass
        return parse_size(v)
    parts = [one(v) for v in value.split(",")]
    return name, tuple(parts) if len(parts) > 1 else parts[0]


def make_workload(args: argparse.Namespace, knobs: Dict[str, Any]):
    t0 = time.perf_counter()
    w = generate(args.preset, seed=args.seed, duration=args.duration, **knobs)
    return w, time.perf_counter() - t0


def choose_extent_max(args: argparse.Namespace, knobs: Dict[str, Any], target: int) -> int:
    """Bisect extent_max (multiples of extent_align) for a peak of extents in flight close to
    ``target``: the peak falls as extent_max grows (about; the draws change with it)."""
    align = int(knobs.get("extent_align", PRESETS[args.preset].extent_align))
    lo, hi = 1, max(2, (64 * GiB) // align)          # in units of align
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        w, g = make_workload(args, {**knobs, "extent_max": mid * align})
        peak = w.summary()["peak_extents"]
        log(f"  extent_max {mid * align / MiB:g} MiB: peak {peak:,} extents in flight ({g:.1f} s)")
        if best is None or abs(peak - target) < abs(best[1] - target):
            best = (mid * align, peak)
        if peak > target:
            lo = mid + 1
        else:
            hi = mid - 1
    return best[0]


# ------------------------------------------------------------------------------ memory sampling

class RssSampler(threading.Thread):
    """RSS every ``interval`` s, with the run's progress (events done) at that moment."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: List[tuple] = []        # (seconds since start, rss bytes, events done)
        self.done_events = 0
        self._halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self.t0, current_rss(), self.done_events))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((time.perf_counter() - self.t0, current_rss(), self.done_events))


def rss_at_fractions(samples: List[tuple], total: int, fracs=(0.25, 0.5, 0.75, 1.0)) -> Dict[str, Any]:
    """The first sample taken once ``frac`` of the events were done."""
    out = {}
    for f in fracs:
        need = f * total
        for t, rss, done in samples:
            if done >= need or f == 1.0 and (t, rss, done) == samples[-1]:
                out[f"{int(f * 100)}%"] = {"seconds": round(t, 1), "rss": rss, "events_done": done}
                break
    return out


# ------------------------------------------------------------------------------ the floor-ledger experiment

class FloorLedger:
    """An orchestrator ledger (an ExtentMap of the DPA handed out) whose first-fit
    ``find_free(n)`` starts at ``floor[n]``, a lower bound of the lowest free gap of at least
    n bytes, instead of the region base: the same answers, without walking over every extent
    below it again.  Invariant: no gap of length >= n starts below floor[n].

    * find_free(n) -> a: no gap >= m (m >= n) starts below a: floor[m] = max(floor[m], a);
      None: floor[m] = hi for m >= n.  Inserts only take free space: floors stay valid.
    * remove [s, e): the gap it opens starts at g > s - m for a gap shorter than m before it
      (a gap below floor[m] is shorter than m), so floor[m] = min(floor[m], max(base, s - m)).

    Sizes, addresses and the alignment are multiples of the ledger's granule (the block);
    any other call goes to the map unchanged.
    """

    def __init__(self, m, base: int, end: int, granule: int, max_size: int, sample_every: int = 0) -> None:
        self.m, self.base, self.end, self.g = m, base, end, granule
        self.floor = np.full(max_size // granule + 2, base, np.int64)    # index: size / granule
        # Every ``sample_every``-th call also runs (and times) the plain call from the base,
        # which must give the same answer: what the unmodified _place would have spent.
        # Timed in thread CPU time: other processes on the machine do not count.
        self.sample_every, self.calls, self.floor_s = sample_every, 0, 0.0
        self.sampled, self.sampled_s, self.mismatches = 0, 0.0, 0

    # what the orchestrator uses of an ExtentMap ledger
    @property
    def mapped_bytes(self) -> int:
        return self.m.mapped_bytes

    def __len__(self) -> int:
        return len(self.m)

    def gaps(self, *a, **k):
        return self.m.gaps(*a, **k)

    def insert(self, *a, **k):
        return self.m.insert(*a, **k)

    def insert_many(self, *a, **k):
        return self.m.insert_many(*a, **k)

    def _grow(self, k: int) -> None:
        if k >= len(self.floor):
            self.floor = np.concatenate([self.floor, np.full(k + 1 - len(self.floor), self.base, np.int64)])

    def find_free(self, length, align=None, lo=0, hi=None):
        n = int(length)
        if lo != self.base or hi != self.end or n % self.g or (align or self.g) != self.g:
            return self.m.find_free(length, align=align, lo=lo, hi=self.end if hi is None else hi)
        k = n // self.g
        self._grow(k)
        start = int(self.floor[k])
        if self.sample_every:                      # timed only when the plain call is sampled
            t0 = time.thread_time()
            at = self.m.find_free(n, align=align, lo=start, hi=hi) if start + n <= hi else None
            self.floor_s += time.thread_time() - t0
        else:
            at = self.m.find_free(n, align=align, lo=start, hi=hi) if start + n <= hi else None
        if self.sample_every and not self.calls % self.sample_every:
            t0 = time.thread_time()
            plain = self.m.find_free(length, align=align, lo=lo, hi=hi)
            self.sampled_s += time.thread_time() - t0
            self.sampled += 1
            self.mismatches += plain != at
        self.calls += 1
        np.maximum(self.floor[k:], hi if at is None else at, out=self.floor[k:])
        return at

    def remove_many(self, starts, lengths):
        r = self.m.remove_many(starts, lengths)
        if len(starts):
            s = int(np.min(starts))
            sizes = np.arange(len(self.floor), dtype=np.int64) * self.g
            np.minimum(self.floor, np.maximum(self.base, s - sizes), out=self.floor)
        return r

    def remove(self, start, length):
        return self.remove_many(np.array([start], np.uint64), np.array([length], np.uint64))


def use_floor_ledgers(o: Orchestrator, max_size: int, sample_every: int = 0) -> None:
    if not all(isinstance(x, ExtentMap) for x in o._ledgers):
        raise SystemExit("--floor-ledger: this orchestrator's ledgers are not plain ExtentMaps "
                         "(since commit 21e56e5 it searches from floors itself)")
    o._ledgers = [FloorLedger(m, o.region.base, o.region.end, int(o.region.block_size), max_size,
                              sample_every) for m in o._ledgers]


def floor_stats(o: Orchestrator) -> Dict[str, Any]:
    """The floor ledgers' counters, and the plain first-fit time they stand for (the sampled
    plain calls' time times the sampling ratio)."""
    ls = o._ledgers
    calls, sampled = sum(x.calls for x in ls), sum(x.sampled for x in ls)
    sampled_s = sum(x.sampled_s for x in ls)
    return {"find_free_calls": calls,
            "floor_find_free_s": round(sum(x.floor_s for x in ls), 2) if sampled else None,
            "plain_sampled": sampled, "plain_sampled_s": round(sampled_s, 2),
            "plain_mismatches": sum(x.mismatches for x in ls),
            "plain_find_free_s_estimate": round(sampled_s * calls / sampled, 1) if sampled else None}


def log_memory(o: Orchestrator) -> Dict[str, Any]:
    """What the run's logs hold: the count of entries, the host and device logs' entries by
    kind, and the RSS given back when all of them are cleared after the run (the logs and
    actions together: their objects share pymalloc arenas; glibc and pymalloc may keep some
    freed memory, so it is a lower bound).  Clears the logs."""
    kinds: Dict[str, int] = {}
    for row in o.hosts:
        for h in row:
            for e in h.log:
                kinds[e.get("event", "?")] = kinds.get(e.get("event", "?"), 0) + 1
    dev_kinds: Dict[str, int] = {}
    for d in o.devices:
        for e in d.log:
            dev_kinds[e.get("op", "?")] = dev_kinds.get(e.get("op", "?"), 0) + 1
    out: Dict[str, Any] = {"entries": {"actions": len(o.actions),
                                       "host_log": sum(len(h.log) for row in o.hosts for h in row),
                                       "device_log": sum(len(d.log) for d in o.devices)},
                           "host_log_by_event": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
                           "device_log_by_op": dict(sorted(dev_kinds.items(), key=lambda kv: -kv[1]))}
    gc.collect()
    before = current_rss()
    for row in o.hosts:
        for h in row:
            h.log.clear()
    for d in o.devices:
        d.log.clear()
    o.actions.clear()
    o._marks.clear()
    gc.collect()
    out["rss_freed_by_clearing"] = before - current_rss()
    out["rss_after_clearing"] = current_rss()
    return out


# ------------------------------------------------------------------------------ perf

CATEGORY_OF_DSO = (
    ("engine (dcdmap._core)", ("extentmap.", "tagview.", "sharing.", "compose.", "_sort.")),
    ("numpy", ("_multiarray_umath", "_umath", "openblas", "_mt19937", "_generator", "_pcg64",
               "_bounded_integers", "_common.", "bit_generator", "libgfortran", "_philox", "_sfc64")),
    ("Python interpreter (model code, stdlib)", ("libpython", "python3")),
    ("libc (malloc, memmove, ...)", ("libc.so", "libm.so", "ld-linux")),
    ("kernel (page faults, ...)", ("[kernel",)),
)


def perf_split(data: str) -> Dict[str, Any]:
    txt = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                          "--stdio", "--percent-limit", "0"], capture_output=True, text=True).stdout
    rows = []
    for line in txt.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "%" not in line:
            continue
        parts = line.split()
        try:
            pct = float(parts[0].rstrip("%"))
        except ValueError:
            continue
        dso = parts[1]
        sym = " ".join(parts[3:]) if len(parts) > 3 else "?"
        rows.append((pct, dso, sym))
    split: Dict[str, float] = {}
    for pct, dso, _ in rows:
        cat = next((c for c, keys in CATEGORY_OF_DSO if any(k in dso for k in keys)), "other")
        split[cat] = split.get(cat, 0.0) + pct
    m = re.search(r"# Samples: (\S+)", txt)
    return {"samples": m.group(1) if m else None,
            "split_pct": {k: round(v, 2) for k, v in sorted(split.items(), key=lambda kv: -kv[1])},
            "top": [{"pct": p, "dso": d, "symbol": s} for p, d, s in rows[:20]]}


# ------------------------------------------------------------------------------ cProfile

def profile_split(prof: cProfile.Profile, top: int = 15) -> Dict[str, Any]:
    st = pstats.Stats(prof)
    total = st.total_tt
    cats: Dict[str, float] = {}

    def category(fn: tuple) -> str:
        file, _, name = fn
        if file == "~":
            if "numpy" in name or "ufunc" in name:
                return "numpy (C)"
            return "builtins"
        if "/numpy/" in file:
            return "numpy (Python)"
        for part, cat in (("dcdmap/orchestrator.py", "model: orchestrator.py"),
                          ("dcdmap/cxl/", "model: dcdmap/cxl"), ("dcdmap/present/", "model: dcdmap/present"),
                          ("dcdmap/", "model: other dcdmap")):
            if part in file:
                return cat
        if "large_run.py" in file:
            return "benchmark (FloorLedger: find_free inside)"
        return "stdlib"
    by_file: Dict[str, float] = {}
    for fn, (cc, nc, tt, ct, callers) in st.stats.items():
        c = category(fn)
        cats[c] = cats.get(c, 0.0) + tt
        if c.startswith("model"):
            short = fn[0].split("dcdmap/", 1)[-1]
            by_file[short] = by_file.get(short, 0.0) + tt
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    root = str(HERE.parent) + "/"

    def fmt(fn: tuple) -> str:
        if fn[0] == "~":
            return fn[2]
        return f"{fn[0].replace(root, '').split('site-packages/')[-1]}:{fn[1]}({fn[2]})"
    return {
        "total_s": round(total, 2),
        "split_s": {k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "model_by_file_s": {k: round(v, 2) for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])},
        "top_tottime": [{"function": fmt(fn), "ncalls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3),
                         "share": round(tt / total, 4)} for fn, (cc, nc, tt, ct, _) in rows],
    }


# ------------------------------------------------------------------------------ the run

def run(args: argparse.Namespace, knobs: Dict[str, Any], *, floor: bool, quiet: bool = False):
    w, gen_s = make_workload(args, knobs)
    s = w.summary()
    longest = max((len(e.extent_sizes) for e in w.allocations()), default=0)
    max_pending = args.max_pending or max(100, 1 << (max(longest, 1) - 1).bit_length())
    cfg = Config(presentation=args.presentation, merge=False, max_pending=max_pending,
                 appliances=args.appliances, placement=args.placement,
                 **({"logs": False} if args.no_logs else {}))
    o = Orchestrator(w, cfg)
    if floor:
        use_floor_ledgers(o, int(w.params["extent_max"]), args.sample_plain)
    n = len(w.events)
    out: Dict[str, Any] = {
        "preset": args.preset, "seed": args.seed, "knobs": {k: v for k, v in w.params.items()
                                                             if v != PRESETS[args.preset].params().get(k)},
        "config": cfg.params(), "floor_ledger": floor,
        "generate_s": round(gen_s, 2), "events": n, "event_counts": s["events"],
        "workload_extents": s["extents"], "workload_peak_extents": s["peak_extents"],
        "workload_peak_bytes": s["peak_bytes"], "longest_chain": longest,
        "rss_after_generate": current_rss(),
    }
    if not quiet:
        log(f"workload: {n:,} events, {s['extents']:,} extents, peak {s['peak_extents']:,} in flight, "
            f"{s['peak_bytes'] / 2**40:.2f} TiB peak; generated in {gen_s:.1f} s; max_pending {max_pending:,}")
    sampler = RssSampler(args.rss_interval)
    last = [time.perf_counter()]

    def progress(i: int) -> None:
        sampler.done_events = i
        now = time.perf_counter()
        if not quiet and now - last[0] >= args.report_every:
            last[0] = now
            log(f"  {i:>8,}/{n:,} events  {now - sampler.t0:7.1f} s  rss {current_rss() / GiB:5.2f} GiB  "
                f"in flight {o._accepted_extents:,}  peak {o.report.peak_extents:,}")

    perf_proc = perf_data = None
    if args.perf:
        if not shutil.which("perf"):
            raise SystemExit("--perf: no perf on the PATH")
        perf_data = args.perf_data or os.path.join(tempfile.mkdtemp(prefix="large_run_perf"), "perf.data")
        perf_proc = subprocess.Popen(["perf", "record", "-F", str(args.perf_freq), "-p", str(os.getpid()),
                                      "-o", perf_data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)                        # let perf attach before the clock starts
    prof = cProfile.Profile() if args.profile else None
    gc.collect()
    sampler.t0 = time.perf_counter()
    sampler.start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    rep = o.run(progress=progress)
    if prof:
        prof.disable()
    run_s = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    sampler.done_events = n
    sampler.stop()
    if perf_proc is not None:
        perf_proc.send_signal(signal.SIGINT)
        perf_proc.wait()
    out.update({
        "run_s": round(run_s, 2),
        "user_s": round(cpu1.ru_utime - cpu0.ru_utime, 2), "sys_s": round(cpu1.ru_stime - cpu0.ru_stime, 2),
        "events_per_s": round(n / run_s, 1),
        "extents_offered": rep.extents_offered, "extents_offered_per_s": round(rep.extents_offered / run_s, 1),
        "peak_extents": rep.peak_extents,
        "bytes_offered": rep.bytes_offered, "bytes_accepted": rep.bytes_accepted,
        "refusals": len(rep.refusals), "refusal_samples": [list(r) for r in rep.refusals[:5]],
        "shared_verified": rep.shared_verified, "shared_consistent": rep.shared_consistent,
        "final_free_is_total": rep.final.free == rep.final.total,
        "migrations": rep.migrations, "kexecs": rep.kexecs, "forced": rep.forced,
        "peak_rss": peak_rss(), "rss_end": current_rss(),
        "rss_over_run": rss_at_fractions(sampler.samples, n),
        "rss_samples": [[round(t, 1), r, d] for t, r, d in sampler.samples],
    })
    if floor:
        out["floor"] = floor_stats(o)
    if not args.keep_logs:
        out["logs"] = log_memory(o)        # (clears them: call after everything else)
    if prof:
        prof.dump_stats(args.profile)
        out["profile"] = profile_split(prof, args.top)
        out["profile_file"] = args.profile
    if perf_data:
        out["perf"] = perf_split(perf_data)
        out["perf_file"] = perf_data
    return out, o


def check_floor(args: argparse.Namespace, knobs: Dict[str, Any]) -> bool:
    """Play the same workload with the plain and the floor ledgers: the same actions?"""
    args.keep_logs = True                        # the actions are compared: keep them
    a, oa = run(args, knobs, floor=False, quiet=True)
    b, ob = run(args, knobs, floor=True, quiet=True)
    same = oa.actions == ob.actions and oa.report == ob.report
    log(f"--check-floor: {len(oa.actions):,} actions, plain {a['run_s']} s, floor {b['run_s']} s: "
        f"{'identical' if same else 'DIFFERENT'}")
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=int, default=None, help="ticks (1 ms); default the preset's (1 h)")
    ap.add_argument("--extent-max", default="40MiB", help="largest extent (default 40MiB)")
    ap.add_argument("--extents-in-flight", type=float, default=None,
                    help="bisect extent_max for this peak of extents in flight instead")
    ap.add_argument("--knob", type=parse_knob, action="append", default=[],
                    help="any other Preset knob, NAME=VALUE (repeatable)")
    ap.add_argument("--presentation", default=None)
    ap.add_argument("--placement", default="first-fit")
    ap.add_argument("--appliances", type=int, default=1)
    ap.add_argument("--max-pending", type=int, default=None,
                    help="the hosts' More-chain limit (default: the longest allocation, rounded up to a power of 2)")
    ap.add_argument("--profile", metavar="FILE", default=None, help="run under cProfile, dump the stats to FILE")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--perf", action="store_true", help="sample the run with perf record (self time by DSO)")
    ap.add_argument("--perf-data", default=None)
    ap.add_argument("--perf-freq", type=int, default=499)
    ap.add_argument("--floor-ledger", action="store_true", help="experiment: first-fit from remembered floors")
    ap.add_argument("--sample-plain", type=int, default=0, metavar="K",
                    help="with --floor-ledger: run and time the plain find_free every K-th call (0: never)")
    ap.add_argument("--check-floor", action="store_true", help="check that --floor-ledger changes no action, then exit")
    ap.add_argument("--no-logs", action="store_true",
                    help="Config(logs=False): devices and hosts keep no logs (needs a dcdmap that has it)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="do not count and clear the run's logs after the run")
    ap.add_argument("--rss-interval", type=float, default=0.5)
    ap.add_argument("--report-every", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--json", metavar="FILE", default=None)
    args = ap.parse_args()

    if args.no_logs and "logs" not in Config.__dataclass_fields__:
        ap.error("--no-logs: this dcdmap's Config has no 'logs' knob")
    knobs = dict(args.knob)
    knobs.setdefault("extent_max", parse_size(args.extent_max))
    if args.check_floor:
        sys.exit(0 if check_floor(args, knobs) else 1)
    if args.extents_in_flight:
        log(f"choosing extent_max for ~{args.extents_in_flight:,.0f} extents in flight:")
        knobs["extent_max"] = choose_extent_max(args, knobs, int(args.extents_in_flight))
    src = source_version()
    log(f"dcdmap {src['path']} (sources {src['py_sha256']}, git {src.get('git_head')}"
        f"{' dirty' if src.get('git_dirty') else ''}); engine build {engine_build()['sha256']}; "
        f"load {os.getloadavg()[0]:.2f}; knobs "
        f"{ {k: v for k, v in knobs.items()} } duration {args.duration or PRESETS[args.preset].duration}")
    out, _ = run(args, knobs, floor=args.floor_ledger)
    out.update({"dcdmap": src, "engine": engine_build(), "numpy": np.__version__, "python": sys.version.split()[0],
                "loadavg_at_end": os.getloadavg(), "command": " ".join(["python"] + sys.argv)})

    r = out
    print(f"workload  {r['events']:,} events, {r['workload_extents']:,} extents drawn, "
          f"peak {r['workload_peak_extents']:,} in flight (summary); generated in {r['generate_s']} s")
    print(f"run       {r['run_s']} s wall ({r['user_s']} s user, {r['sys_s']} s sys), "
          f"{r['events_per_s']:,} events/s, {r['extents_offered']:,} extents offered "
          f"({r['extents_offered_per_s']:,}/s), Report.peak_extents {r['peak_extents']:,}")
    print(f"outcome   {r['refusals']} refusals, shared verified {r['shared_verified']} "
          f"(consistent {r['shared_consistent']}), pool empty at the end {r['final_free_is_total']}")
    print(f"memory    peak RSS {r['peak_rss'] / GiB:.2f} GiB; after generation {r['rss_after_generate'] / GiB:.2f} GiB; "
          + ", ".join(f"{k} {v['rss'] / GiB:.2f} GiB" for k, v in r["rss_over_run"].items()))
    if "logs" in r:
        lg = r["logs"]
        print(f"logs      entries {lg['entries']}; clearing them gave back "
              f"{lg['rss_freed_by_clearing'] / GiB:.2f} GiB of RSS (then {lg['rss_after_clearing'] / GiB:.2f} GiB)")
        print(f"          host log by event: {lg['host_log_by_event']}")
        print(f"          device log by op: {lg['device_log_by_op']}")
    if "floor" in r:
        f = r["floor"]
        print(f"floor     {f['find_free_calls']:,} find_free calls in {f['floor_find_free_s']} s; plain call sampled "
              f"{f['plain_sampled']:,} times ({f['plain_mismatches']} different answers): the plain first fit "
              f"would have spent ~{f['plain_find_free_s_estimate']} s")
    if "profile" in r:
        p = r["profile"]
        print(f"cProfile  total tottime {p['total_s']} s: " + ", ".join(f"{k} {v} s" for k, v in p["split_s"].items()))
        print("          model by file: " + ", ".join(f"{k} {v} s" for k, v in p["model_by_file_s"].items()))
        print(f"{'tottime s':>10} {'share':>6} {'ncalls':>9}  function")
        for row in p["top_tottime"]:
            print(f"{row['tottime_s']:>10.2f} {row['share'] * 100:>5.1f}% {row['ncalls']:>9}  {row['function']}")
    if "perf" in r:
        p = r["perf"]
        print(f"perf      {p['samples']} samples: " + ", ".join(f"{k} {v:.1f}%" for k, v in p["split_pct"].items()))
        for row in p["top"][:args.top]:
            print(f"{row['pct']:>6.2f}%  {row['dso'][:40]:<40} {row['symbol'][:90]}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
