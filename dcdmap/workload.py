"""Seeded workloads for a pooled-memory orchestrator, and their JSON-lines trace format.

:func:`generate` draws a reproducible stream of events -- hosts coming up, VMs starting and
stopping, tagged capacity being allocated to one host ("app"), shared by several hosts
("shared", famfs-like) or handed out untagged, released, VMs migrating, hosts kexec'ing --
in simulated ticks (1 tick = 1 ms by convention; nothing here reads the wall clock).  The
same ``(preset, seed, overrides)`` gives the same events.  The presets are calibrated on the
Pond/TPP numbers of the reference (§2.3-2.4); see ``docs/workload.md``.

    >>> w = generate("default", seed=1)
    >>> w == generate("default", seed=1)
    True
    >>> w.summary()["hosts"]
    8
    >>> import io
    >>> buf = io.StringIO(); w.to_jsonl(buf)
    >>> Workload.from_jsonl(buf.getvalue()) == w
    True

Events
------
Every event is a frozen dataclass with a ``tick`` (int, >= 0) and a class attribute
``KIND`` (its name in the trace).  Sizes are ints in bytes, hosts/VMs/allocations are int ids.

========== ===================================================================================
KIND       class and fields
========== ===================================================================================
host       ``Host(tick, host, memory, stranded)``: host ``host`` (0 .. hosts-1) is up with
           ``memory`` bytes of local DRAM, ``stranded`` of which are left over once all its
           cores are rented (Pond: up to 25%).  One per host, at tick 0.
vm_start   ``VmStart(tick, vm, host, memory, untouched)``: a VM of ``memory`` bytes starts on
           ``host``; ``untouched`` bytes of it will never be touched (Pond: ~50% of VMs never
           touch 50% of their memory).
vm_stop    ``VmStop(tick, vm)``.
allocate   ``Allocate(tick, alloc, kind, hosts, size, tag, extent_sizes, untouched, vm)``: the
           pool offers ``size`` bytes cut into extents of ``extent_sizes`` (in that order,
           summing to ``size``) under ``tag`` to ``hosts``.  ``kind`` is ``"app"`` (exactly one
           host, a fresh tag), ``"shared"`` (one tag given to >= 2 distinct hosts) or
           ``"untagged"`` (one host, the null UUID as tag, as in DESIGN §6).  ``vm`` is the VM
           the capacity backs (its pool part), or None.  ``untouched`` bytes are never touched.
release    ``Release(tick, alloc, forced)``: the capacity goes back to the pool; ``forced``
           means the pool reclaims it without the host's cooperation.
migrate    ``Migrate(tick, vm, to_host, policy)``: ``policy`` is ``"drain"`` (remove every
           extent before migrating) or ``"prepopulate"`` (offer them on the destination
           first), the two options of RFC §1.8.
kexec      ``Kexec(tick, host, policy)``: ``policy`` is ``"release"`` (give all capacity
           back, what RFC §1.8 expects) or ``"preserve"`` (the next kernel keeps it).
========== ===================================================================================

Events are sorted by tick; within a tick, ``vm_stop``, ``release``, ``migrate``, ``kexec``,
``host``, ``vm_start``, ``allocate`` in that order (frees before new allocations), then in
order of generation.  A VM's pool allocation comes right after its ``vm_start`` at the same
tick and is released right after its ``vm_stop``.  The generator does not act on ``migrate``
or ``kexec`` -- allocations keep their ids and are released by later ``release`` events; what
to do in between is the orchestrator's decision.

Trace format (``dcdmap-trace``, version 1)
------------------------------------------
UTF-8 JSON lines.  Line 1 is the header::

    {"format":"dcdmap-trace","version":1,"preset":"default","seed":0,"params":{...}}

``params`` holds every knob of the :class:`Preset` used (``description`` excepted), sizes in
bytes, pairs as 2-lists.  Each further line is one event: ``"kind"`` (the KIND above), then
its fields by name, in the order of the table.  Two spellings differ from the Python side:
``Allocate.kind`` is written ``"alloc_kind"`` (``"kind"`` names the event), and ``tag`` is
the UUID's canonical string.  ``hosts`` and ``extent_sizes`` are lists of ints; ``vm`` is an
int or null; ``forced`` is a bool.  Every field is required and no other key is allowed::

    {"kind":"allocate","tick":1200,"alloc":3,"alloc_kind":"app","hosts":[5],"size":6291456,
     "tag":"9b5d...","extent_sizes":[2097152,4194304],"untouched":2097152,"vm":null}

Reading (:meth:`Workload.from_jsonl`) checks, and raises
:class:`~dcdmap.errors.CorruptDataError` naming the line: bad JSON, an unknown header,
format or version, a missing or unexpected field, an unknown kind, a wrong type (bools are
not ints), a negative number, extent sizes that are not positive multiples of 64 or do not
sum to ``size``, ``untouched`` above the size, a host count that does not fit the allocation
kind, an untagged allocation with a tag or a tagged one with the null UUID, ticks going
backwards, a reused id, and a release or stop of an id not live.  Blank lines are ignored.

Tags are ``uuid5(NAMESPACE, "<seed>/<alloc>")``: a pure function of the seed and the
allocation id, so a tag can be recomputed from the trace alone and does not depend on the
order of the random draws.

Generation
----------
Arrivals of VMs, app, shared and untagged jobs and kexecs are Poisson streams (exponential
inter-arrival times with the preset's means); lifetimes are lognormal (a median in ticks and
a sigma).  VM memory comes from a table of sizes and weights; a share ``pool_fraction`` of
it is allocated from the pool (kind ``"app"``, ``vm`` set), the rest is local.  Job sizes
are log-uniform.  Every size is a multiple of ``extent_align`` and cut into extents drawn
log-uniform over ``[extent_align, extent_max]`` (numpy, one array per allocation); the last
extent takes the remainder.  ``extent_align`` defaults to 2 MiB because Linux accepts only
2 MiB-aligned extents; set it to 64 for the full ``[64 B, max]`` range.

The pool is never over-committed: capacity requests are admitted first come, first served;
one that does not fit waits (its start is *delayed*, and so is every request behind it)
until enough earlier allocations are released.  Requests that could only start at or after
``duration`` are dropped, and whatever is still live at ``duration`` is released (VMs
stopped) at ``duration``, so every trace ends with an empty pool.  Kexecs are not delayed.

Randomness is one ``numpy.random.default_rng(seed)``: the same seed gives the same trace
with the same numpy; keep the trace file when a run must be reproduced across versions.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, TextIO

import numpy as np

from .errors import ConfigurationError, CorruptDataError
from .units import GiB, MiB, TiB, parse_size

__all__ = [
    "Host", "VmStart", "VmStop", "Allocate", "Release", "Migrate", "Kexec", "Event",
    "Preset", "PRESETS", "presets", "generate", "Workload", "NAMESPACE", "NULL_TAG",
    "FORMAT", "VERSION",
]

FORMAT = "dcdmap-trace"
VERSION = 1
#: Namespace of the generated tags: ``uuid5(NAMESPACE, f"{seed}/{alloc}")``.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://dcdmap/workload")
#: The tag of untagged allocations (DESIGN §6: the null UUID means untagged).
NULL_TAG = uuid.UUID(int=0)

ALLOC_KINDS = ("app", "shared", "untagged")
MIGRATE_POLICIES = ("drain", "prepopulate")
KEXEC_POLICIES = ("release", "preserve")


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """Host ``host`` is up with ``memory`` bytes of DRAM, ``stranded`` of them left over."""
    KIND: ClassVar[str] = "host"
    tick: int
    host: int
    memory: int
    stranded: int


@dataclass(frozen=True)
class VmStart:
    """VM ``vm`` of ``memory`` bytes starts on ``host``; ``untouched`` bytes stay untouched."""
    KIND: ClassVar[str] = "vm_start"
    tick: int
    vm: int
    host: int
    memory: int
    untouched: int


@dataclass(frozen=True)
class VmStop:
    """VM ``vm`` stops."""
    KIND: ClassVar[str] = "vm_stop"
    tick: int
    vm: int


@dataclass(frozen=True, eq=False)
class Allocate:
    """The pool offers ``size`` bytes under ``tag`` to ``hosts``, cut into ``extent_sizes``.

    ``extent_sizes`` is a read-only ``uint64`` array (any sequence of ints is accepted and
    converted).  Equality compares the arrays element-wise:

    >>> a = Allocate(0, 1, "app", (2,), 4 * MiB, NULL_TAG, [2 * MiB, 2 * MiB])
    >>> a.extent_sizes.dtype, a == Allocate(0, 1, "app", (2,), 4 * MiB, NULL_TAG, (2 * MiB,) * 2)
    (dtype('uint64'), True)
    """
    KIND: ClassVar[str] = "allocate"
    tick: int
    alloc: int
    kind: str
    hosts: tuple
    size: int
    tag: uuid.UUID
    extent_sizes: np.ndarray
    untouched: int = 0
    vm: int | None = None

    def __post_init__(self):
        arr = np.array(self.extent_sizes, dtype=np.uint64)   # a copy we own
        arr.flags.writeable = False
        object.__setattr__(self, "extent_sizes", arr)
        object.__setattr__(self, "hosts", tuple(self.hosts))

    def __eq__(self, other):
        if not isinstance(other, Allocate):
            return NotImplemented
        return (self.tick, self.alloc, self.kind, self.hosts, self.size, self.tag,
                self.untouched, self.vm) == (other.tick, other.alloc, other.kind, other.hosts,
                                             other.size, other.tag, other.untouched, other.vm) \
            and np.array_equal(self.extent_sizes, other.extent_sizes)

    __hash__ = None  # type: ignore[assignment]  (holds an array)


@dataclass(frozen=True)
class Release:
    """Allocation ``alloc`` goes back to the pool (``forced``: reclaimed without consent)."""
    KIND: ClassVar[str] = "release"
    tick: int
    alloc: int
    forced: bool = False


@dataclass(frozen=True)
class Migrate:
    """VM ``vm`` migrates to ``to_host``; ``policy`` is ``"drain"`` or ``"prepopulate"``."""
    KIND: ClassVar[str] = "migrate"
    tick: int
    vm: int
    to_host: int
    policy: str


@dataclass(frozen=True)
class Kexec:
    """Host ``host`` kexecs into a new kernel; ``policy`` is ``"release"`` or ``"preserve"``."""
    KIND: ClassVar[str] = "kexec"
    tick: int
    host: int
    policy: str


Event = Host | VmStart | VmStop | Allocate | Release | Migrate | Kexec
_CLASSES = {c.KIND: c for c in (Host, VmStart, VmStop, Allocate, Release, Migrate, Kexec)}
# Order of kinds within one tick: frees first, then new work.
_RANK = {"vm_stop": 0, "release": 1, "migrate": 2, "kexec": 3, "host": 4, "vm_start": 5,
         "allocate": 6}


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

#: Azure-like VM memory mix (estimate): small VMs dominate by count.
_VM_MIX = ((2 * GiB, 0.25), (4 * GiB, 0.30), (8 * GiB, 0.25), (16 * GiB, 0.12),
           (32 * GiB, 0.06), (64 * GiB, 0.02))


@dataclass(frozen=True)
class Preset:
    """The knobs of :func:`generate`.  Ticks are ints (1 tick = 1 ms), sizes ints in bytes.

    An ``*_interarrival`` of 0 turns that stream off.  Ranges are ``(lo, hi)`` pairs.

    >>> PRESETS["pond-16"].hosts
    16
    """
    description: str = ""
    hosts: int = 8                          # pool fan-in (Pond: 8-16 sockets, preprint 8-32)
    pool_size: int = 64 * GiB
    duration: int = 600_000                 # ticks
    host_memory: int = 64 * GiB             # local DRAM per host
    stranded: tuple = (0.0, 0.25)           # stranded fraction per host, uniform (Pond <= 25%)
    vm_interarrival: float = 6_000.0        # mean ticks between VM starts (whole pool)
    vm_sizes: tuple = _VM_MIX               # (memory, weight) pairs
    vm_lifetime: float = 120_000.0          # median ticks, lognormal
    vm_lifetime_sigma: float = 1.0
    pool_fraction: float = 0.25             # share of a VM's memory taken from the pool
    untouched: float = 0.5                  # median untouched fraction (uniform on [0, 2m])
    migrate_prob: float = 0.05              # chance a VM migrates once in its life
    prepopulate_prob: float = 0.5           # chance a migration pre-populates (else drains)
    app_interarrival: float = 30_000.0      # single-host tagged jobs (in-memory DB, ...)
    shared_interarrival: float = 60_000.0   # multi-host shared jobs (famfs-like)
    shared_fanout: tuple = (2, 4)           # hosts per shared job, uniform, clipped to hosts
    untagged_interarrival: float = 60_000.0
    job_size: tuple = (256 * MiB, 8 * GiB)  # log-uniform size of app/shared/untagged jobs
    job_lifetime: float = 90_000.0          # median ticks, lognormal
    job_lifetime_sigma: float = 1.0
    forced_prob: float = 0.02               # chance a release is forced
    kexec_interarrival: float = 300_000.0
    kexec_release_prob: float = 0.8         # chance a kexec gives all capacity back
    extent_align: int = 2 * MiB             # Linux accepts 2 MiB-aligned extents only
    extent_max: int = 1 * GiB               # extents log-uniform over [extent_align, max]

    def params(self) -> dict:
        """The knobs as JSON-ready values (no description; pairs as lists)."""
        d = dataclasses.asdict(self)
        del d["description"]
        return json.loads(json.dumps(d))


_SIZE_KNOBS = {"pool_size", "host_memory", "extent_align", "extent_max"}

PRESETS: dict[str, Preset] = {
    "default": Preset(
        description="8 hosts, 64 GiB pool, 10 min: a few hundred events (QEMU MHSLD 8 heads)",
        vm_interarrival=10_000.0, vm_lifetime=60_000.0),
    "pond-16": Preset(
        description="16 hosts, 1 TiB pool, 1 h: Pond's 16-socket pool, VM-dominated",
        hosts=16, pool_size=1 * TiB, duration=3_600_000, host_memory=384 * GiB,
        vm_interarrival=1_500.0, vm_lifetime=300_000.0, app_interarrival=60_000.0,
        shared_interarrival=180_000.0, untagged_interarrival=120_000.0,
        job_size=(1 * GiB, 64 * GiB), job_lifetime=300_000.0, kexec_interarrival=600_000.0),
    "pond-32": Preset(
        description="32 hosts, 2 TiB pool, 1 h: the Pond preprint's 32-socket upper end",
        hosts=32, pool_size=2 * TiB, duration=3_600_000, host_memory=384 * GiB,
        vm_interarrival=900.0, vm_lifetime=300_000.0, app_interarrival=30_000.0,
        shared_interarrival=90_000.0, untagged_interarrival=60_000.0,
        job_size=(1 * GiB, 64 * GiB), job_lifetime=300_000.0, kexec_interarrival=300_000.0),
    "famfs-shared": Preset(
        description="8 hosts, 256 GiB pool, 10 min: famfs-like shared jobs dominate",
        pool_size=256 * GiB, vm_interarrival=60_000.0, app_interarrival=60_000.0,
        shared_interarrival=4_000.0, shared_fanout=(2, 8), untagged_interarrival=0.0,
        job_size=(1 * GiB, 16 * GiB), job_lifetime=60_000.0),
    "large": Preset(
        description="64 hosts, 16 TiB pool, 1 h: ~10^6 extents over the run (stress)",
        hosts=64, pool_size=16 * TiB, duration=3_600_000, host_memory=512 * GiB,
        vm_interarrival=500.0, vm_lifetime=600_000.0, pool_fraction=0.5,
        app_interarrival=6_000.0, shared_interarrival=12_000.0, shared_fanout=(2, 8),
        untagged_interarrival=12_000.0, job_size=(1 * GiB, 64 * GiB), job_lifetime=600_000.0,
        kexec_interarrival=120_000.0, extent_max=256 * MiB),
}


def presets() -> dict[str, str]:
    """Preset name -> one-line description.

    >>> sorted(presets())
    ['default', 'famfs-shared', 'large', 'pond-16', 'pond-32']
    """
    return {name: p.description for name, p in PRESETS.items()}


def _check_preset(p: Preset) -> None:
    def bad(msg):
        raise ConfigurationError(msg)

    for name in ("hosts", "pool_size", "duration", "host_memory", "extent_align", "extent_max"):
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            bad(f"{name} must be a positive int, not {v!r}")
    if p.extent_align % 64:
        bad(f"extent_align {p.extent_align} is not a multiple of 64")
    if p.extent_max < p.extent_align:
        bad(f"extent_max {p.extent_max} is below extent_align {p.extent_align}")
    if p.pool_size % p.extent_align:
        bad(f"pool_size {p.pool_size} is not a multiple of extent_align {p.extent_align}")
    for name in ("vm_interarrival", "app_interarrival", "shared_interarrival",
                 "untagged_interarrival", "kexec_interarrival"):
        if not getattr(p, name) >= 0:
            bad(f"{name} must be >= 0 (0 turns the stream off), not {getattr(p, name)!r}")
    for name in ("vm_lifetime", "job_lifetime"):
        if not getattr(p, name) >= 1:
            bad(f"{name} must be >= 1 tick, not {getattr(p, name)!r}")
    for name in ("vm_lifetime_sigma", "job_lifetime_sigma"):
        if not getattr(p, name) >= 0:
            bad(f"{name} must be >= 0")
    for name in ("pool_fraction", "untouched", "migrate_prob", "prepopulate_prob", "forced_prob",
                 "kexec_release_prob"):
        if not 0 <= getattr(p, name) <= 1:
            bad(f"{name} must be in [0, 1], not {getattr(p, name)!r}")
    lo, hi = p.stranded
    if not 0 <= lo <= hi <= 1:
        bad(f"stranded must be 0 <= lo <= hi <= 1, not {p.stranded!r}")
    lo, hi = p.job_size
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi):
        bad(f"job_size must be ints 0 < lo <= hi, not {p.job_size!r}")
    lo, hi = p.shared_fanout
    if not 2 <= lo <= hi:
        bad(f"shared_fanout must be 2 <= lo <= hi, not {p.shared_fanout!r}")
    if p.shared_interarrival and p.hosts < 2:
        bad("shared jobs need at least 2 hosts (set shared_interarrival=0)")
    if not p.vm_sizes or any(s <= 0 or w < 0 for s, w in p.vm_sizes) \
            or sum(w for _, w in p.vm_sizes) <= 0:
        bad("vm_sizes must be (size > 0, weight >= 0) pairs with a positive total")


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def _cut(rng: np.random.Generator, size: int, align: int, max_extent: int) -> np.ndarray:
    """Cut ``size`` (a multiple of ``align``) into log-uniform extents, the last the rest."""
    hi = min(max_extent // align * align, size)
    if size <= align or hi <= align:
        return np.full(size // align, align, dtype=np.uint64) if hi <= align else \
            np.array([size], dtype=np.uint64)
    llo, lhi = math.log(align), math.log(hi + align)
    mean = hi / math.log(hi / align)                    # log-uniform mean, about
    n = int(size / mean * 1.25) + 8
    parts = []
    total = 0
    while True:
        d = np.exp(rng.uniform(llo, lhi, n)).astype(np.uint64)
        d //= np.uint64(align)
        d *= np.uint64(align)                           # >= align already
        np.minimum(d, np.uint64(hi), out=d)
        cs = np.cumsum(d, dtype=np.uint64) + np.uint64(total)
        k = int(np.searchsorted(cs, size))             # first with cs >= size
        if k < n:
            d = d[:k + 1]
            d[k] = size - (int(cs[k - 1]) if k else total)
            parts.append(d)
            return np.concatenate(parts) if len(parts) > 1 else d
        parts.append(d)
        total = int(cs[-1])


def _arrivals(rng, mean: float, duration: int) -> np.ndarray:
    """Ticks of a Poisson stream of mean inter-arrival ``mean`` over [0, duration)."""
    if not mean:
        return np.empty(0, dtype=np.int64)
    n = int(duration / mean * 1.2) + 16
    t = np.cumsum(rng.exponential(mean, n))
    while t[-1] < duration:
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(mean, n))])
    return t[t < duration].astype(np.int64)


def generate(preset: str | Preset = "default", *, seed: int = 0, hosts: int | None = None,
             pool_size: int | str | None = None, duration: int | None = None,
             **overrides: Any) -> "Workload":
    """Draw a workload from ``preset`` (a name of :data:`PRESETS` or a :class:`Preset`).

    ``hosts``, ``pool_size`` (int or ``"64GiB"``), ``duration`` (ticks) and any other
    :class:`Preset` field given as a keyword override the preset.  Same arguments, same
    events.  Raises :class:`~dcdmap.errors.ConfigurationError` for an unknown preset or
    knob, or a knob out of range.

    >>> w = generate(seed=3, hosts=4, duration=60_000, shared_fanout=(2, 3))
    >>> w.params["hosts"], all(len(e.hosts) == 1 for e in w.allocations() if e.kind == "app")
    (4, True)
    >>> generate("nope")
    Traceback (most recent call last):
    ...
    dcdmap.errors.ConfigurationError: unknown preset 'nope' (known: default, pond-16, pond-32, famfs-shared, large)
    """
    if isinstance(preset, Preset):
        base, name = preset, "custom"
    elif preset in PRESETS:
        base, name = PRESETS[preset], preset
    else:
        raise ConfigurationError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be an int >= 0, not {seed!r}")
    if hosts is not None:
        overrides["hosts"] = hosts
    if pool_size is not None:
        overrides["pool_size"] = pool_size
    if duration is not None:
        overrides["duration"] = duration
    known = {f.name for f in dataclasses.fields(Preset)}
    for k, v in overrides.items():
        if k not in known:
            raise ConfigurationError(f"unknown knob {k!r}")
        if k in _SIZE_KNOBS and isinstance(v, str):
            overrides[k] = parse_size(v)
    p = dataclasses.replace(base, **overrides)
    _check_preset(p)
    return Workload(name, seed, p.params(), tuple(_generate(p, seed)))


def _generate(p: Preset, seed: int) -> list:
    rng = np.random.default_rng(seed)
    align, H = p.extent_align, p.hosts
    out: list = []          # (tick, rank, seq, event)

    def emit(ev):
        out.append((ev.tick, _RANK[ev.KIND], len(out), ev))

    def align_down(x: float) -> int:
        return int(x) // align * align

    def lifetime(median, sigma) -> int:
        return max(1, int(median * math.exp(sigma * rng.standard_normal())))

    def untouched_of(size: int) -> int:
        return min(size, align_down(size * min(1.0, rng.uniform(0, 2 * p.untouched))))

    def job_size() -> int:
        lo, hi = p.job_size
        s = align_down(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return min(max(s, align), p.pool_size)

    for h in range(H):
        emit(Host(0, h, p.host_memory, align_down(p.host_memory * rng.uniform(*p.stranded))))

    streams = [(s, _arrivals(rng, mean, p.duration)) for s, mean in (
        ("vm", p.vm_interarrival), ("app", p.app_interarrival), ("shared", p.shared_interarrival),
        ("untagged", p.untagged_interarrival), ("kexec", p.kexec_interarrival))]
    arrivals = sorted((int(t), i, s) for i, (s, ts) in enumerate(streams) for t in ts)

    # Per-VM draws in one batch each (memory, host, untouched share), consumed in order.
    n_vm = len(streams[0][1])
    weights = np.array([w for _, w in p.vm_sizes], dtype=float)
    vm_memory = iter(np.array([s for s, _ in p.vm_sizes], dtype=np.int64)[
        rng.choice(len(weights), size=n_vm, p=weights / weights.sum())].tolist())
    vm_host = iter(rng.integers(H, size=n_vm).tolist())
    vm_share = iter(np.minimum(1.0, rng.uniform(0, 2 * p.untouched, n_vm)).tolist())

    free = p.pool_size
    live: list = []          # heap of (end tick, alloc id, size)
    now = 0
    vm_id = alloc_id = 0
    admitting = True

    def alloc(kind, hosts, size, untouched, vm, start, end):
        nonlocal alloc_id
        a = alloc_id
        alloc_id += 1
        tag = NULL_TAG if kind == "untagged" else uuid.uuid5(NAMESPACE, f"{seed}/{a}")
        emit(Allocate(start, a, kind, hosts, size, tag, _cut(rng, size, align, p.extent_max),
                      untouched, vm))
        emit(Release(end, a, bool(rng.random() < p.forced_prob)))
        heapq.heappush(live, (end, a, size))

    def admit(tick: int, need: int) -> int | None:
        """FIFO admission: the tick at which ``need`` bytes fit, or None past the end."""
        nonlocal now, free
        now = max(now, tick)
        while live and live[0][0] <= now:
            free += heapq.heappop(live)[2]
        while free < need and live:
            end, _, size = heapq.heappop(live)
            now = max(now, end)
            free += size
        if now >= p.duration:
            return None
        free -= need
        return now

    for tick, _, stream in arrivals:
        if stream == "kexec":
            emit(Kexec(tick, int(rng.integers(H)),
                       "release" if rng.random() < p.kexec_release_prob else "preserve"))
            continue
        if not admitting:
            continue
        if stream == "vm":
            memory, host = next(vm_memory), next(vm_host)
            untouched = align_down(memory * next(vm_share))
            need = min(align_down(memory * p.pool_fraction), p.pool_size)
            start = admit(tick, need) if need else tick
            if start is None:
                admitting = False
                continue
            end = min(start + lifetime(p.vm_lifetime, p.vm_lifetime_sigma), p.duration)
            v = vm_id
            vm_id += 1
            emit(VmStart(start, v, host, memory, untouched))
            if need:
                alloc("app", (host,), need, min(need, untouched), v, start, end)
            emit(VmStop(end, v))
            if rng.random() < p.migrate_prob and end - start >= 2 and H >= 2:
                to = int(rng.integers(H - 1))
                emit(Migrate(int(rng.integers(start + 1, end)), v, to + (to >= host),
                             "prepopulate" if rng.random() < p.prepopulate_prob else "drain"))
        else:
            size = job_size()
            start = admit(tick, size)
            if start is None:
                admitting = False
                continue
            end = min(start + lifetime(p.job_lifetime, p.job_lifetime_sigma), p.duration)
            if stream == "shared":
                lo, hi = p.shared_fanout
                k = int(rng.integers(lo, min(hi, H) + 1)) if lo <= H else H
                hosts = tuple(sorted(int(h) for h in rng.choice(H, size=min(k, H), replace=False)))
            else:
                hosts = (int(rng.integers(H)),)
            alloc(stream, hosts, size, untouched_of(size), None, start, end)

    out.sort(key=lambda r: r[:3])
    return [r[3] for r in out]


# --------------------------------------------------------------------------------------------
# Workload and the trace format
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """A preset name, a seed, the knobs used (``params``) and the events, sorted by tick.

    Write it with :meth:`to_jsonl`, read it back with :meth:`from_jsonl` (an equal
    Workload).  Not meant to be mutated; safe to share between threads for reading.
    """
    preset: str
    seed: int
    params: dict
    events: tuple = field(default=())

    def allocations(self) -> list:
        """The :class:`Allocate` events, in order."""
        return [e for e in self.events if isinstance(e, Allocate)]

    def summary(self) -> dict:
        """Counts and peaks of the trace, in one pass over the events.

        Keys: ``events`` (count by KIND), ``allocations`` and ``bytes`` (count and bytes
        allocated by allocation kind), ``extents`` (total), ``peak_bytes`` and
        ``peak_extents`` (most bytes / extents allocated and not yet released at once; a
        shared allocation counts once), ``hosts`` (distinct hosts named), ``vms``.

        >>> w = Workload("hand", 0, {}, (
        ...     Allocate(0, 0, "app", (1,), 4 * MiB, NULL_TAG, [2 * MiB] * 2),
        ...     Allocate(5, 1, "shared", (0, 2), 2 * MiB, NULL_TAG, [2 * MiB]),
        ...     Release(7, 0)))
        >>> s = w.summary()
        >>> s["peak_bytes"] == 6 * MiB, s["peak_extents"], s["hosts"], s["events"]["release"]
        (True, 3, 3, 1)
        """
        events = dict.fromkeys(_CLASSES, 0)
        count = dict.fromkeys(ALLOC_KINDS, 0)
        nbytes = dict.fromkeys(ALLOC_KINDS, 0)
        live: dict = {}
        hosts: set = set()
        vms: set = set()
        inb = inx = peak_b = peak_x = total_x = 0
        for e in self.events:
            events[e.KIND] += 1
            if isinstance(e, Allocate):
                count[e.kind] += 1
                nbytes[e.kind] += e.size
                n = len(e.extent_sizes)
                live[e.alloc] = (e.size, n)
                inb += e.size
                inx += n
                total_x += n
                peak_b, peak_x = max(peak_b, inb), max(peak_x, inx)
                hosts.update(e.hosts)
            elif isinstance(e, Release):
                b, n = live.pop(e.alloc, (0, 0))
                inb -= b
                inx -= n
            elif isinstance(e, (Host, VmStart, Kexec)):
                hosts.add(e.host)
                if isinstance(e, VmStart):
                    vms.add(e.vm)
            elif isinstance(e, Migrate):
                hosts.add(e.to_host)
        return {"events": events, "allocations": count, "bytes": nbytes, "extents": total_x,
                "peak_bytes": peak_b, "peak_extents": peak_x, "hosts": len(hosts),
                "vms": len(vms)}

    # -- writing ---------------------------------------------------------------------------

    def to_jsonl(self, file: TextIO) -> None:
        """Write the trace (header, then one event a line) to the text file ``file``."""
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        file.write(dumps({"format": FORMAT, "version": VERSION, "preset": self.preset,
                          "seed": self.seed, "params": self.params}) + "\n")
        for e in self.events:
            file.write(dumps(_to_json(e)) + "\n")

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def from_jsonl(cls, lines: Iterable[str] | str) -> "Workload":
        """Read a trace from an iterable of lines (an open file) or one string.

        Raises :class:`~dcdmap.errors.CorruptDataError` naming the line and the fault:

        >>> Workload.from_jsonl('{"format":"dcdmap-trace","version":2}')
        Traceback (most recent call last):
        ...
        dcdmap.errors.CorruptDataError: line 1: unsupported trace version 2 (this reader knows 1)
        """
        if isinstance(lines, str):
            lines = lines.splitlines()
        header = None
        events = []
        state = _ReadState()
        lineno = 0
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CorruptDataError(f"line {lineno}: bad JSON ({exc})") from None
            try:
                if header is None:
                    header = _read_header(obj)
                else:
                    events.append(state.read(obj))
            except _Bad as exc:
                raise CorruptDataError(f"line {lineno}: {exc}") from None
        if header is None:
            raise CorruptDataError(f"line {lineno + 1}: missing header (empty trace)")
        return cls(header[0], header[1], header[2], tuple(events))


class _Bad(Exception):
    """A fault in one line; from_jsonl adds the line number."""


def _to_json(e) -> dict:
    d = {"kind": e.KIND}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(e, Allocate):
            if f.name == "kind":
                d["alloc_kind"] = v
                continue
            if f.name == "tag":
                v = str(v)
            elif f.name == "extent_sizes":
                v = v.tolist()
            elif f.name == "hosts":
                v = list(v)
        d[f.name] = v
    return d


def _read_header(obj) -> tuple:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise _Bad(f"not a {FORMAT} header (want {{\"format\": \"{FORMAT}\", ...}})")
    if obj.get("version") != VERSION:
        raise _Bad(f"unsupported trace version {obj.get('version')!r} (this reader knows {VERSION})")
    extra = set(obj) - {"format", "version", "preset", "seed", "params"}
    if extra:
        raise _Bad(f"unexpected header field {sorted(extra)[0]!r}")
    for key, typ in (("preset", str), ("seed", int), ("params", dict)):
        if key not in obj:
            raise _Bad(f"header: missing field {key!r}")
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool):
            raise _Bad(f"header: {key!r} must be {typ.__name__}, not {type(obj[key]).__name__}")
    return obj["preset"], obj["seed"], obj["params"]


# JSON key -> expected kind of value, per event KIND (in write order, after "kind").
_INT, _BOOL, _STR, _HOSTS, _TAG, _SIZES, _OPTINT = range(7)
_SPEC = {
    "host": (("tick", _INT), ("host", _INT), ("memory", _INT), ("stranded", _INT)),
    "vm_start": (("tick", _INT), ("vm", _INT), ("host", _INT), ("memory", _INT),
                 ("untouched", _INT)),
    "vm_stop": (("tick", _INT), ("vm", _INT)),
    "allocate": (("tick", _INT), ("alloc", _INT), ("alloc_kind", _STR), ("hosts", _HOSTS),
                 ("size", _INT), ("tag", _TAG), ("extent_sizes", _SIZES), ("untouched", _INT),
                 ("vm", _OPTINT)),
    "release": (("tick", _INT), ("alloc", _INT), ("forced", _BOOL)),
    "migrate": (("tick", _INT), ("vm", _INT), ("to_host", _INT), ("policy", _STR)),
    "kexec": (("tick", _INT), ("host", _INT), ("policy", _STR)),
}


def _int(key, v):
    if type(v) is not int:
        raise _Bad(f"{key!r} must be an int, not {type(v).__name__}")
    if v < 0:
        raise _Bad(f"{key!r} is negative ({v})")
    return v


class _ReadState:
    """Cross-line checks: ticks in order, ids not reused, releases of live ids only."""

    def __init__(self):
        self.tick = 0
        self.allocs: set = set()
        self.live_allocs: set = set()
        self.vms: set = set()
        self.live_vms: set = set()

    def read(self, obj):
        if not isinstance(obj, dict):
            raise _Bad(f"an event must be a JSON object, not {type(obj).__name__}")
        if "kind" not in obj:
            raise _Bad("missing field 'kind'")
        kind = obj["kind"]
        if kind not in _SPEC:
            raise _Bad(f"unknown kind {kind!r} (known: {', '.join(_SPEC)})")
        spec = _SPEC[kind]
        for key, _ in spec:
            if key not in obj:
                raise _Bad(f"{kind}: missing field {key!r}")
        if len(obj) != len(spec) + 1:
            extra = sorted(set(obj) - {k for k, _ in spec} - {"kind"})
            raise _Bad(f"{kind}: unexpected field {extra[0]!r}")
        vals = {}
        for key, t in spec:
            v = obj[key]
            if t == _INT:
                v = _int(key, v)
            elif t == _OPTINT:
                v = None if v is None else _int(key, v)
            elif t == _BOOL:
                if type(v) is not bool:
                    raise _Bad(f"{key!r} must be a bool, not {type(v).__name__}")
            elif t == _STR:
                if not isinstance(v, str):
                    raise _Bad(f"{key!r} must be a string, not {type(v).__name__}")
            elif t == _HOSTS:
                if not isinstance(v, list) or not v:
                    raise _Bad(f"{key!r} must be a non-empty list of ints")
                v = tuple(_int(key, h) for h in v)
            elif t == _TAG:
                if not isinstance(v, str):
                    raise _Bad(f"{key!r} must be a UUID string, not {type(v).__name__}")
                try:
                    v = uuid.UUID(v)
                except ValueError:
                    raise _Bad(f"{key!r} is not a UUID: {v!r}") from None
            elif t == _SIZES:
                if not isinstance(v, list) or not v or any(type(x) is not int for x in v):
                    raise _Bad(f"{key!r} must be a non-empty list of ints")
                try:
                    v = np.array(v, dtype=np.int64)
                except OverflowError:
                    raise _Bad(f"{key!r}: an extent size does not fit 63 bits") from None
                if v.min() <= 0 or (v % 64).any():
                    bad = int(np.flatnonzero((v <= 0) | (v % 64 != 0))[0])
                    raise _Bad(f"{key!r}[{bad}] = {int(v[bad])} is not a positive multiple of 64")
            vals[key] = v
        tick = vals["tick"]
        if tick < self.tick:
            raise _Bad(f"tick {tick} goes backwards (after tick {self.tick})")
        self.tick = tick
        return getattr(self, "_" + kind)(vals)

    def _host(self, v):
        if v["stranded"] > v["memory"]:
            raise _Bad(f"stranded {v['stranded']} exceeds memory {v['memory']}")
        return Host(**v)

    def _vm_start(self, v):
        if v["vm"] in self.vms:
            raise _Bad(f"vm {v['vm']} started twice")
        if v["untouched"] > v["memory"]:
            raise _Bad(f"untouched {v['untouched']} exceeds memory {v['memory']}")
        self.vms.add(v["vm"])
        self.live_vms.add(v["vm"])
        return VmStart(**v)

    def _vm_stop(self, v):
        if v["vm"] not in self.live_vms:
            raise _Bad(f"vm {v['vm']} stops but is not running")
        self.live_vms.discard(v["vm"])
        return VmStop(**v)

    def _migrate(self, v):
        if v["vm"] not in self.live_vms:
            raise _Bad(f"vm {v['vm']} migrates but is not running")
        if v["policy"] not in MIGRATE_POLICIES:
            raise _Bad(f"unknown migrate policy {v['policy']!r} (known: {', '.join(MIGRATE_POLICIES)})")
        return Migrate(**v)

    def _kexec(self, v):
        if v["policy"] not in KEXEC_POLICIES:
            raise _Bad(f"unknown kexec policy {v['policy']!r} (known: {', '.join(KEXEC_POLICIES)})")
        return Kexec(**v)

    def _allocate(self, v):
        kind = v.pop("alloc_kind")
        if kind not in ALLOC_KINDS:
            raise _Bad(f"unknown alloc_kind {kind!r} (known: {', '.join(ALLOC_KINDS)})")
        hosts, size = v["hosts"], v["size"]
        if kind == "shared" and (len(hosts) < 2 or len(set(hosts)) != len(hosts)):
            raise _Bad(f"a shared allocation needs >= 2 distinct hosts, not {list(hosts)}")
        if kind != "shared" and len(hosts) != 1:
            raise _Bad(f"an {kind} allocation has exactly 1 host, not {len(hosts)}")
        if (kind == "untagged") != (v["tag"] == NULL_TAG):
            raise _Bad("untagged allocations, and only they, carry the null UUID as tag")
        total = int(v["extent_sizes"].sum(dtype=np.uint64))
        if total != size:
            raise _Bad(f"extent sizes sum to {total}, not to size {size}")
        if v["untouched"] > size:
            raise _Bad(f"untouched {v['untouched']} exceeds size {size}")
        if v["alloc"] in self.allocs:
            raise _Bad(f"alloc {v['alloc']} allocated twice")
        self.allocs.add(v["alloc"])
        self.live_allocs.add(v["alloc"])
        return Allocate(kind=kind, **v)

    def _release(self, v):
        if v["alloc"] not in self.live_allocs:
            raise _Bad(f"alloc {v['alloc']} released but not live")
        self.live_allocs.discard(v["alloc"])
        return Release(**v)
