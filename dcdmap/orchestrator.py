"""A first orchestrator core: a :class:`~dcdmap.workload.Workload` run through one memory appliance.

The appliance is one multi-headed :class:`~dcdmap.cxl.Device` with a single *shareable* DC
region (the workload's ``pool_size`` rounded up to 256 MiB, 2 MiB blocks), one head per
workload host, and one Linux :class:`~dcdmap.cxl.Host` (DCD v11) on each head.  The flow is
the RFC's "application-specific memory" flow (reference §1.3, steps 1-7):

* ``allocate`` app / untagged: the orchestrator (acting as fabric manager) places the
  allocation's ``extent_sizes`` first-fit in its own ledger of the pool (an
  :class:`~dcdmap.ExtentMap` of the DPA it handed out, 2 MiB aligned; an extent that fits no
  single gap is cut over the first gaps), offers them *prescriptively* under the tag to the
  host's head, lets the host poll (it answers with an Add-Response), and for ``app`` creates
  the DAX device by tag (steps 2-5).  Accepted bytes are compared with the size.
* ``allocate`` shared: the same offer to the first host, then *enable-shared-access* to every
  other host (the device re-splits and reorders the capacity per head), a poll on each, a DAX
  device by tag on each, and :func:`dcdmap.verify_views` over the hosts' views and media maps:
  every logical byte must reach the same DPA on every host.
* ``release``: the DAX devices of the tag are destroyed on every holder, then a tag-based
  Release Capacity per holder and a poll (the host answers with Release DC; steps 6-7).  A
  ``forced`` release destroys the DAX device, takes the capacity back at once (Forced
  Capacity Release, which Linux ignores) and tells the host model it lost the tag
  (:meth:`Host.lose`).
* ``host``, ``vm_start``, ``vm_stop``, ``migrate``, ``kexec``: counted only.  Presenting pool
  memory to VMs (and acting on migrations and kexecs) comes later, with ``dcdmap.present``.

Untagged allocations: Linux refuses untagged extents in a shareable partition (§4.1 step 5,
"shareable partition needs a tag"; R4), and the appliance here has only that partition.  With
``untagged="tag"`` (the default) the orchestrator therefore offers an untagged allocation under
a tag of its own (``uuid5(NAMESPACE, "untagged/<seed>/<alloc>")``, counted in
``Report.retagged``); ``untagged="null"`` offers it with the null UUID and records the host's
refusal.

Linux stages at most ``CXL_DC_MAX_PENDING_EXTENTS`` (100) records of one More chain and drops
the whole offer beyond that; ``max_pending`` (default 100, as Linux) is given to every host, so
a larger allocation (or a shared one the device re-splits past 100 extents) is refused and
reported.  This happens in practice: ``generate("default", seed=0)`` has one app allocation of
111 extents, and in ``famfs-shared`` the per-head re-split often passes 100.  Pass a larger
``max_pending`` to model a kernel with a larger limit.  (The orchestrator does not merge
DPA-adjacent extents to stay under the limit; it offers the workload's extents as drawn.)

Everything is seeded (the device seed is the workload seed) and no wall clock is read: the
same workload gives the same :class:`Report`.

    >>> from dcdmap.workload import generate
    >>> w = generate("default", seed=2, duration=60_000)
    >>> r = Orchestrator(w).run()
    >>> r.refusals, r.shared_consistent, r.final.free == r.final.total
    ([], True, True)
    >>> r.bytes_accepted == r.bytes_offered == r.bytes_released
    True
    >>> r == Orchestrator(generate("default", seed=2, duration=60_000)).run()
    True
"""
from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ._core import ExtentMap, verify_views
from .cxl import Device, Host, Region
from .cxl.device import Capacity
from .cxl.host import MAX_PENDING_EXTENTS
from .errors import DcdmapError
from .units import MiB
from .workload import NAMESPACE, NULL_TAG, Allocate, Release, Workload

__all__ = ["Orchestrator", "Report", "BLOCK_SIZE", "POOL_ALIGN"]

BLOCK_SIZE = 2 * MiB        # DC region block size (and Linux's PMD alignment)
POOL_ALIGN = 256 * MiB      # region length rounded up to the capacity multiplier
_REGION = 0


