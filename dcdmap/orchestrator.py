"""The orchestrator: a :class:`~dcdmap.workload.Workload` played over memory appliances, their
Linux hosts and the hosts' VMs (reference: rfc-and-users.md §1.3 and §1.8; docs/orchestrator.md).

**Appliances.**  ``appliances`` multi-headed :class:`~dcdmap.cxl.Device`\\ s share the
workload's ``pool_size`` evenly (each rounded up to 256 MiB), each with one *shareable* DC
region of 2 MiB blocks and one head per workload host.  Every host runs one Linux
:class:`~dcdmap.cxl.Host` (DCD v11) per appliance.  Linux creates its region over the first
DC partition only, so one region per appliance is what a v11 host can use.

**Placement** (``placement``) of an allocation on an appliance and of its extents in the
region, in the orchestrator's ledger of each region (an :class:`~dcdmap.ExtentMap` of the
DPA it handed out):

* ``"first-fit"``: the first appliance with room; each extent at the lowest free address
  (an extent that fits no single gap is cut over the first gaps);
* ``"spread"``: the appliance with the most free bytes; each extent in the largest gap
  (worst fit), which spreads allocations over the region;
* ``"device"``: the first appliance with room, and the device's own choice of extents
  (selection policy *free*, seeded).

With ``merge`` (default) DPA-adjacent extents of one allocation are offered as one: Linux
stages at most 100 records of one More chain (``max_pending``) and drops the whole offer
beyond that, and all extents of a tag must come in one chain (§4.1 4a).  Without it the
workload's extents are offered as drawn (a fragmented offer of >100 extents is refused).

**The flow** of RFC §1.3: *allocate* places, offers (prescriptive, or free for
``"device"``), lets the host poll and answer, and then either creates the DAX device by
tag (an application, steps 3-5) or presents the group to the VM the allocation backs.
Shared allocations go to the first host, then to every other holder by
*enable-shared-access*; every holder's view is checked with :func:`dcdmap.verify_views`.
*release* destroys the DAX device once the application has let go, asks for a tag-based
release and lets the host answer (steps 6-7).  An application may still hold its DAX device
when the release comes (``linger``, seeded): the host defers (EBUSY, §4.4), the
orchestrator re-issues the release every ``retry`` ticks and, after ``max_retries``, forces
it: the device takes the capacity back, the application loses it (``Report.bytes_lost``),
and the host keeps the extents mapped, since Linux logs and ignores Forced Capacity Release
(§4.4).  That DPA would be refused by the host if offered to it again, so the orchestrator
keeps it out of use until the host restarts (``bytes_stale``, ``bytes_stranded``).  A
workload release marked ``forced`` is forced at once.

**VMs** (``presentation``): each VM gets the presentation of its pool part on its host at
``vm_start`` (``"hotplug"``, ``"hotplug-kmem"``, ``"virtio-mem"``,
``"virtio-mem-extended"``, ``"type3"``; None: the VM's allocation is treated as an
application).  The VMM backs the presentation with the host's DAX device of the tag
(hot-plug creates it itself).  At ``vm_stop`` the VMM exits and the DAX devices go away.

**Migration** (RFC §1.8): ``drain`` takes the capacity back from the running guest
(:meth:`~dcdmap.present.base.Presentation.remove`, retried every ``retry`` ticks; if the
guest still will not give it back after ``max_retries``, the migration is *blocked* and the
VM stays), releases it on the source and offers it on the destination; ``prepopulate``
offers and presents it on the destination first (falling back to drain when the pool has
no room for both), then releases the source.

**kexec** of a host: the old kernel's processes end (its VMs are stopped and restarted on
the new kernel, its applications' DAX devices close).  ``release``: the host gives every
extent back before the kexec (RFC §1.8) and the new kernel is offered the same allocations
again; ``preserve``: the new kernel recovers the extents from the device's extent list
(region create and rescan, §4.5) and the DAX devices are created again by tag.

**Untagged** allocations: Linux refuses untagged extents in a shareable partition (§4.1 5,
R4), so with ``untagged="tag"`` (default) the orchestrator offers them under a tag of its
own (``uuid5(NAMESPACE, "untagged/<seed>/<alloc>")``, counted in ``Report.retagged``);
``"null"`` offers them untagged and records the refusal.

**The run trace.**  Every decision is an *action* (a dict with ``"do"`` and ``"tick"``)
in :attr:`Orchestrator.actions`; :meth:`Orchestrator.write_trace` writes the workload's
events interleaved with the actions they caused, then the final report, as a ``dcdmap-run``
JSON-lines file that :func:`replay` runs again and compares line by line.  Everything is
seeded and no wall clock is read: the same workload and configuration give the same run.

    >>> from dcdmap.workload import generate
    >>> w = generate("default", seed=2, duration=60_000)
    >>> r = Orchestrator(w, presentation="type3").run()
    >>> r.refusals, r.shared_consistent, r.final.free == r.final.total
    ([], True, True)
    >>> r.bytes_accepted == r.bytes_offered == r.bytes_released
    True
    >>> r == Orchestrator(generate("default", seed=2, duration=60_000), presentation="type3").run()
    True
"""
from __future__ import annotations

import dataclasses
import heapq
import io
import json
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO, Tuple

import numpy as np

from ._core import ExtentMap, verify_views
from .cxl import Device, Host, Region
from .cxl.device import Capacity
from .cxl.host import MAX_PENDING_EXTENTS
from .errors import ConfigurationError, CorruptDataError, DcdmapError
from .present import HotplugPresentation, Type3Presentation, VirtioMemPresentation
from .present.base import Presentation
from .present.hotplug import q35_boot_mem_end
from .units import GiB, MiB
from .workload import (NAMESPACE, NULL_TAG, Allocate, Kexec, Migrate, Release, VmStart, VmStop,
                       Workload)

__all__ = ["Orchestrator", "Config", "Report", "GuestTotals", "replay", "read_run",
           "PRESENTATIONS", "PLACEMENTS", "BLOCK_SIZE", "POOL_ALIGN", "RUN_FORMAT"]

BLOCK_SIZE = 2 * MiB        # DC region block size (and Linux's PMD alignment)
POOL_ALIGN = 256 * MiB      # an appliance's region length is a multiple of this
RUN_FORMAT = "dcdmap-run"
_REGION = 0
PRESENTATIONS = ("hotplug", "hotplug-kmem", "virtio-mem", "virtio-mem-extended", "type3")
PLACEMENTS = ("first-fit", "spread", "device")


