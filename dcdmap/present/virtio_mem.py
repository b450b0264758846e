"""virtio-mem: the device (virtio spec + QEMU) and a presentation of tagged capacity through it
(reference: presentations.md §2; rfc-and-users.md §1.5-1.8).

:class:`VirtioMemDevice` is the virtio-mem device as the virtio spec and QEMU's
``hw/virtio/virtio-mem.c`` define it: the 56-byte config (block_size, node_id, addr,
region_size, usable_region_size, plugged_size, requested_size) with its invariants, QEMU's
property and realize checks, the usable-region rule, and the four guest requests evaluated in
QEMU's order.  The plugged blocks are an engine map (:class:`~dcdmap.ExtentMap`, granule =
block size): every check is one ``classify_many`` call, no Python loop over blocks.

:class:`VirtioMemPresentation` presents a host's tag groups to one VM through one such device
whose memory backend is the host's tagged capacity, and models the Linux driver (Sub-Block
vs Big-Block Mode, memory added per Linux memory block, auto-onlining, offline failures,
the retry timer).  ``extended=True`` is dcdmap's model of the extension the RFC asks for
(§1.6 option 2), which does not exist: per-tag metadata in the device, devdax instead of
System RAM, and guaranteed unplug of exactly one tag's blocks.

    >>> import uuid
    >>> from dcdmap.cxl import Device, Region, Host
    >>> from dcdmap.present.base import GuestAddressSpace
    >>> dev = Device([Region(base=0, length=4 << 30)], seed=1)
    >>> host = Host(dev)
    >>> tag = uuid.UUID(int=1)
    >>> _ = dev.add_capacity(0, 0, policy="free", length=512 << 20, tag=tag); host.poll()
    >>> vm = VirtioMemPresentation(host, GuestAddressSpace(base=8 << 30, size=64 << 30))
    >>> gpa = vm.add(host.group(tag))
    >>> vm.device.requested_size >> 20, vm.device.plugged_size >> 20, vm.mode
    (512, 512, 'sbm')
    >>> hpa, dpa = vm.translate(gpa + 4096)
    >>> dpa == host.media_map().translate(host.group(tag).view.translate(4096))
    True
    >>> vm.metrics.tag_discoverable, vm.metrics.shared_out_of_ram, vm.metrics.removal
    (False, False, 'best-effort')
"""
from __future__ import annotations

import errno as E
import random
import struct
from enum import IntEnum
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._core import ExtentMap
from ..errors import ConfigurationError, HostError
from .base import (
    BEST_EFFORT, GUARANTEED, GuestAddressSpace, Lifecycle, MemoryBlocks, Presentation, Removal,
    x86_memory_block_size,
)

__all__ = ["VirtioMemDevice", "VirtioMemPresentation", "RequestType", "Response", "BlockState",
           "USABLE_EXTENT", "MAX_NB_BLOCKS", "PAGEBLOCK_SIZE", "RETRY_FIRST_TICKS", "RETRY_MAX_TICKS",
           "TICKS_PER_SECOND"]

MiB, GiB = 1 << 20, 1 << 30
USABLE_EXTENT = 256 * MiB         # QEMU VIRTIO_MEM_USABLE_EXTENT on x86-64 / s390x (2 x 128 MiB sections)
MAX_NB_BLOCKS = 0xFFFF            # nb_blocks is a u16 on the wire
PAGEBLOCK_SIZE = 2 * MiB          # x86-64, 4 KiB pages (newer kernels; older used 4 MiB)
PMD_SIZE = 2 * MiB                # devdax alignment (extended model)
TICKS_PER_SECOND = 1000           # dcdmap's tick is 1 ms (as Host's ADD_TIMEOUT_TICKS)
RETRY_FIRST_TICKS = 50 * TICKS_PER_SECOND   # Linux driver retry timer: 50 s ...
RETRY_MAX_TICKS = 300 * TICKS_PER_SECOND    # ... doubling up to 300 s
CONFIG_SIZE = 56
_CONFIG = struct.Struct("<QH6xQQQQQ")


class RequestType(IntEnum):
    PLUG = 0
    UNPLUG = 1
    UNPLUG_ALL = 2
    STATE = 3


class Response(IntEnum):
    ACK = 0
    NACK = 1
    BUSY = 2
    ERROR = 3


class BlockState(IntEnum):
    PLUGGED = 0
    UNPLUGGED = 1
    MIXED = 2


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def _bytes_in(m: ExtentMap, lo: int, hi: int) -> int:
    """Bytes of ``m`` inside [lo, hi)."""
    ov = m.overlapping(lo, hi - lo)
    if not len(ov.starts):
        return 0
    s = np.maximum(ov.starts, np.uint64(lo))
    e = np.minimum(ov.starts + ov.lengths, np.uint64(hi))
    return int((e - s).sum())


def _pow2(x: int) -> bool:
    return x > 0 and not x & (x - 1)