@dataclass
class Report:
    """What a run did.  Byte counts are per head: a shared allocation to k hosts counts k times.

    ``counts``: events per KIND.  ``bytes_allocated``: sum of ``Allocate.size`` times the
    number of hosts.  ``bytes_offered`` / ``bytes_accepted``: what the device offered / the
    hosts accepted.  ``bytes_released``: what went back (normal and forced).  ``refusals``:
    ``(tick, event, reason)`` for everything that did not go as planned.  ``shared_verified``:
    shared tags checked with verify_views; ``shared_consistent``: all of them were.
    ``retagged``: untagged allocations offered under an orchestrator tag.  ``forced``: forced
    releases.  ``final``: the device capacity after the run.
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
    forced: int = 0
    final: Optional[Capacity] = None


@dataclass
class _Live:
    """One live allocation: its tag, its DPA ranges in the ledger, and who holds it."""

    tag: uuid.UUID
    starts: np.ndarray
    lengths: np.ndarray
    holders: List[int] = field(default_factory=list)


class Orchestrator:
    """Run a workload through one multi-headed appliance (see the module docstring).

    Parameters
    ----------
    workload : the events and their parameters (``hosts``, ``pool_size``) and seed.
    untagged : ``"tag"`` (offer untagged allocations under an orchestrator tag) or ``"null"``.
    max_pending : the hosts' More-chain limit (Linux: 100).
    max_extents : extents a head may track on the device (QEMU: 512; large by default).

    Attributes ``device`` and ``hosts`` are the appliance and the hosts, for inspection.
    Thread safety: none.
    """

    def __init__(self, workload: Workload, *, untagged: str = "tag",
                 max_pending: int = MAX_PENDING_EXTENTS, max_extents: int = 1 << 24) -> None:
        if untagged not in ("tag", "null"):
            raise ValueError(f"untagged must be 'tag' or 'null', not {untagged!r}")
        self.workload = workload
        self.untagged = untagged
        params = workload.params
        nhosts = int(params["hosts"])
        pool = -(-int(params["pool_size"]) // POOL_ALIGN) * POOL_ALIGN
        self.region = Region(base=0, length=pool, block_size=BLOCK_SIZE, shareable=True)
        self.device = Device([self.region], heads=nhosts, seed=workload.seed, max_extents=max_extents)
        self.hosts = [Host(self.device, h, max_pending=max_pending) for h in range(nhosts)]
        self._ledger = ExtentMap(BLOCK_SIZE)       # DPA the orchestrator has handed out
        self._live: Dict[int, _Live] = {}
        self.report = Report()
        self._ran = False

    # ------------------------------------------------------------------ driving

    def run(self) -> Report:
        """Handle every event in order and return the :class:`Report` (once per orchestrator)."""
        if self._ran:
            raise RuntimeError("an Orchestrator runs its workload once")
        self._ran = True
        counts: Counter = Counter()
        for ev in self.workload.events:
            counts[ev.KIND] += 1
            if isinstance(ev, Allocate):
                self._allocate(ev)
            elif isinstance(ev, Release):
                self._release(ev)
            # host / vm_start / vm_stop / migrate / kexec: counted only (presentations later).
        end = max((ev.tick for ev in self.workload.events), default=0)
        for h in self.hosts:
            h.poll(end)
        self.report.counts = dict(sorted(counts.items()))
        self.report.final = self.device.capacity(_REGION)
        return self.report

    def _refuse(self, tick: int, ev: object, reason: str) -> None:
        self.report.refusals.append((tick, f"{type(ev).__name__.lower()} {getattr(ev, 'alloc', '')}".strip(),
                                     reason))

    # ------------------------------------------------------------------ placement

    def _place(self, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """First-fit placement of the extent sizes in the ledger; an extent that fits no single
        gap is cut over the first gaps (block-aligned).  Raises DcdmapError when the pool is
        full (it cannot be: the generator never over-commits)."""
        lo, hi = self.region.base, self.region.end
        out_s: List[int] = []
        out_n: List[int] = []
        for size in sizes.tolist():
            at = self._ledger.find_free(size, align=BLOCK_SIZE, lo=lo, hi=hi)
            if at is not None:
                self._ledger.insert(at, size)
                out_s.append(at)
                out_n.append(size)
                continue
            gaps = self._ledger.gaps(lo, hi)
            left = size
            for s, n in zip(gaps.starts.tolist(), gaps.lengths.tolist()):
                take = min(n, left)
                self._ledger.insert(s, take)
                out_s.append(s)
                out_n.append(take)
                left -= take
                if not left:
                    break
            if left:
                raise DcdmapError(f"the pool has no room for {size:#x} bytes")
        return np.array(out_s, np.uint64), np.array(out_n, np.uint64)

    def _unplace(self, live: _Live) -> None:
        self._ledger.remove_many(live.starts, live.lengths)

    # ------------------------------------------------------------------ allocate

    def _tag_of(self, ev: Allocate) -> uuid.UUID:
        if ev.kind == "untagged" and self.untagged == "tag":
            self.report.retagged += 1
            return uuid.uuid5(NAMESPACE, f"untagged/{self.workload.seed}/{ev.alloc}")
        return ev.tag

    def _held(self, host: Host, tag: uuid.UUID, starts: np.ndarray, lengths: np.ndarray) -> int:
        """Bytes of the allocation the host holds after answering."""
        if tag != NULL_TAG:
            try:
                return host.group(tag).size
            except DcdmapError:
                return 0
        held = host.extents()
        if not len(held):
            return 0
        m = ExtentMap.from_arrays(held[:, 0], held[:, 1])
        kinds = m.classify_many(starts, lengths)
        return int(lengths[kinds == ExtentMap.WITHIN].astype(object).sum())

    def _allocate(self, ev: Allocate) -> None:
        rep = self.report
        tag = self._tag_of(ev)
        rep.bytes_allocated += ev.size * len(ev.hosts)
        starts, lengths = self._place(ev.extent_sizes)
        live = _Live(tag, starts, lengths)
        self._live[ev.alloc] = live
        first, *others = ev.hosts
        try:
            offer = self.device.add_capacity(first, _REGION, np.stack([starts, lengths], axis=1), tag=tag)
        except DcdmapError as e:
            self._refuse(ev.tick, ev, f"host {first}: device refused the offer: {e}")
            return
        rep.bytes_offered += offer.length
        host = self.hosts[first]
        host.poll(ev.tick)
        got = self._held(host, tag, starts, lengths)
        rep.bytes_accepted += got
        if got:
            live.holders.append(first)
        if got != ev.size:
            self._refuse(ev.tick, ev, f"host {first} accepted {got} of {ev.size} bytes")
            if not got:
                return
        if ev.kind == "app":
            self._create_dax(ev, host, tag)
        if ev.kind != "shared":
            return
        for h in others:
            try:
                offer = self.device.add_capacity(h, _REGION, policy="enable-shared-access", tag=tag)
            except DcdmapError as e:
                self._refuse(ev.tick, ev, f"host {h}: device refused enable-shared-access: {e}")
                continue
            rep.bytes_offered += offer.length
            self.hosts[h].poll(ev.tick)
            got = self._held(self.hosts[h], tag, starts, lengths)
            rep.bytes_accepted += got
            if got:
                live.holders.append(h)
            if got != ev.size:
                self._refuse(ev.tick, ev, f"host {h} accepted {got} of {ev.size} bytes")
        for h in live.holders:
            self._create_dax(ev, self.hosts[h], tag)
        try:
            check = verify_views([self.hosts[h].view(tag) for h in live.holders],
                                 [self.hosts[h].media_map() for h in live.holders],
                                 names=[f"host {h}" for h in live.holders])
        except DcdmapError as e:
            check = None
            reason = str(e)
        else:
            reason = check.reason
        rep.shared_verified += 1
        if not check:
            rep.shared_consistent = False
            self._refuse(ev.tick, ev, f"shared views inconsistent: {reason}")

    def _create_dax(self, ev: Allocate, host: Host, tag: uuid.UUID) -> None:
        try:
            host.create_dax(tag)
        except DcdmapError as e:
            self._refuse(ev.tick, ev, f"host {host.head}: no DAX device: {e}")

    # ------------------------------------------------------------------ release

    def _destroy_dax(self, host: Host, tag: uuid.UUID) -> None:
        for dax in host.dax_devices:
            if dax.uuid == tag:
                dax.resize(0)

    def _release(self, ev: Release) -> None:
        live = self._live.pop(ev.alloc, None)
        if live is None:
            self._refuse(ev.tick, ev, "no such live allocation")
            return
        rep = self.report
        if ev.forced:
            rep.forced += 1
        for h in live.holders:
            host = self.hosts[h]
            before = self.device.head_capacity(h)[1]
            try:
                if live.tag == NULL_TAG:
                    held = host.extents()
                    m = ExtentMap.from_arrays(live.starts, live.lengths)
                    kinds = m.classify_many(held[:, 0], held[:, 1]) if len(held) else np.zeros(0)
                    mine = held[kinds == ExtentMap.WITHIN]
                    self.device.release_capacity(h, _REGION, mine, forced=ev.forced)
                else:
                    self._destroy_dax(host, live.tag)
                    self.device.release_capacity(h, _REGION, policy="tag-based", tag=live.tag,
                                                 forced=ev.forced)
            except DcdmapError as e:
                self._refuse(ev.tick, ev, f"host {h}: release refused: {e}")
                continue
            host.poll(ev.tick)
            if ev.forced and live.tag != NULL_TAG:
                host.lose(live.tag, "forced release")
            gone = before - self.device.head_capacity(h)[1]
            rep.bytes_released += gone
        self._unplace(live)