def _round_up(x: int, a: int) -> int:
    return -(-x // a) * a


class _Ledger:
    """The DPA the orchestrator handed out in one region: an :class:`ExtentMap` of 2 MiB
    blocks, with a first-fit search that does not walk again over what it walked before.

    ``floor[k]`` is a lower bound of the lowest gap of at least ``k`` blocks.  A search for
    ``k`` blocks starts there, and its answer raises the floors of every size >= ``k`` (no
    gap that large starts below it; taking space never opens one).  Giving back ``[s, e)``
    can open a gap of ``k`` blocks no lower than ``k`` blocks below ``s``, so it lowers
    ``floor[k]`` to that.  The answers are those of a search from the region base; in a
    fragmented region of 10^6 extents that search walked the whole map on every call (hours
    for a large run), this one a few leaves (``docs/performance.md``).
    """

    def __init__(self, base: int, end: int, block: int) -> None:
        self.map = ExtentMap(block)
        self.base, self.end, self.block = base, end, block
        self._floor = np.full(16, base, np.int64)       # index: size in blocks

    @property
    def mapped_bytes(self) -> int:
        return self.map.mapped_bytes

    def first_fit(self, size: int) -> Optional[int]:
        """The lowest block-aligned address where ``size`` bytes (a multiple of the block)
        are free, or None."""
        k = size // self.block
        if k >= len(self._floor):
            self._floor = np.concatenate([self._floor, np.full(k + 1 - len(self._floor), self.base, np.int64)])
        start = int(self._floor[k])
        at = self.map.find_free(size, align=self.block, lo=start, hi=self.end) if start + size <= self.end else None
        np.maximum(self._floor[k:], self.end if at is None else at, out=self._floor[k:])
        return at

    def insert_many(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.map.insert_many(starts, lengths)

    def remove_many(self, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.map.remove_many(starts, lengths)
        if len(starts):
            below = int(starts.min()) - np.arange(len(self._floor), dtype=np.int64) * self.block
            np.minimum(self._floor, np.maximum(self.base, below), out=self._floor)

    def gaps(self) -> Any:
        return self.map.gaps(self.base, self.end)


class _Host(Host):
    """A Linux host model whose notes also record how long its device's log was when they
    were made, so that its own steps (DAX claims) can be put back in order among the
    device's requests (:meth:`Orchestrator.write_qmp`)."""

    def _note(self, event: str, **kw: Any) -> None:
        if self.keep_log:                    # millions of notes in a long run: skip the work
            super()._note(event, at=len(self.device.log), **kw)


@dataclass(frozen=True)
class Config:
    """The orchestrator's knobs (see the module docstring).  Ticks are ints (1 tick = 1 ms).

    >>> Config(placement="spread").params()["placement"]
    'spread'
    >>> Config(placement="best")
    Traceback (most recent call last):
    ...
    dcdmap.errors.ConfigurationError: placement must be one of first-fit, spread, device, not 'best'
    """
    presentation: Optional[str] = None
    appliances: int = 1
    placement: str = "first-fit"
    merge: bool = True
    untagged: str = "tag"
    max_pending: int = MAX_PENDING_EXTENTS   # the hosts' More-chain limit (Linux: 100)
    max_extents: int = 1 << 24               # extents a head may track on a device (QEMU: 512)
    linger: float = 0.05                     # chance an application still holds its DAX device
    linger_ticks: int = 10_000               # median ticks it goes on holding it (lognormal)
    retry: int = 5_000                       # ticks between re-issued releases / drains
    max_retries: int = 6                     # then the release is forced / the drain blocked
    vm_slots: int = 8                        # hot-plug: DIMM slots per VM
    logs: bool = True                        # devices and hosts keep their logs (write_qmp needs them)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigurationError(msg)
        if self.presentation is not None and self.presentation not in PRESENTATIONS:
            bad(f"presentation must be one of {', '.join(PRESENTATIONS)} or None, not {self.presentation!r}")
        if self.placement not in PLACEMENTS:
            bad(f"placement must be one of {', '.join(PLACEMENTS)}, not {self.placement!r}")
        if self.untagged not in ("tag", "null"):
            bad(f"untagged must be 'tag' or 'null', not {self.untagged!r}")
        for name in ("appliances", "max_pending", "max_extents", "linger_ticks", "retry", "vm_slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive int, not {v!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            bad(f"max_retries must be an int >= 0, not {self.max_retries!r}")
        for name in ("merge", "logs"):            # a typo ("no") would silently mean True
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be a bool, not {getattr(self, name)!r}")
        # a str linger raised a bare TypeError that did not name the knob
        if isinstance(self.linger, bool) or not isinstance(self.linger, (int, float, np.integer, np.floating)) \
                or not 0 <= self.linger <= 1:
            bad(f"linger must be in [0, 1], not {self.linger!r}")

    def params(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GuestTotals:
    """What presenting the pool to VMs cost over a run, summed over VMs (each VM at its peak).

    ``vms``: presentations set up (one per VM, and one more after each migration or
    host kexec that moved or restarted it); ``presented``: bytes presented (at each
    VM's peak); ``gpa_used`` / ``gpa_wasted``: guest physical bytes taken / that can never
    hold presented capacity; ``objects``: guest objects by kind; ``control_ops``: operations
    by kind (ACPI, virtio-mem requests, mailbox, QMP, events); ``removal``: how capacity is
    taken back (guaranteed / best-effort); ``takeback_requested`` / ``takeback_returned``:
    bytes asked back from running guests (drain migrations) and what came back;
    ``tag_discoverable`` (R1) and ``shared_out_of_ram`` (R3).
    """
    vms: int = 0
    presented: int = 0
    gpa_used: int = 0
    gpa_wasted: int = 0
    objects: Dict[str, int] = field(default_factory=dict)
    control_ops: Dict[str, int] = field(default_factory=dict)
    removal: str = ""
    takeback_requested: int = 0
    takeback_returned: int = 0
    tag_discoverable: bool = False
    shared_out_of_ram: bool = False


@dataclass
class Report:
    """What a run did.  Byte counts are per head: a shared allocation to k hosts counts k times.

    ``counts``: workload events per KIND.  ``bytes_allocated``: sum of ``Allocate.size``
    times the number of hosts.  ``bytes_offered`` / ``bytes_accepted``: what the devices
    offered / the hosts accepted (re-offers after migration and kexec included).
    ``bytes_released``: what went back (normal and forced).  ``refusals``: ``(tick, what,
    reason)`` for everything that did not go as planned.  ``shared_verified`` /
    ``shared_consistent``: shared tags checked with verify_views, and whether all agreed.
    ``retagged``: untagged allocations offered under an orchestrator tag.  ``deferred``:
    releases a host deferred (EBUSY) and ``retries`` re-issued; ``forced``: forced releases
    (from the workload or after ``max_retries``); ``bytes_lost``: bytes applications still
    used when they were forced away; ``bytes_stale``: bytes hosts kept mapped after a forced
    release (Linux ignores it); ``bytes_stranded``: DPA still kept out of use at the end
    because a host that ignored a forced release has not restarted.  ``migrations`` / ``kexecs``: by outcome / policy;
    ``bytes_reoffered``: offered again after a migration or kexec; ``bytes_recovered``:
    found again by a new kernel (kexec preserve).  ``extents_offered`` and
    ``peak_extents``: extents offered in all, and most accepted at once over all heads.
    ``guest``: :class:`GuestTotals` (None without a presentation).  ``final``: the
    capacity of all appliances after the run.
    """
    counts: Dict[str, int] = field(default_factory=dict)
    bytes_allocated: int = 0
    bytes_offered: int = 0
    bytes_accepted: int = 0
    bytes_released: int = 0
    refusals: List[Tuple[int, str, str]] = field(default_factory=list)
    shared_verified: int = 0
    shared_consistent: bool = True
    retagged: int = 0
    deferred: int = 0
    retries: int = 0
    forced: int = 0
    bytes_lost: int = 0
    bytes_stale: int = 0
    bytes_stranded: int = 0
    migrations: Dict[str, int] = field(default_factory=dict)
    kexecs: Dict[str, int] = field(default_factory=dict)
    bytes_reoffered: int = 0
    bytes_recovered: int = 0
    extents_offered: int = 0
    peak_extents: int = 0
    guest: Optional[GuestTotals] = None
    final: Optional[Capacity] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready (tuples as lists, the capacity as a dict)."""
        d = dataclasses.asdict(self)
        d["refusals"] = [list(r) for r in self.refusals]
        d["final"] = None if self.final is None else self.final._asdict()
        return d


@dataclass
class _Live:
    """One live allocation: where it is, who holds it, who uses it."""
    ev: Allocate
    tag: uuid.UUID
    appliance: int = -1
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    holders: List[int] = field(default_factory=list)
    extents: Dict[int, int] = field(default_factory=dict)   # extents each holder accepted
    vm: Optional[int] = None
    lingers: bool = False          # the application keeps its DAX device open a while
    busy_until: int = -1           # ... until this tick (drawn at release)
    tries: int = 0
    stale: List[int] = field(default_factory=list)   # hosts still mapping it after a forced release

    def fresh(self) -> "_Live":
        """The same allocation, not placed anywhere yet (for a re-offer)."""
        return _Live(self.ev, self.tag, vm=self.vm)


@dataclass
class _Vm:
    ev: VmStart
    host: int
    pres: Optional[Presentation] = None
    appliance: int = -1
    allocs: List[int] = field(default_factory=list)
    presented: set = field(default_factory=set)              # tags presented to the guest
    peak: Dict[str, int] = field(default_factory=dict)
    tries: int = 0


class Orchestrator:
    """Run a workload over appliances, hosts and VMs (see the module docstring).

    ``Orchestrator(workload, config)`` or ``Orchestrator(workload, **config_fields)``.
    Attributes: ``devices`` (one per appliance), ``hosts[appliance][host]`` (the Linux host
    models), ``actions`` (the run trace), ``report``.  Thread safety: none.
    """

    def __init__(self, workload: Workload, config: Optional[Config] = None, **kw: Any) -> None:
        if config is None:
            config = Config(**kw)
        elif kw:
            config = dataclasses.replace(config, **kw)
        self.config = c = config
        self.workload = workload
        params = workload.params
        self.nhosts = int(params["hosts"])
        per = _round_up(-(-int(params["pool_size"]) // c.appliances), POOL_ALIGN)
        self.region = Region(base=0, length=per, block_size=BLOCK_SIZE, shareable=True)
        self.devices = [Device([self.region], heads=self.nhosts, seed=workload.seed * 1009 + a,
                               max_extents=c.max_extents, keep_log=c.logs) for a in range(c.appliances)]
        self.hosts = [[self._new_host(d, h) for h in range(self.nhosts)] for d in self.devices]
        self._old_hosts: List[Host] = []     # replaced by a kexec; their logs stay for write_qmp
        self._ledgers = [_Ledger(self.region.base, self.region.end, BLOCK_SIZE) for _ in self.devices]
        self._live: Dict[int, _Live] = {}
        self._vms: Dict[int, _Vm] = {}
        self._stale: Dict[int, _Live] = {}      # forced away, still mapped by some host: DPA quarantined
        self._rng = np.random.default_rng([workload.seed, 0x0C4E])
        self._timers: List[Tuple[int, int, Callable[..., None], tuple]] = []
        self._timer_seq = 0
        self._accepted_extents = 0
        self.now = 0
        self.actions: List[Dict[str, Any]] = []
        self._marks: List[int] = []          # actions[:marks[i]] happened up to event i
        self.report = Report(guest=GuestTotals() if c.presentation else None)
        self._ran = False

    # ------------------------------------------------------------------ driving

    def run(self, progress: Optional[Callable[[int], None]] = None) -> Report:
        """Handle every event in order (and the timers they set) and return the
        :class:`Report`.  ``progress(i)`` is called every 1024 events.  Runs once."""
        if self._ran:
            raise RuntimeError("an Orchestrator runs its workload once")
        self._ran = True
        counts: Counter = Counter()
        handlers = {Allocate: self._allocate, Release: self._release, VmStart: self._vm_start,
                    VmStop: self._vm_stop, Migrate: self._migrate, Kexec: self._kexec}
        for i, ev in enumerate(self.workload.events):
            self._run_timers(ev.tick)
            self.now = ev.tick
            counts[ev.KIND] += 1
            handler = handlers.get(type(ev))
            if handler is not None:
                handler(ev)
            self._marks.append(len(self.actions))
            if progress is not None and not i % 1024:
                progress(i)
        self._run_timers(None)
        for row in self.hosts:
            for h in row:
                h.poll(self.now)
        rep = self.report
        rep.counts = dict(sorted(counts.items()))
        caps = [d.capacity(_REGION) for d in self.devices]
        rep.final = Capacity(*(sum(c[i] for c in caps) for i in range(4)))
        if rep.guest is not None:
            rep.guest.objects = dict(sorted(rep.guest.objects.items()))
            rep.guest.control_ops = dict(sorted(rep.guest.control_ops.items()))
        rep.migrations = dict(sorted(rep.migrations.items()))
        rep.kexecs = dict(sorted(rep.kexecs.items()))
        rep.bytes_stranded = sum(int(live.lengths.sum(dtype=np.uint64)) for live in self._stale.values())
        return rep

    def _new_host(self, device: Device, head: int) -> Host:
        return _Host(device, head, max_pending=self.config.max_pending, keep_log=self.config.logs)

    def _at(self, tick: int, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._timers, (tick, self._timer_seq, fn, args))
        self._timer_seq += 1

    def _run_timers(self, until: Optional[int]) -> None:
        while self._timers and (until is None or self._timers[0][0] <= until):
            tick, _, fn, args = heapq.heappop(self._timers)
            self.now = max(self.now, tick)
            fn(*args)

    def _do(self, action: str, **kw: Any) -> None:
        self.actions.append({"do": action, "tick": self.now, **kw})

    def _refuse(self, what: str, reason: str) -> None:
        self.report.refusals.append((self.now, what, reason))
        self._do("refused", what=what, reason=reason)

    # ------------------------------------------------------------------ placement

    def _free(self, a: int) -> int:
        return self.region.length - self._ledgers[a].mapped_bytes

    def _choose_appliance(self, size: int) -> Optional[int]:
        fits = [a for a in range(len(self.devices)) if self._free(a) >= size]
        if not fits:
            return None
        if self.config.placement == "spread":
            return max(fits, key=lambda a: (self._free(a), -a))
        return fits[0]

    def _place(self, a: int, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Place the extent sizes in appliance ``a``'s ledger (first fit or largest gap; an
        extent that fits no single gap is cut over the gaps in order).  The caller checked
        that the bytes fit; the ledger records the placement.  With ``merge``, adjacent
        pieces are joined."""
        ledger = self._ledgers[a]
        spread = self.config.placement == "spread"
        out_s: List[int] = []
        out_n: List[int] = []
        for size in sizes.tolist():
            at = None
            if spread:
                gaps = ledger.gaps()
                if len(gaps.lengths):
                    k = int(np.argmax(gaps.lengths))
                    if int(gaps.lengths[k]) >= size:
                        at = int(gaps.starts[k])
            else:
                at = ledger.first_fit(size)
            if at is not None:
                ledger.map.insert(at, size)
                out_s.append(at)
                out_n.append(size)
                continue
            gaps = ledger.gaps()
            left = size
            for s, n in zip(gaps.starts.tolist(), gaps.lengths.tolist()):
                take = min(n, left)
                ledger.map.insert(s, take)
                out_s.append(s)
                out_n.append(take)
                left -= take
                if not left:
                    break
        starts, lengths = np.array(out_s, np.uint64), np.array(out_n, np.uint64)
        if self.config.merge and len(starts) > 1:
            starts, lengths = _coalesce(starts, lengths)
            if len(starts) > self.config.max_pending:
                # Linux would drop the whole offer: take the largest gaps first instead,
                # the fewest extents that hold the allocation
                ledger.remove_many(starts, lengths)
                starts, lengths = self._place_fewest(a, int(sizes.sum(dtype=np.uint64)))
        return starts, lengths

    def _place_fewest(self, a: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
        gaps = self._ledgers[a].gaps()
        order = np.argsort(gaps.lengths, kind="stable")[::-1]
        lengths = gaps.lengths[order]
        k = int(np.searchsorted(np.cumsum(lengths, dtype=np.uint64), np.uint64(size)))
        starts, lengths = gaps.starts[order][:k + 1].copy(), lengths[:k + 1].copy()
        lengths[-1] -= np.uint64(int(lengths.sum(dtype=np.uint64)) - size)
        order = np.argsort(starts)
        starts, lengths = starts[order], lengths[order]
        self._ledgers[a].insert_many(starts, lengths)
        return starts, lengths

    # ------------------------------------------------------------------ offers

    def _tag_of(self, ev: Allocate) -> uuid.UUID:
        if ev.kind == "untagged" and self.config.untagged == "tag":
            self.report.retagged += 1
            return uuid.uuid5(NAMESPACE, f"untagged/{self.workload.seed}/{ev.alloc}")
        return ev.tag

    def _held(self, host: Host, live: _Live) -> int:
        """Bytes of the allocation the host holds after answering."""
        if live.tag != NULL_TAG:
            try:
                return host.group(live.tag).size
            except DcdmapError:
                return 0
        held = host.extents()
        if not len(held) or not len(live.starts):
            return 0
        m = ExtentMap.from_arrays(held[:, 0], held[:, 1])
        kinds = m.classify_many(live.starts, live.lengths)
        return int(live.lengths[kinds == ExtentMap.WITHIN].sum(dtype=np.uint64))

    def _offer_first(self, live: _Live, h: int, what: str) -> bool:
        """Place ``live`` and offer it to host ``h`` (which answers).  True if the host took
        all of it; on a refusal the placement is undone."""
        rep, ev = self.report, live.ev
        if (ev.extent_sizes % np.uint64(BLOCK_SIZE)).any():
            self._refuse(what, f"extent sizes must be multiples of the appliances' {BLOCK_SIZE:#x}-byte "
                               f"block (QEMU refuses others)")
            return False
        a = self._choose_appliance(ev.size)
        if a is None:
            self._refuse(what, f"no appliance has {ev.size:#x} free bytes")
            return False
        dev = self.devices[a]
        try:
            if self.config.placement == "device":
                offer = dev.add_capacity(h, _REGION, policy="free", length=ev.size, tag=live.tag)
                starts, lengths = offer.extents["start"].copy(), offer.extents["length"].copy()
                self._ledgers[a].insert_many(starts, lengths)
            else:
                starts, lengths = self._place(a, ev.extent_sizes)
                try:
                    offer = dev.add_capacity(h, _REGION, np.stack([starts, lengths], axis=1), tag=live.tag)
                except DcdmapError:
                    self._ledgers[a].remove_many(starts, lengths)
                    raise
        except DcdmapError as e:
            self._refuse(what, f"appliance {a} refused the offer to host {h}: {e}")
            return False
        live.appliance, live.starts, live.lengths = a, starts, lengths
        rep.bytes_offered += offer.length
        rep.extents_offered += len(starts)
        self._do("offer", alloc=ev.alloc, appliance=a, host=h, extents=len(starts), bytes=offer.length)
        if self._accepted(live, h, what):
            return True
        if not live.holders:
            # Refused: the device has the DPA free again, so must the ledger (with placement
            # "device" the device would choose it again and the ledger refuse the overlap).
            self._unplace(live)
        return False

    def _offer_shared(self, live: _Live, h: int, what: str) -> bool:
        """Enable-shared-access of a live shared allocation for host ``h``."""
        try:
            offer = self.devices[live.appliance].add_capacity(h, _REGION, policy="enable-shared-access",
                                                              tag=live.tag)
        except DcdmapError as e:
            self._refuse(what, f"host {h}: enable-shared-access refused: {e}")
            return False
        self.report.bytes_offered += offer.length
        self.report.extents_offered += len(offer.extents)
        self._do("share", alloc=live.ev.alloc, appliance=live.appliance, host=h,
                 extents=len(offer.extents), bytes=offer.length)
        return self._accepted(live, h, what)

    def _accepted(self, live: _Live, h: int, what: str) -> bool:
        host = self.hosts[live.appliance][h]
        host.poll(self.now)
        got = self._held(host, live)
        self.report.bytes_accepted += got
        if got:
            live.holders.append(h)
            live.extents[h] = len(host.group(live.tag).extents) if live.tag != NULL_TAG else len(live.starts)
            self._count_extents(live.extents[h])
        self._do("accept", alloc=live.ev.alloc, host=h, bytes=got)
        if got != live.ev.size:
            self._refuse(what, f"host {h} accepted {got} of {live.ev.size} bytes")
            return False
        return True

    def _count_extents(self, n: int) -> None:
        self._accepted_extents += n
        self.report.peak_extents = max(self.report.peak_extents, self._accepted_extents)

    def _verify_shared(self, live: _Live, what: str) -> None:
        hosts = [self.hosts[live.appliance][h] for h in live.holders]
        try:
            check = verify_views([h.view(live.tag) for h in hosts], [h.media_map() for h in hosts],
                                 names=[f"host {h}" for h in live.holders])
            ok, reason = bool(check), check.reason
        except DcdmapError as e:
            ok, reason = False, str(e)
        self.report.shared_verified += 1
        self._do("verify", alloc=live.ev.alloc, hosts=list(live.holders), consistent=ok)
        if not ok:
            self.report.shared_consistent = False
            self._refuse(what, f"shared views inconsistent: {reason}")

    # ------------------------------------------------------------------ using the capacity

    def _start_use(self, live: _Live, h: int, what: str) -> None:
        """Step 3-5: the application's DAX device by tag, or the VM's presentation."""
        if live.tag == NULL_TAG or live.ev.kind == "untagged":
            return
        vm = self._vms.get(live.vm) if live.vm is not None else None
        if vm is not None and self.config.presentation:
            self._present(vm, live, what)
            return
        try:
            dax = self.hosts[live.appliance][h].create_dax(live.tag)
        except DcdmapError as e:
            self._refuse(what, f"host {h}: no DAX device: {e}")
            return
        self._do("dax", alloc=live.ev.alloc, host=h, name=dax.name)

    def _present(self, vm: _Vm, live: _Live, what: str) -> None:
        host = self.hosts[live.appliance][vm.host]
        if vm.pres is None or vm.appliance != live.appliance:
            vm.pres, vm.appliance = self._presentation(host, vm), live.appliance
            self.report.guest.vms += 1
        kind = self.config.presentation
        try:
            if kind != "hotplug" and kind != "hotplug-kmem":
                host.create_dax(live.tag)            # the VMM's memory backend
            try:
                vm.pres.add(host.group(live.tag))
            except DcdmapError:
                self._close_dax(host, live.tag)
                raise
        except DcdmapError as e:
            self._refuse(what, f"VM {vm.ev.vm}: {kind} refused the capacity: {e}")
            return
        vm.presented.add(live.tag)
        self._do("present", alloc=live.ev.alloc, vm=vm.ev.vm, bytes=live.ev.size)
        m = vm.pres.metrics
        for k, v in (("presented", m.presented), ("gpa_used", m.gpa_used), ("gpa_wasted", m.gpa_wasted),
                     *((f"obj:{o}", n) for o, n in m.objects.items())):
            vm.peak[k] = max(vm.peak.get(k, 0), v)

    def _presentation(self, host: Host, vm: _Vm) -> Presentation:
        kind, memory = self.config.presentation, vm.ev.memory
        pool = sum(self._live[a].ev.size for a in vm.allocs if a in self._live)
        ram = max(_round_up(memory - pool, 2 * MiB), GiB)
        seed = self.workload.seed * 7919 + vm.ev.vm
        if kind in ("hotplug", "hotplug-kmem"):
            return HotplugPresentation(host, ram=ram, slots=self.config.vm_slots,
                                       maxmem=ram + _round_up(memory, GiB), kmem=kind == "hotplug-kmem",
                                       seed=seed)
        if kind in ("virtio-mem", "virtio-mem-extended"):
            return VirtioMemPresentation(host, extended=kind == "virtio-mem-extended",
                                         region_size=_round_up(memory, GiB),
                                         boot_mem_end=q35_boot_mem_end(ram), seed=seed)
        return Type3Presentation(host, window_size=_round_up(memory, POOL_ALIGN), seed=seed)

    def _close_vm(self, vm: _Vm) -> None:
        """The VMM exits: its metrics are added up, its memory backends (DAX devices) close."""
        for live in self._lives_of(vm):
            self._close_dax(self.hosts[live.appliance][vm.host], live.tag)
        if vm.pres is None:
            return
        g = self.report.guest
        m = vm.pres.metrics
        for k in ("presented", "gpa_used", "gpa_wasted"):
            setattr(g, k, getattr(g, k) + vm.peak.get(k, 0))
        for k, v in vm.peak.items():
            if k.startswith("obj:"):
                g.objects[k[4:]] = g.objects.get(k[4:], 0) + v
        for k, v in m.control_ops.items():
            g.control_ops[k] = g.control_ops.get(k, 0) + v
        g.removal, g.tag_discoverable, g.shared_out_of_ram = m.removal, m.tag_discoverable, m.shared_out_of_ram
        vm.pres, vm.peak, vm.presented = None, {}, set()

    @staticmethod
    def _close_dax(host: Host, tag: uuid.UUID) -> None:
        for dax in host.dax_devices:
            if dax.uuid == tag:
                host.destroy_dax(dax)

    # ------------------------------------------------------------------ events

    def _allocate(self, ev: Allocate) -> None:
        what = f"allocate {ev.alloc}"
        self.report.bytes_allocated += ev.size * len(ev.hosts)
        live = _Live(ev, self._tag_of(ev), vm=ev.vm)
        if ev.vm is not None and ev.vm in self._vms:
            self._vms[ev.vm].allocs.append(ev.alloc)
        elif ev.kind != "untagged":
            live.lingers = bool(self._rng.random() < self.config.linger)
        self._live[ev.alloc] = live
        first, *others = ev.hosts
        if not self._offer_first(live, first, what) and not live.holders:
            return
        if ev.kind != "shared":
            self._start_use(live, first, what)
            return
        for h in others:
            self._offer_shared(live, h, what)
        for h in live.holders:
            self._start_use(live, h, what)
        self._verify_shared(live, what)

    def _release(self, ev: Release) -> None:
        live = self._live.get(ev.alloc)
        if live is None:
            self._refuse(f"release {ev.alloc}", "no such live allocation")
            return
        if ev.forced:
            self._force(live, "forced by the workload")
            return
        if live.lingers:
            med = self.config.linger_ticks
            live.busy_until = self.now + max(1, int(med * math.exp(self._rng.standard_normal())))
        self._try_release(live)

    def _try_release(self, live: _Live) -> None:
        """Ask every holder to give the allocation back; re-issue later while one defers, and
        force it after ``max_retries``."""
        in_use = self.now < live.busy_until
        for h in list(live.holders):
            if not in_use:                       # the application has let go of its DAX device
                self._close_dax(self.hosts[live.appliance][h], live.tag)
            self._release_on(live, h, forced=False)
        if not live.holders:
            self._forget(live)
            return
        if not live.tries:
            self.report.deferred += len(live.holders)
        self._do("deferred", alloc=live.ev.alloc, hosts=list(live.holders), attempt=live.tries)
        if live.tries >= self.config.max_retries:
            self._force(live, f"still in use after {live.tries} re-issued releases")
            return
        live.tries += 1
        self._at(self.now + self.config.retry, self._retry_release, live)

    def _retry_release(self, live: _Live) -> None:
        if self._live.get(live.ev.alloc) is live:
            self.report.retries += 1
            self._try_release(live)

    def _release_on(self, live: _Live, h: int, *, forced: bool) -> None:
        """One release of the allocation on host ``h`` (tag-based; the ranges if untagged), and
        the host's answer.  ``h`` leaves ``live.holders`` once its capacity is back, or when
        the device refuses the request (recorded: there is nothing it would release)."""
        host, dev = self.hosts[live.appliance][h], self.devices[live.appliance]
        before, expect = dev.head_capacity(h)[1], self._held(host, live)
        try:
            if live.tag == NULL_TAG:
                held = host.extents()
                m = ExtentMap.from_arrays(live.starts, live.lengths)
                kinds = m.classify_many(held[:, 0], held[:, 1]) if len(held) else np.zeros(0)
                dev.release_capacity(h, _REGION, held[kinds == ExtentMap.WITHIN], forced=forced)
            else:
                dev.release_capacity(h, _REGION, policy="tag-based", tag=live.tag, forced=forced)
        except DcdmapError as e:
            self._refuse(f"release {live.ev.alloc}", f"host {h}: release refused: {e}")
            live.holders.remove(h)
            self._count_extents(-live.extents.pop(h, 0))
            return
        host.poll(self.now)
        gone = before - dev.head_capacity(h)[1]
        self.report.bytes_released += gone
        if gone and gone >= expect:           # all of it: the host no longer holds any part
            live.holders.remove(h)
            self._count_extents(-live.extents.pop(h, 0))
        self._do("release", alloc=live.ev.alloc, host=h, bytes=gone, forced=forced)

    def _force(self, live: _Live, why: str) -> None:
        """Forced Capacity Release on every holder: the device takes the capacity back at
        once, and an application still using it loses it (``bytes_lost``).  Linux logs and
        ignores the event (§4.4): the host keeps the extents mapped (``bytes_stale``), and
        would refuse that DPA if it were offered to it again, so the orchestrator keeps the
        DPA out of use until every such host has restarted (a kexec)."""
        self.report.forced += 1
        self._do("force", alloc=live.ev.alloc, why=why)
        stale, held_bytes = [], 0
        for h in list(live.holders):
            host = self.hosts[live.appliance][h]
            held = self._held(host, live)
            if self.now < live.busy_until:
                self.report.bytes_lost += held
            self._close_dax(host, live.tag)
            self._release_on(live, h, forced=True)
            if held:
                stale.append(h)
                held_bytes += held
        if not stale:
            self._forget(live)
            return
        del self._live[live.ev.alloc]
        live.stale = stale
        self._stale[live.ev.alloc] = live
        self.report.bytes_stale += held_bytes
        self._do("stale", alloc=live.ev.alloc, hosts=list(stale), bytes=held_bytes)

    def _restarted(self, h: int) -> None:
        """Host ``h`` runs a new kernel: the extents it kept after forced releases are gone,
        and DPA no host maps any more goes back to the ledger."""
        for live in list(self._stale.values()):
            if h in live.stale:
                live.stale.remove(h)
                if not live.stale:
                    del self._stale[live.ev.alloc]
                    self._unplace(live)
                    self._do("unstale", alloc=live.ev.alloc)

    def _forget(self, live: _Live) -> None:
        """The allocation is gone from every host: its DPA goes back to the ledger."""
        if self._live.get(live.ev.alloc) is live:
            del self._live[live.ev.alloc]
        self._unplace(live)

    def _unplace(self, live: _Live) -> None:
        """Give the allocation's DPA back to the ledger, unless a host still holds it (then
        it stays out of use, and the run says so)."""
        if live.holders:
            self._refuse(f"release {live.ev.alloc}", f"hosts {live.holders} still hold it: "
                                                     f"its capacity stays out of use")
            live.holders = []
        elif len(live.starts):
            self._ledgers[live.appliance].remove_many(live.starts, live.lengths)
            live.starts = live.lengths = np.zeros(0, np.uint64)

    def _vm_start(self, ev: VmStart) -> None:
        self._vms[ev.vm] = _Vm(ev, ev.host)

    def _vm_stop(self, ev: VmStop) -> None:
        vm = self._vms.pop(ev.vm, None)
        if vm is None:
            return
        if vm.tries:                               # stopped while a drain was being retried
            self.report.migrations["cancelled"] = self.report.migrations.get("cancelled", 0) + 1
            self._do("cancelled", vm=ev.vm)
        self._close_vm(vm)

    # ------------------------------------------------------------------ migration and kexec

    def _migrate(self, ev: Migrate) -> None:
        vm = self._vms.get(ev.vm)
        if vm is None:
            self._refuse(f"migrate {ev.vm}", "no such VM")
            return
        if vm.tries:                               # one migration at a time
            self._refuse(f"migrate {ev.vm}", "a drain of this VM is still being retried")
            return
        lives = self._lives_of(vm)
        if ev.policy == "prepopulate" and lives and \
                self._choose_appliance(sum(live.ev.size for live in lives)) is None:
            self._do("fallback", vm=ev.vm, why="no room to pre-populate: drain")
            self._drain(vm, ev.to_host)
        elif ev.policy == "prepopulate":
            self._prepopulate(vm, ev.to_host, lives)
        else:
            self._drain(vm, ev.to_host)

    def _lives_of(self, vm: _Vm) -> List[_Live]:
        return [self._live[a] for a in vm.allocs if a in self._live]

    def _drain(self, vm: _Vm, to: int) -> None:
        """Take the VM's capacity back while it runs, then move it (retried, then blocked)."""
        g = self.report.guest
        short = 0
        for live in self._lives_of(vm):
            if vm.pres is None or live.tag not in vm.presented:
                continue
            try:
                r = vm.pres.remove(live.tag)
            except DcdmapError as e:
                self._refuse(f"migrate {vm.ev.vm}", f"take-back of allocation {live.ev.alloc} refused: {e}")
                short += live.ev.size
                continue
            if not vm.tries:                   # a retry asks again for the same bytes
                g.takeback_requested += r.requested
            g.takeback_returned += r.returned
            self._do("take_back", vm=vm.ev.vm, alloc=live.ev.alloc, requested=r.requested,
                     returned=r.returned, how=r.how)
            if r.complete:
                vm.presented.discard(live.tag)
            else:
                short += r.requested - r.returned
        if not short:
            vm.tries = 0
            self._move(vm, to)
            return
        if vm.tries >= self.config.max_retries:
            self.report.migrations["blocked"] = self.report.migrations.get("blocked", 0) + 1
            self._refuse(f"migrate {vm.ev.vm}",
                         f"the guest kept {short:#x} bytes after {vm.tries} retries: migration blocked")
            vm.tries = 0            # the drain is over: a later vm_stop does not cancel it too
            return
        vm.tries += 1
        self._at(self.now + self.config.retry, self._drain_again, vm, to)

    def _drain_again(self, vm: _Vm, to: int) -> None:
        if self._vms.get(vm.ev.vm) is vm:
            self.report.retries += 1
            self._drain(vm, to)

    def _move(self, vm: _Vm, to: int) -> None:
        """Drained: release the VM's capacity on the source, offer and present it on ``to``."""
        lives = self._lives_of(vm)
        self._close_vm(vm)
        for live in lives:
            for h in list(live.holders):
                self._release_on(live, h, forced=False)
            self._forget(live)
        vm.host = to
        for live in lives:
            self._reoffer(live, to, f"migrate {vm.ev.vm}")
        self.report.migrations["drain"] = self.report.migrations.get("drain", 0) + 1
        self._do("migrated", vm=vm.ev.vm, to=to, policy="drain")

    def _reoffer(self, old: _Live, h: int, what: str) -> Optional[_Live]:
        """Offer an allocation again, placed afresh, to host ``h`` (which starts using it)."""
        live = old.fresh()
        self._live[live.ev.alloc] = live
        if not self._offer_first(live, h, what):
            if not live.holders:
                self._forget(live)
            return None
        self.report.bytes_reoffered += live.ev.size
        self._start_use(live, h, what)
        return live

    def _prepopulate(self, vm: _Vm, to: int, lives: List[_Live]) -> None:
        """Offer and present the VM's capacity on the destination first; the source copy goes
        back once the guest runs there (the source VMM exits: no guest cooperation)."""
        self._close_vm(vm)
        src, vm.host = vm.host, to
        for old in lives:
            self._reoffer(old, to, f"migrate {vm.ev.vm}")
            for h in list(old.holders):
                self._release_on(old, h, forced=False)
            self._unplace(old)
        self.report.migrations["prepopulate"] = self.report.migrations.get("prepopulate", 0) + 1
        self._do("migrated", vm=vm.ev.vm, to=to, policy="prepopulate", source=src)

    def _kexec(self, ev: Kexec) -> None:
        h, what = ev.host, f"kexec {ev.host}"
        self.report.kexecs[ev.policy] = self.report.kexecs.get(ev.policy, 0) + 1
        for vm in self._vms.values():              # the old kernel's processes end
            if vm.host == h:
                self._close_vm(vm)
        mine = [live for live in self._live.values() if h in live.holders]
        for live in mine:
            self._close_dax(self.hosts[live.appliance][h], live.tag)
            if ev.policy == "release":             # RFC §1.8: give it all back first
                self._release_on(live, h, forced=False)
        for a, dev in enumerate(self.devices):     # the new kernel probes: region create + rescan
            self._old_hosts.append(self.hosts[a][h])
            self.hosts[a][h] = self._new_host(dev, h)
        self._restarted(h)
        self._do("kexec", host=h, policy=ev.policy, allocations=len(mine))
        if ev.policy == "release":
            # Every DPA to be re-offered goes back to the ledger before the first re-offer:
            # with placement "device" the device may choose DPA another of them just gave
            # back, which the ledger still held (the offer was refused and leaked).
            for live in mine:
                if not live.tries and not (live.ev.kind == "shared" and live.holders):
                    self._forget(live)
        for live in mine:
            # ``tries``: the workload released it and the host deferred (the application held
            # its DAX device).  That application ended with the old kernel: the allocation is
            # neither re-offered nor restarted (it was never released), the retry finishes.
            if ev.policy == "preserve":
                got = self._held(self.hosts[live.appliance][h], live)
                self.report.bytes_recovered += got
                if live.tries:
                    continue
                if got == live.ev.size:
                    self._start_use(live, h, what)
                    if live.ev.kind == "shared":       # the recovered view must still agree
                        self._verify_shared(live, what)
                else:
                    self._refuse(what, f"allocation {live.ev.alloc}: the new kernel found {got} of "
                                       f"{live.ev.size} bytes")
            elif live.tries:
                if not live.holders:
                    self._forget(live)
            elif live.ev.kind == "shared" and live.holders:
                if self._offer_shared(live, h, what):
                    self.report.bytes_reoffered += live.ev.size
                    self._start_use(live, h, what)
                    self._verify_shared(live, what)
            else:
                self._reoffer(live, h, what)

    # ------------------------------------------------------------------ the run trace

    def write_trace(self, file: TextIO) -> None:
        """Write the run as ``dcdmap-run`` JSON lines: a header with the configuration, the
        workload's header, each workload event followed by the actions it caused (timers
        included), the actions after the last event, and the report.  Call after
        :meth:`run`."""
        if not self._ran:
            raise RuntimeError("run() first")
        dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
        file.write(dumps({"format": RUN_FORMAT, "version": 1, "config": self.config.params()}) + "\n")
        buf = io.StringIO()
        self.workload.to_jsonl(buf)
        lines = buf.getvalue().splitlines()
        file.write(lines[0] + "\n")
        done = 0
        for i, line in enumerate(lines[1:]):
            file.write(line + "\n")
            for act in self.actions[done:self._marks[i]]:
                file.write(dumps(act) + "\n")
            done = self._marks[i]
        for act in self.actions[done:]:
            file.write(dumps(act) + "\n")
        file.write(dumps({"report": self.report.to_dict()}) + "\n")

    def write_qmp(self, file: TextIO, appliance: int = 0,
                  path: str = "/machine/peripheral/cxl-dcd0") -> None:
        """Write what drove appliance ``appliance`` as lines ``dcdmap check`` reads: the
        device's configuration entry, then the QMP commands of its requests
        (:func:`~dcdmap.cxl.qmp.commands_from_log`) with the hosts' DAX claims
        (``{"dax": ...}``) in the order they happened.  Call after :meth:`run`."""
        from .cxl.qmp import command_from_entry
        if not self._ran:
            raise RuntimeError("run() first")
        if not self.config.logs:
            raise ConfigurationError("write_qmp needs the devices' and hosts' logs: Config(logs=True)")
        dev = self.devices[appliance]
        bases = [r.base for r in dev.regions]
        lines: List[Tuple[int, int, int, Any]] = []
        for i, entry in enumerate(dev.log):
            line = entry if i == 0 else command_from_entry(entry, path, bases) if "error" not in entry else None
            if line is not None:
                lines.append((i, 1, 0, line))
        hosts = [h for h in self._old_hosts if h.device is dev] + list(self.hosts[appliance])
        for n, host in enumerate(hosts):
            for k, note in enumerate(host.log):
                line = _qmp_of_note(note, host.head)
                if line is not None:                 # after the device entries before it
                    lines.append((note["at"], 0, n * (1 << 32) + k, line))
        lines.sort(key=lambda t: t[:3])
        dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode
        for *_, line in lines:
            file.write(dumps(line) + "\n")


def _qmp_of_note(note: Dict[str, Any], head: int) -> Optional[Dict[str, Any]]:
    """A host note as a line of ``dcdmap check``: a DAX claim or its end (else None)."""
    if note["event"] == "dax_created":
        return {"dax": "create", "head": head, "tag": note["tag"]}
    if note["event"] == "dax_destroyed":
        return {"dax": "destroy", "head": head, "tag": note["tag"]}
    return None


def _coalesce(starts: np.ndarray, lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Join ranges that touch, in address order.

    >>> s, n = _coalesce(np.array([8, 0, 4, 20], np.uint64), np.array([4, 4, 4, 4], np.uint64))
    >>> s.tolist(), n.tolist()
    ([0, 20], [12, 4])
    """
    order = np.argsort(starts, kind="stable")
    s, n = starts[order], lengths[order]
    new = np.ones(len(s), bool)
    new[1:] = s[1:] != s[:-1] + n[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.add.reduceat(n, idx).astype(np.uint64)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, uuid.UUID):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------- reading and replaying

def read_run(lines: Iterable[str]) -> Tuple[Config, Workload, List[Dict[str, Any]], Dict[str, Any]]:
    """Read a ``dcdmap-run`` trace: its configuration, workload, actions and report (as
    written).  CorruptDataError names the line of anything malformed."""
    config: Optional[Config] = None
    workload_lines: List[str] = []
    actions: List[Dict[str, Any]] = []
    report: Optional[Dict[str, Any]] = None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise CorruptDataError(f"line {no}: not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise CorruptDataError(f"line {no}: a JSON object was expected")
        if config is None:
            if obj.get("format") != RUN_FORMAT or obj.get("version") != 1 or not isinstance(obj.get("config"), dict):
                raise CorruptDataError(f"line {no}: not a {RUN_FORMAT} version 1 header")
            try:
                config = Config(**obj["config"])
            except (TypeError, ConfigurationError) as e:
                raise CorruptDataError(f"line {no}: bad configuration: {e}") from None
        elif "do" in obj:
            actions.append(obj)
        elif "report" in obj:
            report = obj["report"]
        else:
            workload_lines.append(line)
            if len(workload_lines) > 1 and "kind" not in obj:
                raise CorruptDataError(f"line {no}: neither a workload event, an action nor the report")
    if config is None:
        raise CorruptDataError("empty file: no dcdmap-run header")
    if report is None:
        raise CorruptDataError("the trace ends before its report line (truncated?)")
    try:
        workload = Workload.from_jsonl(workload_lines)
    except CorruptDataError as e:
        raise CorruptDataError(f"the workload in the run trace: {e}") from None
    return config, workload, actions, report


def replay(lines: Iterable[str], progress: Optional[Callable[[int], None]] = None
           ) -> Tuple["Orchestrator", Optional[str]]:
    """Run a ``dcdmap-run`` trace again: the orchestrator (after its run) and None when every
    action and the report are the same, or a line saying where the runs part.
    ``progress`` is :meth:`Orchestrator.run`'s.

    >>> import io
    >>> from dcdmap.workload import generate
    >>> o = Orchestrator(generate("default", seed=1, duration=30_000)); _ = o.run()
    >>> buf = io.StringIO(); o.write_trace(buf)
    >>> replay(buf.getvalue().splitlines())[1] is None
    True
    """
    config, workload, actions, report = read_run(lines)
    again = Orchestrator(workload, config)
    again.run(progress)
    new = json.loads(json.dumps(again.actions, default=_json_default))
    for i, (a, b) in enumerate(zip(actions, new)):
        if a != b:
            return again, f"action {i + 1} differs: the trace has {a}, the replay did {b}"
    if len(actions) != len(new):
        return again, f"the trace has {len(actions)} actions, the replay did {len(new)}"
    got = json.loads(json.dumps(again.report.to_dict(), default=_json_default))
    if got != report:
        diff = sorted(k for k in got if got[k] != report.get(k))
        return again, f"the final report differs in {', '.join(diff)}"
    return again, None