class VirtioMemDevice:
    """One virtio-mem device (virtio spec "Memory Device", QEMU virtio-mem-pci).

    Parameters are QEMU's properties: ``memdev_size`` (the backend's size = region_size =
    max-size), ``block_size`` (>= 1 MiB, a power of two, >= ``page_size``; default 2 MiB, the
    x86-64 THP size), ``memaddr`` (the GPA of the region; the machine picks it when the
    device is plugged, here the caller does), ``node``/``numa_nodes``, ``requested_size``,
    ``unplugged_inaccessible``, ``usable_extent`` (256 MiB on x86).  The constructor is
    QEMU's property setters followed by realize: every rule broken raises
    ConfigurationError with QEMU's reason, and nothing is created.

    Requests (:meth:`request`) return ``(Response, state)``; ``state`` is a
    :class:`BlockState` for an ACKed STATE and None otherwise.  Checks run in QEMU's order:
    invalid range -> ERROR; PLUG over requested_size -> NACK; a block in the wrong state ->
    ERROR; migration running -> BUSY; else ACK.  Only an ACK changes anything.

    >>> d = VirtioMemDevice(1 << 30, block_size=2 << 20)
    >>> d.set_requested_size(64 << 20)
    >>> d.usable_region_size >> 20                 # requested + 256 MiB
    320
    >>> d.request(RequestType.PLUG, d.addr, 16)
    (<Response.ACK: 0>, None)
    >>> d.request(RequestType.PLUG, d.addr + (32 << 20), 32)[0].name   # 32 + 64 MiB > 64 MiB
    'NACK'
    >>> d.request(RequestType.STATE, d.addr, 32)
    (<Response.ACK: 0>, <BlockState.MIXED: 2>)
    """

    def __init__(self, memdev_size: int, *, block_size: int = 2 * MiB, memaddr: int = 0, node: int = 0,
                 numa_nodes: int = 1, requested_size: int = 0, page_size: int = 4096,
                 unplugged_inaccessible: bool = True, usable_extent: int = USABLE_EXTENT,
                 memdev_mapped: bool = False, device_id: int = 0) -> None:
        # property setter (virtio_mem_set_block_size)
        if block_size < MiB or not _pow2(block_size):
            raise ConfigurationError(f"'block-size' property has to be at least 0x{MiB:x} and a power of two "
                                     f"(got {block_size:#x})")
        # realize (virtio_mem_device_realize), in QEMU's order
        if memdev_size <= 0:
            raise ConfigurationError("'memdev' property is not set (no memory backend of a positive size)")
        if memdev_mapped:
            raise ConfigurationError("'memdev' property specifies a busy memdev")
        if node < 0 or (numa_nodes and node >= numa_nodes) or (not numa_nodes and node):
            raise ConfigurationError(f"'node' property has value '{node}', which exceeds the number of "
                                     f"numa nodes: {numa_nodes}")
        if block_size < page_size:
            raise ConfigurationError(f"'block-size' property has to be at least the page size ({page_size:#x})")
        if requested_size % block_size:
            raise ConfigurationError(f"'requested-size' property has to be multiples of 'block-size' "
                                     f"({block_size:#x})")
        if memaddr % block_size:
            raise ConfigurationError(f"'memaddr' property has to be multiples of 'block-size' ({block_size:#x})")
        if memdev_size % block_size:
            raise ConfigurationError(f"'memdev' property memory size ({memdev_size:#x}) has to be multiples of "
                                     f"'block-size' ({block_size:#x})")
        if requested_size > memdev_size:
            raise ConfigurationError(f"'requested-size' ({requested_size:#x}) exceeds the memdev size "
                                     f"({memdev_size:#x})")
        if memaddr + memdev_size > 1 << 64:
            raise ConfigurationError("the device region ends past 2**64")
        self.block_size = block_size
        self.node_id = node
        self.addr = memaddr
        self.region_size = memdev_size
        self.requested_size = requested_size
        self.usable_region_size = 0
        self.unplugged_inaccessible = unplugged_inaccessible
        self.usable_extent = usable_extent
        self.id = device_id
        self.migrating = False          # migration running / incoming postcopy: requests get BUSY
        self.unplugged = False          # device_del done
        self.broken = False             # virtio_error after a protocol violation
        self.config_notifications = 0   # config-change interrupts sent
        self.plugged = ExtentMap(block_size)   # plugged GPA ranges (identity targets)
        self.unplug_events = 0          # bumped whenever plugged blocks go away (UNPLUG, UNPLUG_ALL, reset)
        self._resize_usable(requested_size, can_shrink=True)

    # ---------------------------------------------------------------- config
    @property
    def plugged_size(self) -> int:
        return self.plugged.mapped_bytes

    @property
    def size(self) -> int:
        """QEMU's read-only ``size`` property (= plugged_size)."""
        return self.plugged_size

    def config(self) -> Dict[str, int]:
        """The config space fields, by name."""
        return dict(block_size=self.block_size, node_id=self.node_id, addr=self.addr,
                    region_size=self.region_size, usable_region_size=self.usable_region_size,
                    plugged_size=self.plugged_size, requested_size=self.requested_size)

    def config_bytes(self) -> bytes:
        """The 56-byte little-endian config space (padding zero)."""
        c = self.config()
        return _CONFIG.pack(c["block_size"], c["node_id"], c["addr"], c["region_size"],
                            c["usable_region_size"], c["plugged_size"], c["requested_size"])

    def check_invariants(self) -> None:
        """The spec's config invariants (AssertionError if one breaks)."""
        bs = self.block_size
        assert _pow2(bs)
        for v in (self.addr, self.region_size, self.usable_region_size, self.plugged_size, self.requested_size):
            assert v % bs == 0
        assert self.requested_size <= self.usable_region_size <= self.region_size or \
            (self.requested_size == 0 and self.usable_region_size == 0)
        # blocks outside the usable region are always unplugged
        if self.plugged_size:
            s, n, _, _ = self.plugged.to_arrays()
            assert int(s[0]) >= self.addr and int(s[-1] + n[-1]) <= self.addr + self.usable_region_size

    def _resize_usable(self, requested: int, can_shrink: bool) -> None:
        new = _align_up(min(self.region_size, requested + self.usable_extent), self.block_size)
        if not requested:
            new = 0
        if new < self.usable_region_size and not can_shrink:
            return
        self.usable_region_size = new

    def set_requested_size(self, size: int) -> None:
        """QMP ``qom-set requested-size``: a multiple of block-size, <= the memdev size; the
        usable region only grows here; always one config notification (even if unchanged).
        ConfigurationError leaves the device unchanged."""
        if size < 0 or size % self.block_size:
            raise ConfigurationError(f"'requested-size' property has to be multiples of 'block-size' "
                                     f"({self.block_size:#x})")
        if size > self.region_size:
            raise ConfigurationError(f"'requested-size' property cannot exceed the memory backend size "
                                     f"({self.region_size:#x})")
        self.requested_size = size
        self._resize_usable(size, can_shrink=False)
        self.config_notifications += 1

    # ---------------------------------------------------------------- requests
    def _valid_range(self, addr: int, nb_blocks: int) -> bool:
        bs = self.block_size
        size = nb_blocks * bs
        return (0 < nb_blocks <= MAX_NB_BLOCKS and addr % bs == 0 and addr + size <= 1 << 64
                and addr >= self.addr and addr + size <= self.addr + self.usable_region_size)

    def _classify(self, addr: int, size: int) -> int:
        return int(self.plugged.classify_many([addr], [size])[0])

    def request(self, type: int, addr: int = 0, nb_blocks: int = 0) -> Tuple[Optional[Response], Optional[BlockState]]:
        """Process one guest request; (response, state).  An unknown type is a protocol
        violation: the device is marked broken and answers nothing ((None, None))."""
        try:
            t = RequestType(type)
        except ValueError:
            self.broken = True
            return None, None
        if self.broken:
            return None, None
        if t == RequestType.UNPLUG_ALL:
            return self._unplug_all(), None
        if not self._valid_range(addr, nb_blocks):
            return Response.ERROR, None
        size = nb_blocks * self.block_size
        c = self._classify(addr, size)
        if t == RequestType.STATE:
            if c == ExtentMap.FREE:
                return Response.ACK, BlockState.UNPLUGGED
            if c in (ExtentMap.WITHIN, ExtentMap.COVERED):
                return Response.ACK, BlockState.PLUGGED
            return Response.ACK, BlockState.MIXED
        if t == RequestType.PLUG:
            if self.plugged_size + size > self.requested_size:
                return Response.NACK, None
            if c != ExtentMap.FREE:
                return Response.ERROR, None
        else:
            if c not in (ExtentMap.WITHIN, ExtentMap.COVERED):
                return Response.ERROR, None
        if self.migrating:
            return Response.BUSY, None
        if t == RequestType.PLUG:
            self.plugged.insert(addr, size)
        else:
            self.plugged.remove(addr, size)
            self.unplug_events += 1
        return Response.ACK, None

    def _unplug_all(self) -> Response:
        if self.plugged_size:
            if self.migrating:
                return Response.BUSY
            self.plugged.clear()
            self.unplug_events += 1
        self._resize_usable(self.requested_size, can_shrink=True)
        return Response.ACK

    # ---------------------------------------------------------------- lifecycle
    def system_reset(self) -> None:
        """System reset (not wake-up): unplug all, shrink the usable region."""
        self.plugged.clear()
        self.unplug_events += 1
        self._resize_usable(self.requested_size, can_shrink=True)
        self.broken = False

    def device_reset(self) -> None:
        """A plain device reset: the spec forbids changing block state, so config and plugged
        blocks stay; only QEMU's generic virtio_reset clears ``broken``."""
        self.broken = False

    def unplug_device(self) -> None:
        """device_del: allowed only with unplugged-inaccessible on, size == 0 and
        requested-size == 0; HostError EBUSY otherwise (device unchanged)."""
        if not self.unplugged_inaccessible:
            raise HostError("virtio-mem device cannot get unplugged while 'unplugged-inaccessible' != 'on'",
                            E.EBUSY)
        if self.plugged_size or self.requested_size:
            raise HostError("virtio-mem device cannot get unplugged while some of its memory is still "
                            "plugged or requested", E.EBUSY)
        self.unplugged = True

    def check_migration(self, dest: "VirtioMemDevice") -> None:
        """The destination must have the same addr, region size, block size and node
        (QEMU fails the load with -EINVAL); ConfigurationError names the first mismatch."""
        for f in ("addr", "region_size", "block_size", "node_id"):
            if getattr(self, f) != getattr(dest, f):
                raise ConfigurationError(f"virtio-mem migration: {f} differs ({getattr(self, f):#x} on the "
                                         f"source, {getattr(dest, f):#x} on the destination)")

    def clone(self) -> "VirtioMemDevice":
        """A destination device with the same properties (state not copied)."""
        return VirtioMemDevice(self.region_size, block_size=self.block_size, memaddr=self.addr,
                               node=self.node_id, numa_nodes=self.node_id + 1, requested_size=self.requested_size,
                               unplugged_inaccessible=self.unplugged_inaccessible,
                               usable_extent=self.usable_extent, device_id=self.id)


class VirtioMemPresentation(Presentation):
    """Tag groups of one host, presented to one VM through one virtio-mem device.

    The device's region (``region_size``, default: the host's DC partitions rounded up to
    the memory block size) is placed in ``gas`` (default: a window starting at the end of
    boot RAM rounded up to 1 GiB) at block-size alignment (QEMU's minimum for virtio-mem-pci)
    and reserved whole; plugged blocks are mapped GPA -> HPA along the
    group's view, the rest stays reserved.

    Plain (``extended=False``): :meth:`add` raises requested_size by the group's size rounded
    up to the driver's plug unit, and the model driver plugs it: Sub-Block Mode when
    ``sb = max(block_size, pageblock)`` is smaller than the Linux memory block size (from
    :func:`x86_memory_block_size` of ``boot_mem_end``) and not ``force_bbm``, else Big-Block
    Mode.  Memory goes to System RAM via :class:`MemoryBlocks` (``auto_online``,
    ``online_policy``, seeded offline failures).  :meth:`remove` is best effort.

    Extended (``extended=True``, dcdmap's model of the RFC's not-yet-existing extension):
    the device carries a per-tag block list, the guest makes one devdax device per tag
    (nothing enters System RAM) and removal unplugs exactly that tag's blocks: guaranteed.
    """

    name = "virtio-mem"

    def __init__(self, host: Any, gas: Optional[GuestAddressSpace] = None, *, extended: bool = False,
                 block_size: int = 2 * MiB,
                 region_size: Optional[int] = None, node: int = 0, numa_nodes: int = 1,
                 boot_mem_end: int = 16 * GiB, memory_block_size: Optional[int] = None,
                 pageblock_size: int = PAGEBLOCK_SIZE, force_bbm: bool = False, bbm_block_size: int = 0,
                 auto_online: str = "online_movable", online_policy: str = "auto-movable",
                 p_fail_normal: float = 0.3, p_fail_movable: float = 0.01, max_retries: int = 4,
                 seed: int = 0, device_id: int = 1) -> None:
        super().__init__(host, gas)
        self.extended = extended
        self.name = "virtio-mem-extended" if extended else "virtio-mem"
        mbs = memory_block_size or x86_memory_block_size(boot_mem_end)
        self.blocks = MemoryBlocks(mbs, auto_online=auto_online, online_policy=online_policy,
                                   p_fail_normal=p_fail_normal, p_fail_movable=p_fail_movable, seed=seed,
                                   kernel_bytes=boot_mem_end)
        self.memory_block_size = mbs
        # driver mode selection (virtio_mem_init): SBM if sb < memory block and !force_bbm
        sb = max(block_size, pageblock_size)
        if extended:
            self.mode, self.unit, self.add_unit = "devdax", max(block_size, PMD_SIZE), None
        elif sb < mbs and not force_bbm:
            self.mode, self.unit, self.add_unit = "sbm", sb, mbs
        else:
            bb = max(block_size, mbs)
            if bbm_block_size and _pow2(bbm_block_size) and bbm_block_size >= bb:
                bb = bbm_block_size                  # else the driver warns and ignores it
            self.mode, self.unit, self.add_unit = "bbm", bb, bb
        if region_size is None:
            region_size = sum(int(r.length) for r in host.partitions)
        region_size = _align_up(region_size, max(self.unit, self.add_unit or 0))
        self.device = VirtioMemDevice(region_size, block_size=block_size, node=node, numa_nodes=numa_nodes,
                                      device_id=device_id)
        if gas is None:                              # the device-memory window right after boot RAM
            gas = self.gas = GuestAddressSpace(_align_up(boot_mem_end, GiB), region_size)
        addr = gas.find(region_size, block_size)
        if addr is None:
            raise HostError(f"no {region_size:#x} bytes of guest address space for the virtio-mem region", E.ENOSPC)
        gas.reserve(addr, region_size, device_id)
        self.device.addr = addr                      # memaddr chosen by the machine at plug time
        self.max_retries = max_retries
        self._rng = random.Random(seed ^ 0x5EED)     # alloc_contig_range failures in shared SBM blocks
        self.owned = ExtentMap(self.unit)            # plugged GPA -> logical offset, label = group index
        self.added = ExtentMap(self.add_unit or self.unit)   # GPA added to Linux (plain) or dax ranges
        # SBM: add units that may hold unplugged sub-blocks of added memory (a superset, pruned
        # lazily by _plan), so that planning never walks every added range
        self._slack = ExtentMap(self.add_unit or self.unit)
        self._slack_sync()
        self.groups: Dict[Any, Any] = {}             # tag -> TagGroup
        self._gid: Dict[Any, int] = {}
        self._charged: Dict[Any, int] = {}           # tag -> bytes still counted in requested_size
        self._next = 1
        self.retry_log: List[Dict[str, Any]] = []
        m = self.metrics
        m.removal = GUARANTEED if extended else BEST_EFFORT
        m.removal_risks = () if extended else (
            "the guest must offline the memory (unmovable or pinned pages: EBUSY)",
            "the driver picks which blocks to unplug: a specific tag needs data movement (not modelled)",
            "the driver may fall short of requested_size (retry timer 50 s doubling to 300 s)")
        m.tag_discoverable = extended
        m.shared_out_of_ram = extended
        self._refresh()

    # ---------------------------------------------------------------- helpers
    @property
    def _usable_blocks(self) -> Tuple[int, int]:
        """[lo, hi) GPA the driver uses: whole add units inside the usable region."""
        d, a = self.device, self.add_unit or self.unit
        lo = _align_up(d.addr, a)
        hi = (d.addr + d.usable_region_size) // a * a
        return lo, max(lo, hi)

    def _slack_sync(self) -> None:
        """Remember the device state :attr:`_slack` is known to account for."""
        d = self.device
        self._slack_dev, self._slack_plugged, self._slack_ev = d, d.plugged, d.unplug_events

    def _mark_slack(self, gpa: int, length: int) -> None:
        """[gpa, +length) may now hold unplugged sub-blocks of added memory (SBM)."""
        if self.mode != "sbm" or length <= 0:
            return
        a = self.add_unit
        lo, hi = gpa // a * a, _align_up(gpa + length, a)
        self._slack.remove(lo, hi - lo)
        self._slack.insert(lo, hi - lo)

    def _check_slack(self) -> None:
        """If blocks were unplugged behind the driver's back (a request not sent by
        :meth:`_send`, a reset, a replaced map), every added range becomes a candidate."""
        d = self.device
        if d is self._slack_dev and d.plugged is self._slack_plugged and d.unplug_events == self._slack_ev:
            return
        self._slack.clear()
        if len(self.added):
            lo, hi = self.added[0].start, self.added[len(self.added) - 1].end
            self._slack.insert(lo, hi - lo)
        self._slack_sync()

    def _send(self, type: RequestType, addr: int, length: int) -> None:
        """PLUG/UNPLUG ``length`` bytes the way the driver does: one request per Linux
        memory block (SBM) or big block (BBM), each of at most 65535 blocks (must ACK)."""
        bs = self.device.block_size
        a = self.add_unit
        nb = length // bs
        while nb:
            k = min(nb, MAX_NB_BLOCKS)
            if a:
                k = min(k, ((addr // a + 1) * a - addr) // bs)
            ev = self.device.unplug_events
            resp, _ = self.device.request(type, addr, k)
            if ev == self._slack_ev:                 # our own unplug: the caller marked the range
                self._slack_ev = self.device.unplug_events
            self.metrics.count("virtio_request")
            if resp != Response.ACK:
                raise HostError(f"virtio-mem {type.name} [{addr:#x}, +{k * bs:#x}) answered "
                                f"{resp.name if resp is not None else 'nothing'}", E.EAGAIN)
            addr += k * bs
            nb -= k

    def _plan(self, need: int, usable_hi: Optional[int] = None) -> List[Tuple[int, int, bool]]:
        """The driver's choice of ``need`` bytes: (gpa, length, fresh) runs, lowest first:
        free sub-blocks of memory blocks already added (SBM), then new add units."""
        lo, hi = self._usable_blocks
        if usable_hi is not None:
            a = self.add_unit or self.unit
            hi = max(lo, (self.device.addr + usable_hi) // a * a)
        runs: List[Tuple[int, int, bool]] = []
        if self.mode == "devdax":
            gs, gl = self.device.plugged.gaps(lo, hi)
            for s, n in zip(gs.tolist(), gl.tolist()):
                s2 = _align_up(s, self.unit)
                n2 = (s + n - s2) // self.unit * self.unit
                take = min(need, n2)
                if take > 0:
                    runs.append((s2, take, True))
                    need -= take
                if not need:
                    return runs
        else:
            if self.mode == "sbm":
                # free sub-blocks of added memory, added range by added range, lowest first; only
                # added ranges that meet a slack candidate can hold any
                self._check_slack()
                plugged, added, slack = self.device.plugged, self.added, self._slack
                seen: Dict[int, bool] = {}               # added range start -> has unplugged blocks
                clean: List[Tuple[int, int]] = []        # candidate parts found without slack
                cs, cl, _, _ = slack.to_arrays()
                for c0, cn in zip(cs.tolist(), cl.tolist()):
                    c1, cur = c0 + cn, c0
                    ov = added.overlapping(c0, cn)
                    for e0, en in zip(ov.starts.tolist(), ov.lengths.tolist()):
                        has = seen.get(e0)
                        if has is None:
                            gs, gl = plugged.gaps(e0, e0 + en)
                            has = seen[e0] = bool(len(gs))
                            for s, n in zip(gs.tolist(), gl.tolist()):
                                take = min(need, n)
                                runs.append((s, take, False))
                                need -= take
                                if not need:
                                    break
                        if has:
                            if cur < e0:
                                clean.append((cur, e0))
                            cur = min(c1, e0 + en)
                        if not need:
                            break
                    else:
                        if cur < c1:
                            clean.append((cur, c1))
                        continue
                    break
                for x, y in clean:
                    slack.remove(x, y - x)
                if not need:
                    return runs
            gs, gl = self.added.gaps(lo, hi)
            for s, n in zip(gs.tolist(), gl.tolist()):
                take = min(need, n)
                runs.append((s, take, True))
                need -= take
                if not need:
                    return runs
        if need:
            raise HostError(f"the virtio-mem driver cannot plug {need:#x} more bytes inside the usable region",
                            E.ENOSPC)
        return runs

    def _map(self, gpa: int, length: int, group: Any, logical: int) -> None:
        """Map GPA [gpa, +length) = logical [logical, +length) of the group, piecewise along
        its view; the part past the group's size (rounding) stays reserved, unbacked."""
        hi = min(logical + length, group.size)
        if hi <= logical:
            return
        ls, hs, ns = (a.astype(np.uint64) for a in group.view.segments())
        le = ls + ns
        sel = (le > logical) & (ls < hi)
        s = np.maximum(ls[sel], logical)
        e = np.minimum(le[sel], hi)
        tgt = hs[sel] + (s - ls[sel])
        g = gpa + (s - logical)
        self.gas.reserved.remove(gpa, hi - logical)
        self.gas.map.insert_many(g, e - s, tgt, np.full(len(g), self.device.id, np.uint64))

    def _unmap(self, gpa: int, length: int) -> None:
        self.gas.map.remove(gpa, length)
        self.gas.reserved.remove(gpa, length)
        self.gas.reserved.insert(gpa, length, gpa, self.device.id)

    def _present(self, group: Any, rounded: int) -> int:
        """Plan and plug ``rounded`` bytes for the group, add/online memory, map the GPA."""
        runs = self._plan(rounded)
        gid = self._gid[group.tag]
        logical = 0
        for gpa, length, fresh in runs:
            self._send(RequestType.PLUG, gpa, length)
            if self.mode != "devdax" and fresh:
                a = self.add_unit
                self.blocks.add_memory(gpa, _align_up(length, a), owner=self.device.id)
                self.added.insert(gpa, _align_up(length, a))
                if length % a:                       # the rest of the last memory block stays unplugged
                    self._mark_slack(gpa + length, _align_up(length, a) - length)
            elif self.mode == "devdax":
                self.added.insert(gpa, length, None, gid)
            self.owned.insert(gpa, length, logical, gid)
            self._map(gpa, length, group, logical)
            logical += length
        return runs[0][0]

    def _refresh(self) -> None:
        m, d = self.metrics, self.device
        m.gpa_used = d.region_size
        m.presented = self.gas.map.mapped_bytes
        a = self.add_unit or self.unit
        unusable = (_align_up(d.addr, a) - d.addr) + (d.addr + d.region_size) % a
        m.gpa_wasted = self.owned.mapped_bytes - m.presented + unusable
        objs = {"virtio_mem_device": 1}
        if self.extended:
            objs["dax_device"] = len(self.groups)
        else:
            objs["memory_block"] = len(self.blocks)
        m.objects = objs
        m.count("config_notify", d.config_notifications - m.control_ops.get("config_notify", 0))

    # ---------------------------------------------------------------- interface
    def add(self, group: Any) -> int:
        """Present a tag group: requested_size grows by its size rounded up to the plug unit
        (one config notification), the driver plugs and adds the memory; the first GPA.
        HostError (ENOSPC, EEXIST, EINVAL; EBUSY while a removal fell short and the driver
        still holds more than requested_size, which would NACK every plug, and while the
        device answers BUSY (migration) or nothing (broken)) leaves everything unchanged."""
        if group.tag in self.groups:
            raise HostError(f"tag {group.tag} is already presented", E.EEXIST)
        if group.view is None:
            raise HostError(f"tag {group.tag}: sequence numbers are not dense", E.EINVAL)
        d = self.device
        if d.migrating or d.broken:                 # every PLUG would be BUSY / unanswered
            raise HostError("virtio-mem device is " + ("BUSY: migration in progress" if d.migrating else
                                                       "broken (no answers until a reset)"), E.EBUSY)
        if d.plugged_size > d.requested_size:
            owed = [str(t) for t, c in self._charged.items() if not c]
            raise HostError(f"the driver still holds {d.plugged_size - d.requested_size:#x} bytes above "
                            f"requested-size (removal of {', '.join(owed)} fell short): retry remove() first",
                            E.EBUSY)
        rounded = _align_up(group.size, self.unit)
        new_req = d.requested_size + rounded
        if new_req > d.region_size:
            raise HostError(f"requested-size {new_req:#x} would exceed the region {d.region_size:#x}", E.ENOSPC)
        usable = _align_up(min(d.region_size, new_req + d.usable_extent), d.block_size)
        runs = self._plan(rounded, usable_hi=max(usable, d.usable_region_size))   # feasibility, nothing changes
        if self.mode != "devdax" and self.blocks.auto_online == "offline":
            # the driver's offline threshold: it adds no memory while added-but-offline memory
            # would exceed max(1 GiB, 2 memory blocks [, 2 big blocks]) (-ENOSPC, falls short)
            threshold = max(GiB, 2 * self.memory_block_size, 2 * self.add_unit)
            offline = sum(1 for i, st in self.blocks.state.items()
                          if st == "offline" and self.blocks.owner.get(i) == d.id) * self.memory_block_size
            fresh = sum(_align_up(ln, self.add_unit) for _, ln, f in runs if f)
            if offline + fresh > threshold:
                raise HostError(f"the virtio-mem driver adds no memory past its offline threshold "
                                f"({threshold:#x}): {offline:#x} added but offline, {fresh:#x} more needed; "
                                f"online the memory blocks first", E.ENOSPC)
        d.set_requested_size(new_req)
        self.groups[group.tag] = group
        self._gid[group.tag] = self._next
        self._charged[group.tag] = rounded
        self._next += 1
        gpa = self._present(group, rounded)
        self._refresh()
        return gpa

    def _tag_runs(self, tag: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, n, t, lab = self.owned.to_arrays()
        sel = lab == self._gid[tag]
        return s[sel], n[sel], t[sel]

    def remove(self, tag: Any) -> Removal:
        """Take a tag's capacity back.  Plain: requested_size drops by the tag's share; the
        driver unplugs the tag's blocks per add unit, offlining whole memory blocks (or
        allocating sub-blocks of shared ones); failures are retried on the driver's timer
        (50 s doubling to 300 s, ``max_retries`` times; see :attr:`retry_log`).  Extended:
        UNPLUG of exactly the tag's blocks, no offlining.  BUSY (migration) returns nothing."""
        if tag not in self.groups:
            raise HostError(f"tag {tag} is not presented", E.ENOENT)
        group = self.groups[tag]
        s, n, t = self._tag_runs(tag)
        requested = int(np.minimum(t + n, group.size).astype(np.int64).sum()
                        - np.minimum(t, group.size).astype(np.int64).sum())
        d = self.device
        if self._charged[tag]:
            d.set_requested_size(d.requested_size - self._charged[tag])
            self._charged[tag] = 0
        if d.migrating:
            self._refresh()
            return Removal(tag, 0, requested, "virtio-mem UNPLUG", "BUSY: migration in progress")
        if self.extended:
            for a, ln in zip(s.tolist(), n.tolist()):
                self._unplug_run(a, ln)
                self.added.remove(a, ln)
            returned, reason = requested, ""
        else:
            returned, reason = self._remove_plain(tag, group)
        if not len(self._tag_runs(tag)[0]):
            del self.groups[tag], self._gid[tag], self._charged[tag]
        self._refresh()
        return Removal(tag, returned, requested, "virtio-mem UNPLUG" + ("" if self.extended else " + offline"),
                       reason)

    def _unplug_run(self, gpa: int, length: int) -> None:
        self._mark_slack(gpa, length)
        self._send(RequestType.UNPLUG, gpa, length)
        self.owned.remove(gpa, length)
        self._unmap(gpa, length)

    def _remove_plain(self, tag: Any, group: Any) -> Tuple[int, str]:
        a = self.add_unit
        returned, delay, ticks, retries = 0, RETRY_FIRST_TICKS, 0, 0
        while True:
            s, n, t = self._tag_runs(tag)
            if not len(s):
                break
            units = np.unique(np.concatenate([np.arange(int(x) // a, (int(x) + int(y) - 1) // a + 1)
                                              for x, y in zip(s, n)]))
            failed = 0
            for u in units.tolist():          # one Linux memory block (SBM) / big block (BBM) at a time
                lo, hi = u * a, (u + 1) * a
                sel = (s < hi) & (s + n > lo)
                rs = np.maximum(s[sel], lo)
                re_ = np.minimum(s[sel] + n[sel], hi)
                mine = int((re_ - rs).sum())
                whole = mine == _bytes_in(self.device.plugged, lo, hi)
                if whole:
                    _, err = self.blocks.offline_and_remove(lo, a)
                else:                          # unplug_online: alloc_contig_range in an online block
                    zone = self.blocks.zone_of(lo // self.memory_block_size) or "Normal"
                    err = self._rng.random() < self.blocks.p_fail[zone]
                    if err:
                        self.blocks.failed_offlines += 1
                if err:
                    failed += 1
                    continue
                logical = t[sel] + (rs - s[sel])
                returned += int((np.minimum(logical + (re_ - rs), group.size)
                                 - np.minimum(logical, group.size)).astype(np.int64).sum())
                for x, ln in zip(rs.tolist(), (re_ - rs).tolist()):
                    self._unplug_run(x, ln)
                if whole:
                    self.added.remove(lo, a)
            if not failed or retries >= self.max_retries:
                break
            retries += 1
            ticks += delay
            delay = min(2 * delay, RETRY_MAX_TICKS)
        if retries:
            self.metrics.count("retry_timer", retries)
        self.retry_log.append({"tag": tag, "retries": retries, "ticks": ticks})
        left = len(self._tag_runs(tag)[0])
        reason = "" if not left else (f"offline failed (EBUSY) for {left} range(s) after {retries} retries "
                                      f"({ticks} ticks); the driver falls short of requested_size")
        return returned, reason

    def guest_objects(self) -> List[Dict[str, Any]]:
        d = self.device
        out: List[Dict[str, Any]] = [dict(kind="virtio_mem_device", id=d.id, mode=self.mode, **d.config())]
        if self.extended:
            for tag, g in self.groups.items():
                s, n, _ = self._tag_runs(tag)
                out.append(dict(kind="dax_device", tag=tag, size=g.size,
                                ranges=list(zip(s.tolist(), n.tolist()))))
        else:
            for i in sorted(self.blocks.state):
                out.append(dict(kind="memory_block", id=i, state=self.blocks.state[i], zone=self.blocks.zone_of(i),
                                resource="System RAM (virtio_mem)"))
        return out

    # ---------------------------------------------------------------- corner cases
    def _ops_since(self, before: Dict[str, int]) -> Dict[str, int]:
        """The control operations counted since the snapshot ``before``, by kind (non-zero only)."""
        now = self.metrics.control_ops
        return {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}

    def migrate(self, policy: str = "drain", dest: Optional[VirtioMemDevice] = None) -> Lifecycle:
        """Live migration.  ``dest`` (default: a clone) must match addr, region size, block
        size and node (ConfigurationError, nothing changes).  ``drain``: remove every tag
        first (best effort in plain mode; what is left migrates as RAM); ``prepopulate``: the
        destination host holds the same tags, nothing is removed, plugged memory is copied.
        While the migration runs the device answers BUSY (``details["busy_window"]``).  A
        :class:`Lifecycle`: ``stuck`` is what a drain could not remove, ``copied`` the
        plugged bytes, ``control_ops`` the operations the drain issued."""
        if policy not in ("drain", "prepopulate"):
            raise ConfigurationError("migrate policy must be 'drain' or 'prepopulate'")
        self.device.check_migration(dest if dest is not None else self.device.clone())
        before = dict(self.metrics.control_ops)
        returned = requested = 0
        if policy == "drain":
            for tag in list(self.groups):
                r = self.remove(tag)
                returned += r.returned
                requested += r.requested
        self.device.migrating = True
        copied = self.device.plugged_size
        self.device.migrating = False
        self._refresh()
        stuck = requested - returned
        note = ("tags removed before migration" + (f"; {stuck:#x} bytes left migrate as RAM" if stuck else "")
                if policy == "drain" else "the destination holds the same tags; plugged memory is copied")
        return Lifecycle("migrate", policy, True, returned=returned, kept=self.metrics.presented, stuck=stuck,
                         copied=copied, control_ops=self._ops_since(before), note=note,
                         details=dict(busy_window=True))

    def kexec(self, policy: str = "release") -> Lifecycle:
        """kexec: virtio-mem memory is excluded from the kexec memory map ("System RAM
        (virtio_mem)"); the new kernel's driver sees plugged_size > 0 and sends UNPLUG_ALL,
        which needs no offlining.  ``release``: requested_size drops to 0, every tag
        returns; ``replug``: the new driver plugs requested_size again and the VMM backs it
        with the same tags (contents are lost either way: ``details["lost_contents"]``).  Not
        ``feasible`` if UNPLUG_ALL is not ACKed (``details["unplug_all"]`` names the response;
        requested_size is left as it was)."""
        if policy not in ("release", "replug"):
            raise ConfigurationError("kexec policy must be 'release' or 'replug'")
        d = self.device
        before = dict(self.metrics.control_ops)
        presented = self.metrics.presented
        groups = list(self.groups.values())
        charged = {g.tag: _align_up(g.size, self.unit) for g in groups}
        prev = (d.requested_size, d.config_notifications)
        if policy == "release":
            d.set_requested_size(0)
        resp, _ = d.request(RequestType.UNPLUG_ALL)
        self.metrics.count("virtio_request")
        if resp != Response.ACK:
            d.requested_size, d.config_notifications = prev   # infeasible: the release is not done
            self._refresh()
            return Lifecycle("kexec", policy, False, stuck=presented if policy == "release" else 0,
                             control_ops=self._ops_since(before),
                             note=f"UNPLUG_ALL answered {resp.name}: the new kernel cannot reset the device",
                             details=dict(lost_contents=0, unplug_all=resp.name))
        self.blocks = MemoryBlocks(self.memory_block_size, auto_online=self.blocks.auto_online,
                                   online_policy=self.blocks.online_policy,
                                   p_fail_normal=self.blocks.p_fail["Normal"],
                                   p_fail_movable=self.blocks.p_fail["Movable"], seed=self._rng.randrange(1 << 30),
                                   kernel_bytes=self.blocks.kernel_bytes)
        self.owned.clear()
        self.added.clear()
        self._slack.clear()                          # nothing added: no sub-block can be free
        self._slack_sync()
        self.gas.release(d.addr, d.region_size)
        self.gas.reserve(d.addr, d.region_size, d.id)
        self.groups.clear()
        self._charged.clear()
        if policy == "replug":
            for g in groups:
                self.groups[g.tag] = g
                self._charged[g.tag] = charged[g.tag]
                self._present(g, charged[g.tag])
        self._refresh()
        note = ("UNPLUG_ALL without offlining; requested_size 0, every tag returns" if policy == "release"
                else "UNPLUG_ALL, then the new driver plugs the same tags again (contents lost)")
        return Lifecycle("kexec", policy, True, returned=presented if policy == "release" else 0,
                         kept=self.metrics.presented, control_ops=self._ops_since(before), note=note,
                         details=dict(lost_contents=presented, unplug_all="ACK"))

    def kdump(self, policy: str = "dump") -> Lifecycle:
        """kdump: the crash kernel's driver does no hot(un)plug; capacity stays plugged until
        the VM reboots.  ``dump``: /proc/vmcore reads plugged memory, asking STATE per device
        block (one request per block, counted, not sent: ``control_ops["virtio_request"]``);
        ``skip``: the device memory is left out of the dump (``copied`` 0).  (What a crash kernel should do with tagged capacity is open in the
        RFC, §1.8.)"""
        if policy not in ("dump", "skip"):
            raise ConfigurationError("kdump policy must be 'dump' or 'skip'")
        d = self.device
        before = dict(self.metrics.control_ops)
        n = d.plugged_size // d.block_size if policy == "dump" else 0
        if n:
            self.metrics.count("virtio_request", n)
        note = ("no hot(un)plug; vmcore reads plugged memory, one STATE per block" if policy == "dump"
                else "no hot(un)plug; the device memory is left out of the dump")
        return Lifecycle("kdump", policy, True, kept=self.metrics.presented,
                         copied=d.plugged_size if policy == "dump" else 0, control_ops=self._ops_since(before),
                         note=note, details=dict(hotplug=False))
